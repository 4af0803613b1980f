/**
 * A supplier node: everything `gridpipe supply` runs. It probes the machine, joins the grid (libp2p +
 * DHT), imports or fetches the fragments it hosts (verified by CID) and serves them to peers, runs them
 * for clients within its share limits, and keeps a signed capacity record in the DHT. `stop()` withdraws
 * the record (a tombstone) and shuts everything down cleanly.
 */
import './polyfill.js';
import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import { createLogger } from './logger.js';
import type { Manifest } from '../fragments/manifest.js';
import { createGridHost, type GridHost, type NetworkKind } from './host.js';
import { probeCapacity, type ProbeResult } from './capacity/probe.js';
import { CapacityPublisher } from './capacity/dht.js';
import { fieldsFromProbe, type CapacityRecordFields, type HostedFragment } from './capacity/record.js';
import { ShareLimits, type ShareLimitOptions } from './limits.js';
import { FragmentStore, parseBlobCid } from './store/fragment-store.js';
import { handleBlobProtocol } from './store/blob-protocol.js';
import { fetchManifestAndFragments, provideBlobs } from './store/fetcher.js';
import { FetchError } from './store/errors.js';
import { peerIdFromString } from '@libp2p/peer-id';
import type { PeerId } from '@libp2p/interface';
import { startExecServer, type ExecServer } from './exec/protocol.js';
import type { ProviderChoice } from './exec/executor.js';

export interface SupplierOptions {
  dataDir: string;
  listen?: string[];
  announce?: string[];
  bootstrap?: string[];
  network?: NetworkKind;
  mdns?: boolean;
  relay?: boolean;
  /** Fragment folders (with manifest.json) or manifest CIDs to host. */
  host?: string[];
  /** Which fragment indices of each model to host (default: all). */
  fragments?: number[];
  limits?: ShareLimitOptions;
  /** Price per GFLOP in the payment token's base units (decimal string). */
  pricePerGflop?: string;
  stakingAddress?: string;
  /** Capacity record life (default 10 min; re-published at half-life). */
  recordTtlMs?: number;
  /** Local admin endpoint on 127.0.0.1 (pause, resume, status, metrics); 0 picks a port; omit for none. */
  adminPort?: number;
  /** Execution provider to try first (default: the best the probe found). */
  provider?: ProviderChoice;
  rerunProbe?: boolean;
  logger?: Logger;
  /** Progress of fetching fragments (bytes so far, total, what). */
  onFetchProgress?: (done: number, total: number, what: string) => void;
}

/** A fragment this supplier hosts. */
export interface HostedModelFragment {
  manifestCid: string;
  manifest: Manifest;
  index: number;
  cid: string;
  path: string;
}

export class Supplier {
  private stopped = false;

  private constructor(
    readonly host: GridHost,
    readonly store: FragmentStore,
    readonly exec: ExecServer,
    readonly publisher: CapacityPublisher,
    readonly limits: ShareLimits,
    readonly probe: ProbeResult,
    readonly hosted: HostedModelFragment[],
    private readonly stopBlob: () => Promise<void>,
    readonly logger: Logger,
    /** CIDs this supplier announces as a provider: manifests, fragments, their weights. */
    private readonly announceCids: string[],
  ) {}

  private admin?: Server;

