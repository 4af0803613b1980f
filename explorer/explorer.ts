/**
 * The explorer's state: one object that turns what the process already knows into the views the page shows.
 * Suppliers come from the swarm view's sweep of capacity records (scheduler/swarm-view.ts, the one DHT
 * reader of the process: the explorer never sweeps on its own schedule, it accepts a recent sweep), online
 * states from its pings (liveness.ts), stakes and the Chain view from the contracts (chain-reader.ts),
 * requests from the gateway's public feed (live-log.ts), manifests from whoever has them (the gateway's
 * catalog, a supplier's store). Pings run only while a page is open (`touch`), so an unwatched explorer
 * costs nothing.
 */
import type { Logger } from 'pino';
import type { CapacityRecord } from '../net/capacity/record.js';
import type { Manifest } from '../fragments/manifest.js';
import type { Sweep } from '../scheduler/discovery.js';
import type { ChainReader } from './chain-reader.js';
import { LiveLog, type FeedSource } from './live-log.js';
import { Liveness, type PingNode } from './liveness.js';
import type { ChainView, FragmentView, LiveView, ModelView, ModelsView, NetworkView, PeerView } from './types.js';

/** What the explorer reads the swarm from (the GridClient's SwarmView has this shape). */
export interface SwarmSource {
  refresh(options?: { acceptRecent?: boolean }): Promise<Sweep>;
  readonly latest?: Sweep;
  isBanned(peerId: string): boolean;
}

/** A manifest the process knows, by CID. */
export interface KnownManifest { manifestCid: string; manifest: Manifest }

export interface ExplorerOptions {
  swarm: SwarmSource;
  /** A libp2p node to ping suppliers from. */
  pinger: PingNode;
  /** The gateway's public feed (absent: a node's explorer, no requests to show). */
  feed?: FeedSource;
  /** The manifests this process has (names, tokenizers, fragment sizes). */
  manifests?: () => KnownManifest[];
  chain?: ChainReader;
  /** How long after the last page request pings go on (default 30 s). */
  watchMs?: number;
  /** Time between ping rounds (default 3 s). */
  pingEveryMs?: number;
  logger?: Logger;
}

/** The Network view's form of a record. */
function peerView(r: CapacityRecord, liveness: Liveness, banned: boolean, stake?: string): PeerView {
  const live = liveness.of(r.peerId);
  const hw = r.hardware;
  return {
    peerId: r.peerId, addrs: r.addrs, online: live?.online ?? false, lastSeenMs: live?.lastSeenMs, pingMs: live?.pingMs, banned,
    hardware: hw && {
      cpuModel: hw.cpuModel, cpuCores: hw.cpuCores, memoryTotalBytes: hw.memoryTotalBytes, memoryFreeBytes: hw.memoryFreeBytes, platform: hw.platform,
      gpus: hw.gpus.map((g) => ({ name: g.name, memoryTotalBytes: g.memoryTotalBytes })), executionProviders: hw.executionProviders,
    },
    benchmark: r.benchmark && { matmulGflops: r.benchmark.matmulGflops, executionProvider: r.benchmark.executionProvider },
    pricePerGflop: r.pricePerGflop, stakingAddress: r.stakingAddress, ...(stake !== undefined ? { stake } : {}),
    limits: r.limits && { ...r.limits },
    fragments: r.fragments.map((f) => ({ manifestCid: f.manifestCid, index: f.index, stepsPerSecond: f.stepsPerSecond, load: f.load, activeSessions: f.activeSessions })),
    softwareVersion: r.softwareVersion, recordIssuedMs: r.issuedAtMs,
  };
}

export class Explorer {
  readonly live = new LiveLog();
  private readonly liveness: Liveness;
  private readonly stakes = new Map<string, { stake: string; at: number }>();
  /** Every unexpired record seen in any sweep, by peer: a sweep can miss records (a DHT node gone), a supplier stays listed until its record expires. */
  private readonly known = new Map<string, CapacityRecord>();
  private watchUntil = 0;
  private idleTimer?: ReturnType<typeof setTimeout>;

  constructor(private readonly options: ExplorerOptions) {
    this.liveness = new Liveness(options.pinger, { everyMs: options.pingEveryMs, logger: options.logger });
    if (options.feed) this.live.follow(options.feed);
  }

  /** A page asked for something: keep pinging suppliers for a while. */
  touch(): void {
    this.watchUntil = Date.now() + (this.options.watchMs ?? 30_000);
    this.liveness.start();
    if (!this.idleTimer) this.armIdle();
  }

  /** Every supplier in the latest sweep with its online state, stake and the pipeline graph's edges. */
  async network(): Promise<NetworkView> {
    const records = await this.records();
    const peers = await Promise.all(records.map(async (r) => peerView(r, this.liveness, this.options.swarm.isBanned(r.peerId), await this.stakeOf(r.stakingAddress))));
    peers.sort((a, b) => Number(b.online) - Number(a.online) || a.peerId.localeCompare(b.peerId));
    return { at: Date.now(), peers, edges: this.live.traffic() };
  }

