/**
 * Wiring the network explorer (explorer/) into the processes that serve it: on the gateway's own app (its
 * swarm view, its libp2p host for pings, its public feed for the Live view, its catalog's manifests), or on
 * a supplier's own HTTP server with `gridpipe supply --explorer` (its host's DHT, no Live requests). The
 * gateway and the explorer sit on the same floor and never import each other; this is where they meet.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { GatewayContext } from '../gateway/context.js';
import { readChainConfig } from '../contracts/bindings.js';
import { ChainReader } from '../explorer/chain-reader.js';
import { Explorer } from '../explorer/explorer.js';
import { EXPLORER_PREFIX, registerExplorerRoutes } from '../explorer/routes.js';
import { startExplorerServer, type ExplorerServer } from '../explorer/server.js';
import { SwarmView } from '../scheduler/swarm-view.js';
import type { GridHost } from '../net/host.js';

export interface ExplorerChainOptions { chainConfig?: string; rpcUrl?: string; logger?: Logger }

function chainReader(o: ExplorerChainOptions): ChainReader | undefined {
  return o.chainConfig ? new ChainReader(readChainConfig(o.chainConfig), { rpcUrl: o.rpcUrl }) : undefined;
}

/** Adds the explorer to a gateway's app (before it listens); returns its path and the close function. */
export function gatewayExplorer(app: FastifyInstance, ctx: GatewayContext, o: ExplorerChainOptions): { path: string; explorer: Explorer; close(): void } {
  const explorer = new Explorer({
    swarm: ctx.client.swarm, pinger: ctx.client.host.node, feed: ctx.feed,
    manifests: () => ctx.catalog.all().map((m) => ({ manifestCid: m.open.manifestCid, manifest: m.open.manifest })),
    chain: chainReader(o), logger: o.logger,
  });
  registerExplorerRoutes(app, explorer);
  return { path: `${EXPLORER_PREFIX}/`, explorer, close: () => explorer.close() };
}

/** A supplier's own explorer server (`gridpipe supply --explorer`), reading the swarm through the supplier's host. */
export async function nodeExplorer(host: GridHost, o: ExplorerChainOptions & { port: number; listenHost?: string }): Promise<ExplorerServer> {
  const swarm = SwarmView.of(host, { refreshMs: 15_000, logger: o.logger });
  const server = await startExplorerServer({ swarm, pinger: host.node, chain: chainReader(o), logger: o.logger, port: o.port, host: o.listenHost });
  return { ...server, close: async () => { swarm.close(); await server.close(); } };
}
