/**
 * A swarm of gridpipe hosts on 127.0.0.1 for tests: node 0 starts first, the others bootstrap to it
 * (network 'local': passthrough address mapper, fast timers), and `startSwarm` waits until every DHT
 * routing table holds every other node. Stop it with `stopSwarm` (also removes temp data dirs).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createGridHost, type GridHost, type GridHostOptions } from '../../net/host.js';

export interface SwarmOptions extends Omit<GridHostOptions, 'bootstrap' | 'dataDir' | 'listen'> {
  /** Give each node a data dir (identity + level datastore) under a temp folder (default false: in memory). */
  persistent?: boolean;
  /** Options for one node, by index, merged over the rest (e.g. clientMode for a gateway). */
  perNode?: (index: number) => Partial<GridHostOptions>;
  /** Wait until every routing table holds all other servers (default true). */
  waitForRoutingTables?: boolean;
  /** How long start-up may take before the helper gives up (default 30 s; a hang guard, not a benchmark). */
  timeoutMs?: number;
}

export interface Swarm {
  hosts: GridHost[];
  /** The temp folder holding the nodes' data dirs (persistent swarms). */
  dataRoot?: string;
  /** Milliseconds from the first node's start until every host had started. */
  startedAfterMs: number;
  /** Milliseconds from the first node's start until all routing tables were full. */
  convergedAfterMs?: number;
}

/** Polls `check` until it returns true; rejects after `timeoutMs` naming `what`. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A logger for tests: silent unless GRIDPIPE_LOG_LEVEL is set. */
export function testLogger(): pino.Logger {
  return pino({ level: process.env.GRIDPIPE_LOG_LEVEL ?? 'silent' });
}

/** Starts `n` hosts on 127.0.0.1 bootstrapped to the first one. */
export async function startSwarm(n: number, options: SwarmOptions = {}): Promise<Swarm> {
  const { persistent, perNode, waitForRoutingTables, timeoutMs, ...hostOptions } = options;
  const dataRoot = persistent ? mkdtempSync(path.join(os.tmpdir(), 'gridpipe-swarm-')) : undefined;
  const logger = hostOptions.logger ?? testLogger();
  const make = (i: number, bootstrapList: string[]): Promise<GridHost> => createGridHost({
    network: 'local',
    logger,
    ...hostOptions,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    ...(dataRoot ? { dataDir: path.join(dataRoot, `node-${i}`) } : {}),
    ...(bootstrapList.length ? { bootstrap: bootstrapList } : {}),
    ...perNode?.(i),
  });
  const hosts: GridHost[] = [];
  const t0 = Date.now();
  try {
    hosts.push(await make(0, []));
    const seed = hosts[0].addresses();
    hosts.push(...await Promise.all(Array.from({ length: n - 1 }, (_, i) => make(i + 1, seed))));
  } catch (err) {
    await Promise.allSettled(hosts.map((h) => h.stop()));
    if (dataRoot) rmSync(dataRoot, { recursive: true, force: true });
    throw err;
  }
  const swarm: Swarm = { hosts, startedAfterMs: Date.now() - t0, ...(dataRoot ? { dataRoot } : {}) };
  if (waitForRoutingTables ?? true) {
    const servers = hosts.filter((h) => h.node.services.dht.getMode() === 'server').length;
    try {
      await waitFor(() => hosts.every((h) => h.routingTableSize() >= servers - (h.node.services.dht.getMode() === 'server' ? 1 : 0)),
        `${n} DHT routing tables to fill`, timeoutMs ?? 30_000);
    } catch (err) {
      await stopSwarm(swarm);
      throw new Error(`${(err as Error).message} (sizes: ${hosts.map((h) => h.routingTableSize()).join(', ')})`, { cause: err });
    }
    swarm.convergedAfterMs = Date.now() - t0;
  }
  return swarm;
}

/** Stops every host and removes the swarm's temp data. */
export async function stopSwarm(swarm: Swarm | undefined): Promise<void> {
  if (!swarm) return;
  await Promise.allSettled(swarm.hosts.map((h) => h.stop()));
  if (swarm.dataRoot) rmSync(swarm.dataRoot, { recursive: true, force: true });
}
