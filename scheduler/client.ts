/**
 * The grid client: joins the DHT as a client, opens a model by its fragment folder or manifest CID,
 * discovers the suppliers hosting it, and opens fault-tolerant pipeline sessions on them. It owns the
 * process's one swarm view (DHT sweeps, estimates, bans, route making: scheduler/swarm-view.ts) and one
 * fragment store for what it fetches (manifests, and the gateway's tokenizer files).
 */
import '../net/polyfill.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { createGridHost, type GridHost, type NetworkKind } from '../net/host.js';
import { createLogger } from '../net/logger.js';
import { FragmentStore, MAX_TOKENIZER_BYTES, parseBlobCid } from '../net/store/fragment-store.js';
import { fetchByCid, fetchSmallFile, type KnownHost } from '../net/store/fetcher.js';
import { MANIFEST_FILE, type Manifest } from '../fragments/manifest.js';
import { readManifest } from '../fragments/manifest-file.js';
import { cidOfFile } from '../fragments/cid.js';
import { ModelDiscovery, cachedStakeCheck, type DiscoveryOptions, type StakeCheck } from './discovery.js';
import type { StepPayer } from './payment.js';
import { attachStakeRegistry, createProvider } from '../contracts/bindings.js';
import type { EstimatesOptions } from '../policy/estimates.js';
import type { PeerPenaltiesOptions } from '../policy/peer-penalties.js';
import { SwarmView } from './swarm-view.js';
import { PipelineSession } from './session.js';
import type { StepObserver } from './step-observer.js';
import type { PriceLimits } from '../policy/price-limits.js';
import type { RouteMode } from '../policy/route-mode.js';
import type { WireEncodingPreference } from './wire-choice.js';
import { ExecClient } from '../net/exec/client.js';

export interface GridClientOptions {
  bootstrap: string[];
  network?: NetworkKind;
  /**
   * libp2p listen addresses (default: any port). A fixed, reachable one lets suppliers behind NAT, first
   * reached through a relay, connect back directly (DCUtR).
   */
  listen?: string[];
  /** Offer relay service to suppliers behind NAT (a gateway with a public address); see net/host.ts. */
  relayServer?: boolean;
  logger?: Logger;
  discovery?: DiscoveryOptions;
  /** Moving averages and ban lengths of the swarm view's per-peer estimates (policy/estimates.ts defaults). */
  estimates?: EstimatesOptions;
  /** Garbage replies a server may send before its records are ignored for a while (SwarmViewOptions.garbage). */
  garbage?: PeerPenaltiesOptions;
  /** How long `connect` waits for the bootstrap peers to fill the routing table (default 30 s). */
  joinTimeoutMs?: number;
  /** Smallest step deadline for sessions (default 5 s). */
  minStepTimeoutMs?: number;
  /** Route mode of this client's sessions unless a session names one (default star); policy/route-mode.ts. */
  routeMode?: RouteMode;
  /** Wire encoding of this client's sessions unless a session names one (default exact); scheduler/wire-choice.ts. */
  wireEncoding?: WireEncodingPreference;
  /** Route only to staked suppliers: a check of your own, or the chain's StakeRegistry (isListed, cached). */
  stakeCheck?: StakeCheck | { rpcUrl: string; chainId: number; stakeRegistry: string; ttlMs?: number };
}

/** Options of one session. */
export interface SessionOptions {
  /** Pays the suppliers that charge (gateway/payer's VoucherPayer); without it only free suppliers serve. */
  payer?: StepPayer;
  /** Prices the session accepts (default policy/price-limits' DEFAULT_PRICE_LIMITS). */
  priceLimits?: PriceLimits;
  /** Fail a step whose token chose a mixture-of-experts expert with no live server, instead of falling back. */
  strictExperts?: boolean;
  /** Shown every hop and the close (the gateway's verifier). */
  observer?: StepObserver;
  /** Star, chain (direct return) or auto (default: the client's routeMode, else star); policy/route-mode.ts. */
  routeMode?: RouteMode;
  /** How activations travel (default exact; auto: compress where the measured link makes transfer dominate); scheduler/wire-choice.ts. */
  wireEncoding?: WireEncodingPreference;
  /** The request asks for exact outputs: never compress. */
  exact?: boolean;
  /** Ask every server never to batch this session's steps with other sessions' (OpenSession.solo). */
  solo?: boolean;
}

/** A model the client can run: its manifest and its hosts. */
export interface OpenModel {
  manifest: Manifest;
  manifestCid: string;
  discovery: ModelDiscovery;
}

export class GridClient {
  /**
   * The process's one view of the swarm, shared by every model and session of this client (and the gateway's
   * catalog): one DHT sweep serves them all, and what one session learns (slow or dead peers) helps the others.
   */
  readonly swarm: SwarmView;
  private readonly exec = new ExecClient();
  /** The one store of what this client fetches (a temp folder, removed at close). */
  private store?: Promise<{ store: FragmentStore; dir: string }>;

  private readonly stakeCheck?: StakeCheck;
  private readonly closeChain?: () => void;