  /** Starts a supplier (see module doc). */
  static async start(options: SupplierOptions): Promise<Supplier> {
    const logger = options.logger ?? createLogger();
    const dataDir = path.resolve(options.dataDir);
    await mkdir(dataDir, { recursive: true });
    const probe = await probeCapacity({ dataDir, rerun: options.rerunProbe, threads: options.limits?.threads, logger: logger.child({ component: 'probe' }) });
    const limits = new ShareLimits(options.limits ?? {}, { memoryBytes: probe.memoryTotalBytes, cores: probe.cpuCores });
    const host = await createGridHost({
      dataDir, network: options.network, listen: options.listen, announce: options.announce, bootstrap: options.bootstrap,
      mdns: options.mdns, relay: options.relay, logger,
    });
    const cleanups: (() => Promise<unknown>)[] = [() => host.stop()];
    try {
      const store = await FragmentStore.open({ dataDir, registry: host.metrics, logger: host.logger });
      // Re-hash stored blobs in the background so the first request after a restart is not slowed by it.
      void store.verifyAll().catch((err: unknown) => host.logger.warn({ err }, 'store verification failed'));
      const stopBlob = await handleBlobProtocol(host.node, store, { logger: host.logger });
      cleanups.push(stopBlob);

      const hosted = await hostModels(host, store, dataDir, options, logger);
      const paths = new Map<string, string>();
      for (const h of hosted) {
        paths.set(h.cid, h.path);
        const manifestPath = await store.get(h.manifestCid);
        if (manifestPath) paths.set(h.manifestCid, manifestPath);
      }
      const exec = await startExecServer(host.node, {
        resolve: (cid) => paths.get(cid),
        limits,
        registry: host.metrics,
        logger: host.logger,
        provider: providerChoice(options.provider ?? probe.benchmark.executionProvider),
      });
      cleanups.push(() => exec.stop());

      const fields = (): CapacityRecordFields => ({
        ...fieldsFromProbe(probe),
        pricePerGflop: options.pricePerGflop ?? '0',
        stakingAddress: options.stakingAddress ?? '',
        fragments: hosted.map((h): HostedFragment => {
          const f = h.manifest.fragments[h.index];
          const flopsPerStep = Math.max(1, f.flops);
          return {
            cid: h.cid, manifestCid: h.manifestCid, index: h.index,
            stepsPerSecond: (probe.benchmark.matmulGflops * 1e9) / flopsPerStep,
            load: Math.min(1, exec.sessions.size / limits.maxSessions),
            activeSessions: exec.sessions.size,
          };
        }),
        limits: {
          maxMemoryBytes: limits.maxMemoryBytes, maxSessions: limits.maxSessions, threads: limits.threads,
          gpuShare: limits.gpuShare, hours: limits.hours?.text ?? '', paused: limits.paused,
        },
      });
      const publisher = new CapacityPublisher(host, { fields, ttlMs: options.recordTtlMs });
      const supplier = new Supplier(host, store, exec, publisher, limits, probe, hosted, stopBlob, logger, blobsOf(hosted));
      if (options.adminPort !== undefined) await supplier.startAdmin(options.adminPort);
      supplier.startAnnouncing();
      logger.info({ peerId: host.peerId.toString(), addresses: host.addresses(), hosted: hosted.length }, 'supplier ready');
      return supplier;
    } catch (err) {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
      throw err;
    }
  }

  get peerId(): string { return this.host.peerId.toString(); }
  addresses(): string[] { return this.host.addresses(); }
  /** Address of the admin endpoint, when it runs. */
  get adminUrl(): string | undefined {
    const a = this.admin?.address();
    return a && typeof a === 'object' ? `http://127.0.0.1:${a.port}` : undefined;
  }

  /**
   * Announces the hosted blobs (DHT provide) and the capacity record, in the background: a DHT query
   * with an empty routing table only ends at its timeout, and the first supplier of a network starts
   * alone. So nothing waits on it, and it runs again whenever a peer connects after a lonely attempt.
   */
  private startAnnouncing(): void {
    const cids = this.announceCids;
    let lonely = true;
    let running = false;
    const announce = async (): Promise<void> => {
      if (running || this.stopped) return;
      running = true;
      lonely = this.host.routingTableSize() === 0;
      try {
        const [failures, published] = await Promise.all([
          provideBlobs(this.host.node, cids, { signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS) }),
          this.publisher.isRunning ? this.publisher.publishNow() : this.publisher.start(),
        ]);
        if (failures.length) this.logger.debug({ failures: failures.length }, 'some hosted blobs could not be announced yet');
        this.logger.info({ ok: published.ok, storedBy: published.accepted.length }, 'capacity record published');
      } catch (err) {
        this.logger.debug({ err }, 'announcement incomplete; will retry');
      } finally {
        running = false;
      }
    };
    this.onPeer = () => { if (lonely && !this.stopped) setTimeout(() => { void announce(); }, 200); };
    this.host.node.addEventListener('peer:connect', this.onPeer);
    void announce();
  }

  private onPeer?: () => void;

  /** Stops taking new sessions and says so in the capacity record. */
  async pause(): Promise<void> {
    this.limits.pause();
    this.logger.info('sharing paused');
    await this.publisher.publishNow().catch(() => undefined);
  }

  async resume(): Promise<void> {
    this.limits.resume();
    this.logger.info('sharing resumed');
    await this.publisher.publishNow().catch(() => undefined);
  }

  /** Withdraws the capacity record and stops every part; safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.onPeer) this.host.node.removeEventListener('peer:connect', this.onPeer);
    await this.publisher.unpublish().catch((err: unknown) => this.logger.warn({ err }, 'could not withdraw the capacity record'));
    await new Promise<void>((resolve) => (this.admin ? this.admin.close(() => resolve()) : resolve()));
    await this.exec.stop().catch(() => undefined);
    await this.stopBlob().catch(() => undefined);
    await this.host.stop();
    this.logger.info('supplier stopped');
  }

  private async startAdmin(port: number): Promise<void> {
    const server = createServer((req, res) => {
      const reply = (code: number, body: unknown, type = 'application/json'): void => {
        res.writeHead(code, { 'content-type': type });
        res.end(type === 'application/json' ? `${JSON.stringify(body)}\n` : String(body));
      };
      const route = `${req.method} ${req.url?.split('?')[0]}`;
      if (route === 'POST /pause') { void this.pause().then(() => reply(200, { paused: true })); return; }
      if (route === 'POST /resume') { void this.resume().then(() => reply(200, { paused: false })); return; }
      if (route === 'GET /status') {
        reply(200, {
          peerId: this.peerId, addresses: this.addresses(), paused: this.limits.paused, sessions: this.exec.sessions.size,
          hosted: this.hosted.map((h) => ({ manifestCid: h.manifestCid, index: h.index, cid: h.cid })),
          record: this.publisher.current, probe: this.probe,
        });
        return;
      }
      if (route === 'GET /metrics') { void this.host.metrics.metrics().then((m) => reply(200, m, this.host.metrics.contentType)); return; }
      reply(404, { error: `no such endpoint: ${route}` });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.admin = server;
  }
}

/** How long a joining supplier waits for a model it was asked to host to appear on the DHT. */
const FIND_PROVIDERS_PATIENCE_MS = 60_000;