  /** One supplier, or undefined. */
  async peer(peerId: string): Promise<PeerView | undefined> {
    return (await this.network()).peers.find((p) => p.peerId === peerId);
  }

  /** Every model seen in records or known by manifest, with each fragment's online replicas and coverage. */
  async models(): Promise<ModelsView> {
    const records = await this.records();
    const known = new Map((this.options.manifests?.() ?? []).map((m) => [m.manifestCid, m.manifest]));
    const cids = new Set([...known.keys(), ...records.flatMap((r) => r.fragments.map((f) => f.manifestCid))]);
    const models: ModelView[] = [...cids].map((cid) => {
      const manifest = known.get(cid);
      const hosted = records.flatMap((r) => r.fragments.filter((f) => f.manifestCid === cid).map((f) => ({ peerId: r.peerId, f })));
      const count = manifest ? manifest.fragments.length : Math.max(0, ...hosted.map((h) => h.f.index + 1));
      const fragments: FragmentView[] = Array.from({ length: count }, (_, index) => {
        const hosts = hosted.filter((h) => h.f.index === index);
        const online = hosts.filter((h) => this.liveness.of(h.peerId)?.online);
        const mf = manifest?.fragments[index];
        return {
          index, cid: mf?.cid ?? hosts[0]?.f.cid ?? '', flops: mf?.flops, weightBytes: mf?.weightBytes,
          replicas: online.length, hosts: hosts.map((h) => h.peerId), stepsPerSecond: online.reduce((s, h) => s + h.f.stepsPerSecond, 0), weak: false,
        };
      });
      const lowest = Math.min(...fragments.map((f) => f.stepsPerSecond));
      for (const f of fragments) f.weak = f.replicas < 2 || (fragments.length > 1 && f.stepsPerSecond === lowest);
      return {
        manifestCid: cid, name: manifest?.name, tokenizer: manifest?.tokenizer.kind, synthetic: manifest?.model.synthetic,
        parameters: manifest?.model.parameters, expertGroups: manifest?.expertGroups.length ?? 0,
        experts: (manifest?.expertGroups ?? []).map((g) => ({
          layer: g.layer, topK: g.topK,
          experts: g.experts.map((e) => ({ index: e.index, fragments: e.fragments, replicas: Math.min(...e.fragments.map((f) => fragments[f]?.replicas ?? 0)) })),
        })),
        fragments, servable: fragments.length > 0 && fragments.every((f) => f.replicas > 0),
      };
    });
    models.sort((a, b) => (a.name ?? a.manifestCid).localeCompare(b.name ?? b.manifestCid));
    return { at: Date.now(), models };
  }

  /** The Live view: recent requests newest first, the stats buckets. */
  liveView(): LiveView {
    return { at: Date.now(), requests: this.live.recent(), stats: this.live.stats(), bucketMs: this.live.bucketMs };
  }

  /** The Chain view (or `configured: false` without a chain). */
  async chainView(): Promise<ChainView> {
    if (!this.options.chain) return { at: Date.now(), configured: false, events: [], stakes: [], escrow: [], earnings: [] };
    return this.options.chain.view();
  }

  close(): void {
    this.liveness.stop();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.live.close();
    this.options.chain?.close();
  }

  private async records(): Promise<CapacityRecord[]> {
    const swarm = this.options.swarm;
    const sweep = swarm.latest ?? await swarm.refresh({ acceptRecent: true });
    // Keep the latest sweep current in the background (a sweep within the view's period is reused).
    void swarm.refresh({ acceptRecent: true }).catch(() => undefined);
    const now = Date.now();
    for (const r of sweep.records) {
      const had = this.known.get(r.peerId);
      if (!had || r.sequence > had.sequence || r.issuedAtMs > had.issuedAtMs) this.known.set(r.peerId, r);
    }
    for (const [id, r] of this.known) if (r.withdrawn || r.expiresAtMs <= now) this.known.delete(id);
    const records = [...this.known.values()];
    this.liveness.watch(new Map(records.map((r) => [r.peerId, r.addrs])));
    if (records.some((r) => !this.liveness.of(r.peerId))) await this.liveness.check();
    return records;
  }

  private async stakeOf(address: string): Promise<string | undefined> {
    if (!address || !this.options.chain) return undefined;
    const cached = this.stakes.get(address);
    if (cached && Date.now() - cached.at < 5000) return cached.stake;
    try {
      const stake = await this.options.chain.stakeOf(address);
      this.stakes.set(address, { stake, at: Date.now() });
      return stake;
    } catch {
      return cached?.stake;
    }
  }

  private armIdle(): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (Date.now() >= this.watchUntil) this.liveness.stop();
      else this.armIdle();
    }, Math.max(1000, this.watchUntil - Date.now()));
    this.idleTimer.unref?.();
  }
}