  private constructor(readonly host: GridHost, private readonly options: GridClientOptions, readonly logger: Logger) {
    this.swarm = SwarmView.of(host, {
      refreshMs: options.discovery?.refreshMs, lookupTimeoutMs: options.discovery?.lookupTimeoutMs, estimates: options.estimates, garbage: options.garbage, logger,
    });
    const s = options.stakeCheck;
    if (s && 'isListed' in s) this.stakeCheck = s;
    else if (s) {
      // A read-only provider of our own for the registry: the client never signs anything here.
      const provider = createProvider(s.rpcUrl, s.chainId);
      this.stakeCheck = cachedStakeCheck(attachStakeRegistry(s.stakeRegistry, provider), s.ttlMs, Date.now, { chainId: s.chainId, stakeRegistry: s.stakeRegistry });
      this.closeChain = () => provider.destroy();
    }
  }

  /** Joins the grid as a DHT client and waits (up to `joinTimeoutMs`, default 30 s) for a routing table. */
  static async connect(options: GridClientOptions): Promise<GridClient> {
    const logger = options.logger ?? createLogger('gridpipe', 'warn');
    const host = await createGridHost({
      network: options.network, bootstrap: options.bootstrap, clientMode: true, logger,
      ...(options.listen?.length ? { listen: options.listen } : {}), relayServer: options.relayServer,
    });
    const deadline = Date.now() + (options.joinTimeoutMs ?? 30_000);
    while (host.routingTableSize() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return new GridClient(host, options, logger);
  }

  /** Opens a model from a fragment folder (manifest.json) or a manifest CID fetched from the grid. */
  async openModel(source: string, waitForHostsMs = 30_000): Promise<OpenModel> {
    let manifest: Manifest;
    let manifestCid: string;
    if (existsSync(source) && statSync(source).isDirectory()) {
      manifest = (await readManifest(source)).manifest;
      manifestCid = await cidOfFile(path.join(source, MANIFEST_FILE));
    } else {
      manifestCid = parseBlobCid(source);
      const { store } = await this.openStore();
      await fetchByCid(this.host.node, store, manifestCid, { provide: false });
      const read = await store.readManifest(manifestCid);
      if (!read) throw new Error(`manifest ${manifestCid} could not be read after fetching it`);
      manifest = read;
    }
    const { accept } = this.options.discovery ?? {};
    const discovery = new ModelDiscovery(this.swarm, manifestCid, { ...(accept ? { accept } : {}), ...(this.stakeCheck ? { stakeCheck: this.stakeCheck } : {}) });
    await discovery.waitForCoverage(manifest.fragments.length, waitForHostsMs);
    discovery.start();
    return { manifest, manifestCid, discovery };
  }

  /**
   * A model's tokenizer file fetched by CID into the client's store (verified, at most MAX_TOKENIZER_BYTES),
   * asking `hosts` (the model's suppliers) before the DHT's providers. The file stays until the client closes.
   */
  async fetchTokenizerFile(file: { cid: string; bytes?: number }, hosts: readonly KnownHost[]): Promise<Uint8Array> {
    const { store } = await this.openStore();
    return fetchSmallFile(this.host.node, store, file, hosts, MAX_TOKENIZER_BYTES);
  }

  /** A new pipeline session on an open model. */
  session(model: OpenModel, maxLength: number, options: SessionOptions = {}): PipelineSession {
    return new PipelineSession({
      host: this.host, manifest: model.manifest, manifestCid: model.manifestCid, discovery: model.discovery,
      swarm: this.swarm, client: this.exec, maxLength, logger: this.logger, minStepTimeoutMs: this.options.minStepTimeoutMs,
      payer: options.payer, priceLimits: options.priceLimits, strictExperts: options.strictExperts, observer: options.observer,
      routeMode: options.routeMode ?? this.options.routeMode,
      wireEncoding: options.wireEncoding ?? this.options.wireEncoding ?? 'exact', ...(options.exact ? { exact: true } : {}),
      ...(options.solo ? { solo: true } : {}),
    });
  }

  /**
   * How this client is connected to a peer now: 'direct', 'relayed' (only through a circuit relay, a
   * limited connection), or 'none'.
   */
  connectionKind(peerId: string): 'direct' | 'relayed' | 'none' {
    const conns = this.host.node.getConnections().filter((c) => c.remotePeer.toString() === peerId && c.status === 'open');
    if (conns.some((c) => c.limits == null && !c.remoteAddr.toString().includes('/p2p-circuit'))) return 'direct';
    return conns.length ? 'relayed' : 'none';
  }

  async close(): Promise<void> {
    this.swarm.close();
    this.closeChain?.();
    await this.host.stop();
    const opened = await this.store?.catch(() => undefined);
    if (opened) await rm(opened.dir, { recursive: true, force: true });
  }

  private openStore(): Promise<{ store: FragmentStore; dir: string }> {
    this.store ??= (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-client-'));
      return { store: await FragmentStore.open({ dataDir: dir }), dir };
    })();
    this.store.catch(() => { this.store = undefined; });
    return this.store;
  }
}