/**
 * Runs a fetch, retrying while nobody provides the blobs yet: a supplier that has just joined may ask
 * before its routing table fills, or before the model's first host has announced it.
 */
async function fetchWhenPublished<T>(host: GridHost, fetch: () => Promise<T>, logger: Logger): Promise<T> {
  const deadline = Date.now() + FIND_PROVIDERS_PATIENCE_MS;
  while (host.routingTableSize() === 0 && Date.now() < deadline) await sleep(100);
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch();
    } catch (err) {
      if (!(err instanceof FetchError) || err.code !== 'NO_PROVIDERS' || Date.now() >= deadline) throw err;
      const wait = Math.min(5000, 250 * 2 ** attempt);
      logger.info({ cid: err.cid, retryInMs: wait }, 'no provider found yet; waiting for the model to be announced');
      await sleep(wait);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Peer ids named in bootstrap multiaddrs (…/p2p/<id>). */
function bootstrapPeers(addrs: string[]): PeerId[] {
  const out: PeerId[] = [];
  for (const a of addrs) {
    const id = /\/p2p\/([^/]+)$/.exec(a)?.[1];
    if (!id) continue;
    try { out.push(peerIdFromString(id)); } catch { /* not a peer id: the DHT will do */ }
  }
  return out;
}

/** Every blob behind the hosted fragments, once each. */
function blobsOf(hosted: HostedModelFragment[]): string[] {
  return [...new Set(hosted.flatMap((h) => {
    const f = h.manifest.fragments[h.index];
    return [h.manifestCid, f.cid, ...(f.data ? [f.data.cid] : [])];
  }))];
}

/** Longest a round of DHT announcements may take. */
const ANNOUNCE_TIMEOUT_MS = 15_000;

/** Imports fragment folders or fetches manifests by CID, links the hosted fragments, provides them. */
async function hostModels(host: GridHost, store: FragmentStore, dataDir: string, options: SupplierOptions, logger: Logger): Promise<HostedModelFragment[]> {
  const hosted: HostedModelFragment[] = [];
  for (const source of options.host ?? []) {
    let manifestCid: string;
    let manifest: Manifest;
    const isDir = await stat(source).then((s) => s.isDirectory(), () => false);
    if (isDir) {
      ({ manifestCid, manifest } = await store.importManifestDir(source));
    } else {
      let cid: string;
      try {
        cid = parseBlobCid(source);
      } catch {
        throw new Error(`--host ${source}: neither a fragment folder nor a manifest CID`);
      }
      logger.info({ manifestCid: cid }, 'fetching the manifest and fragments');
      const result = await fetchWhenPublished(host, () => fetchManifestAndFragments(host.node, store, cid, options.fragments, {
        onProgress: (done, total) => options.onFetchProgress?.(done, total, cid),
        // The peers we joined through are likely hosts: ask them before the DHT answers.
        peers: bootstrapPeers(options.bootstrap ?? []),
        logger,
      }), logger);
      manifestCid = result.manifestCid;
      manifest = result.manifest;
    }
    const indices = options.fragments ?? manifest.fragments.map((f) => f.index);
    const dir = path.join(dataDir, 'hosted', manifestCid);
    for (const index of indices) {
      if (!manifest.fragments[index]) throw new Error(`--fragments ${index}: ${manifest.name} has ${manifest.fragments.length} fragments`);
      const linked = await store.linkFragment(manifest, index, dir);
      const f = manifest.fragments[index];
      hosted.push({ manifestCid, manifest, index, cid: f.cid, path: linked.model });
    }
    logger.info({ model: manifest.name, manifestCid, fragments: indices }, 'hosting');
  }
  return hosted;
}

/** The probe's provider name as an executor choice (anything unknown: let the executor pick). */
function providerChoice(name: string): ProviderChoice {
  return name === 'cpu' || name === 'cuda' || name === 'webgpu' || name === 'auto' ? name : 'auto';
}
