/**
 * What the client learns about each server from its replies: round trip, bandwidth, seconds per FLOP and
 * queueing (moving averages, seeded from the capacity record), and bans with exponential back-off for servers
 * that fail (after hivemind's Blacklist: 15 s × 2^k, cleared by a success).
 *
 * Round trip and bandwidth come apart from one number, a reply's network time (wall − queue − compute),
 * modelled as `rtt + bytes / bandwidth`: every reply refines the round trip with what the bandwidth estimate
 * does not explain, and a reply that moved enough bytes (`minBandwidthSampleBytes`) refines the bandwidth with
 * what the round trip does not. Across the internet the round trip dominates decode and the bandwidth
 * prefill; on loopback both are tiny and routing is decided by compute, as before.
 */

export interface PeerEstimate {
  rttMs: number;
  /** 1 / bandwidth (bytes per second) of the path to this server, both ways together. */
  secondsPerByte: number;
  secondsPerFlop: number;
  queueMs: number;
  inflight: number;
  bannedUntil: number;
  failures: number;
  samples: number;
  /** Replies that counted as bandwidth samples. */
  bandwidthSamples: number;
}

export interface EstimatesOptions {
  /** Weight of a new sample in the moving averages (default 0.2). */
  alpha?: number;
  /** First ban length; doubled per consecutive failure (default 15 s). */
  banBaseMs?: number;
  banMaxMs?: number;
  /** Round trip assumed before any reply (default 5 ms: a LAN; the record's region could refine it). */
  defaultRttMs?: number;
  /** Bandwidth assumed before a big enough reply (default 1e9 B/s: what routing assumed for every peer before). */
  defaultBandwidthBytesPerS?: number;
  /** Fewest bytes a call must move to count as a bandwidth sample (default 64 KiB). */
  minBandwidthSampleBytes?: number;
  now?: () => number;
}

export class Estimates {
  private readonly peers = new Map<string, PeerEstimate>();
  private readonly alpha: number;
  private readonly banBaseMs: number;
  private readonly banMaxMs: number;
  private readonly defaultRttMs: number;
  private readonly defaultSecondsPerByte: number;
  private readonly minBandwidthSampleBytes: number;
  private readonly now: () => number;
  /** Peers excluded for misbehaviour (wrong outputs, floods), until when: not lifted by a later reply. */
  private readonly condemned = new Map<string, number>();

  constructor(options: EstimatesOptions = {}) {
    this.alpha = options.alpha ?? 0.2;
    this.banBaseMs = options.banBaseMs ?? 15_000;
    this.banMaxMs = options.banMaxMs ?? 10 * 60_000;
    this.defaultRttMs = options.defaultRttMs ?? 5;
    this.defaultSecondsPerByte = 1 / (options.defaultBandwidthBytesPerS ?? 1e9);
    this.minBandwidthSampleBytes = options.minBandwidthSampleBytes ?? 64 * 1024;
    this.now = options.now ?? Date.now;
  }

  /** The estimate of a peer, created from its advertised GFLOP/s on first sight. */
  get(peerId: string, advertisedGflops = 10): PeerEstimate {
    let e = this.peers.get(peerId);
    if (!e) {
      e = { rttMs: this.defaultRttMs, secondsPerByte: this.defaultSecondsPerByte, secondsPerFlop: 1 / (Math.max(0.01, advertisedGflops) * 1e9), queueMs: 0, inflight: 0, bannedUntil: 0, failures: 0, samples: 0, bandwidthSamples: 0 };
      this.peers.set(peerId, e);
    }
    return e;
  }

  /**
   * Folds in one reply: wall time of the call, the server's queue and compute time, the FLOPs it ran and the
   * bytes the call moved (request and reply tensors; 0 when unknown).
   */
  recordReply(peerId: string, wallMs: number, queueMs: number, computeMs: number, flops: number, bytes = 0): void {
    const e = this.get(peerId);
    const a = e.samples === 0 ? 1 : this.alpha;
    const network = Math.max(0, wallMs - queueMs - computeMs);
    if (bytes >= this.minBandwidthSampleBytes && network > e.rttMs) {
      const b = e.bandwidthSamples === 0 ? 1 : this.alpha;
      e.secondsPerByte = (1 - b) * e.secondsPerByte + b * ((network - e.rttMs) / 1000 / bytes);
      e.bandwidthSamples++;
    }
    e.rttMs = (1 - a) * e.rttMs + a * Math.max(0, network - bytes * e.secondsPerByte * 1000);
    if (flops > 0 && computeMs > 0) e.secondsPerFlop = (1 - a) * e.secondsPerFlop + a * (computeMs / 1000 / flops);
    e.queueMs = (1 - a) * e.queueMs + a * queueMs;
    e.samples++;
    e.failures = 0;
    e.bannedUntil = 0;
  }

  /** Bans a peer after a failure, for banBase × 2^(consecutive failures). */
  recordFailure(peerId: string): void {
    const e = this.get(peerId);
    e.bannedUntil = this.now() + Math.min(this.banMaxMs, this.banBaseMs * 2 ** e.failures);
    e.failures++;
  }

  /**
   * Excludes a peer for misbehaviour (verification found its outputs wrong, or it flooded or sent garbage) for
   * `forMs` (default: for good). Unlike a failure's ban, a later reply does not lift it.
   */
  condemn(peerId: string, forMs = Number.POSITIVE_INFINITY): void {
    this.condemned.set(peerId, Math.max(this.condemned.get(peerId) ?? 0, this.now() + forMs));
  }

  /** Whether a peer is excluded for misbehaviour right now. */
  isCondemned(peerId: string): boolean {
    return (this.condemned.get(peerId) ?? 0) > this.now();
  }

  isBanned(peerId: string): boolean {
    return (this.peers.get(peerId)?.bannedUntil ?? 0) > this.now() || this.isCondemned(peerId);
  }

  /** Peers banned or condemned right now. */
  banned(): Set<string> {
    const now = this.now();
    const out = new Set([...this.peers].filter(([, e]) => e.bannedUntil > now).map(([id]) => id));
    for (const [id, until] of this.condemned) if (until > now) out.add(id);
    return out;
  }
}
