/**
 * The grid client: joins the DHT as a client, opens a model by its fragment folder or manifest CID,
 * discovers the suppliers hosting it, and opens fault-tolerant pipeline sessions on them.
 */
import '../net/polyfill.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { createGridHost, type GridHost, type NetworkKind } from '../net/host.js';
import { createLogger } from '../net/logger.js';
import { FragmentStore, parseBlobCid } from '../net/store/fragment-store.js';
import { fetchByCid } from '../net/store/fetcher.js';
import { MANIFEST_FILE, type Manifest } from '../fragments/manifest.js';
import { readManifest } from '../fragments/manifest-file.js';
import { cidOfFile } from '../fragments/cid.js';
import { ModelDiscovery, cachedStakeCheck, type DiscoveryOptions, type StakeCheck } from './discovery.js';
import type { StepPayer } from './payment.js';
import { attachStakeRegistry, createProvider } from '../contracts/bindings.js';
import { Estimates } from '../policy/estimates.js';
import { PipelineSession } from './session.js';
import type { PriceLimits } from '../policy/price-limits.js';
import { ExecClient } from '../net/exec/client.js';

export interface GridClientOptions {
  bootstrap: string[];
  network?: NetworkKind;
  logger?: Logger;
  discovery?: DiscoveryOptions;
  /** How long `connect` waits for the bootstrap peers to fill the routing table (default 30 s). */
  joinTimeoutMs?: number;
  /** Smallest step deadline for sessions (default 5 s). */
  minStepTimeoutMs?: number;
  /** Route only to staked suppliers: a check of your own, or the chain's StakeRegistry (isListed, cached). */
  stakeCheck?: StakeCheck | { rpcUrl: string; chainId: number; stakeRegistry: string; ttlMs?: number };
}

/** Options of one session. */
export interface SessionOptions {
  /** Pays the suppliers that charge (gateway/payer's VoucherPayer); without it only free suppliers serve. */
  payer?: StepPayer;
  /** Prices the session accepts (default policy/price-limits' DEFAULT_PRICE_LIMITS). */
  priceLimits?: PriceLimits;
}

/** A model the client can run: its manifest and its hosts. */
export interface OpenModel {
  manifest: Manifest;
  manifestCid: string;
  discovery: ModelDiscovery;
}

export class GridClient {
  /** Shared by every session of this client, so what one learns (slow or dead peers) helps the others. */
  readonly estimates = new Estimates();
  private readonly exec = new ExecClient();
  private tmpDirs: string[] = [];

  private readonly stakeCheck?: StakeCheck;
  private readonly closeChain?: () => void;

  private constructor(readonly host: GridHost, private readonly options: GridClientOptions, readonly logger: Logger) {
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
    const host = await createGridHost({ network: options.network, bootstrap: options.bootstrap, clientMode: true, logger });
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
      const dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-client-'));
      this.tmpDirs.push(dir);
      const store = await FragmentStore.open({ dataDir: dir });
      await fetchByCid(this.host.node, store, manifestCid, { provide: false });
      const read = await store.readManifest(manifestCid);
      if (!read) throw new Error(`manifest ${manifestCid} could not be read after fetching it`);
      manifest = read;
    }
    const discovery = new ModelDiscovery(this.host, manifestCid, { ...this.options.discovery, ...(this.stakeCheck ? { stakeCheck: this.stakeCheck } : {}) });
    await discovery.waitForCoverage(manifest.fragments.length, waitForHostsMs);
    discovery.start();
    return { manifest, manifestCid, discovery };
  }

  /** A new pipeline session on an open model. */
  session(model: OpenModel, maxLength: number, options: SessionOptions = {}): PipelineSession {
    return new PipelineSession({
      host: this.host, manifest: model.manifest, manifestCid: model.manifestCid, discovery: model.discovery,
      estimates: this.estimates, client: this.exec, maxLength, logger: this.logger, minStepTimeoutMs: this.options.minStepTimeoutMs,
      payer: options.payer, priceLimits: options.priceLimits,
    });
  }

  async close(): Promise<void> {
    this.closeChain?.();
    await this.host.stop();
    for (const d of this.tmpDirs) await rm(d, { recursive: true, force: true });
  }
}
