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
  /** Round trips the client measured itself (ping); once there is one, the round trip comes only from them. */
  pingSamples: number;
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
  /**
   * Most GFLOP/s a peer's advertised speed may seed its estimate with (default 10): the advertisement is the
   * peer's own claim, so it can lower its first estimate but not raise it above this; replies then measure it.
   */
  maxAdvertisedGflops?: number;
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
  private readonly maxAdvertisedGflops: number;
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
    this.maxAdvertisedGflops = options.maxAdvertisedGflops ?? 10;
    this.now = options.now ?? Date.now;
  }

  /** The estimate of a peer, created from its advertised GFLOP/s on first sight. */
  get(peerId: string, advertisedGflops = 10): PeerEstimate {
    let e = this.peers.get(peerId);
    if (!e) {
      const gflops = Math.min(this.maxAdvertisedGflops, Math.max(0.01, Number.isFinite(advertisedGflops) ? advertisedGflops : 10));
      e = { rttMs: this.defaultRttMs, secondsPerByte: this.defaultSecondsPerByte, secondsPerFlop: 1 / (gflops * 1e9), queueMs: 0, inflight: 0, bannedUntil: 0, failures: 0, samples: 0, bandwidthSamples: 0, pingSamples: 0 };
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
    // The server's own account of its time can only split what the client measured, never exceed it.
    queueMs = Math.min(Math.max(0, queueMs || 0), wallMs);
    computeMs = Math.min(Math.max(0, computeMs || 0), wallMs - queueMs);
    const network = Math.max(0, wallMs - queueMs - computeMs);
    if (bytes >= this.minBandwidthSampleBytes && network > e.rttMs) {
      const b = e.bandwidthSamples === 0 ? 1 : this.alpha;
      e.secondsPerByte = (1 - b) * e.secondsPerByte + b * ((network - e.rttMs) / 1000 / bytes);
      e.bandwidthSamples++;
    }
    if (e.pingSamples > 0) {
      // The client measured the round trip itself (a ping): the server's time is what the network does not
      // explain, and the compute time it reports of itself (computeMs = 0.01 from a liar) is not used.
      const serverMs = Math.max(0, wallMs - e.rttMs - bytes * e.secondsPerByte * 1000 - queueMs);
      if (flops > 0) e.secondsPerFlop = (1 - a) * e.secondsPerFlop + a * (serverMs / 1000 / flops);
    } else {
      e.rttMs = (1 - a) * e.rttMs + a * Math.max(0, network - bytes * e.secondsPerByte * 1000);
      if (flops > 0 && computeMs > 0) e.secondsPerFlop = (1 - a) * e.secondsPerFlop + a * (computeMs / 1000 / flops);
    }
    e.queueMs = (1 - a) * e.queueMs + a * queueMs;
    e.samples++;
    e.failures = 0;
    e.bannedUntil = 0;
  }

  /** A round trip the client measured itself (a ping): from then on the peer's round trip comes only from these. */
  recordRoundTrip(peerId: string, rttMs: number): void {
    if (!(rttMs >= 0) || !Number.isFinite(rttMs)) return;
    const e = this.get(peerId);
    e.rttMs = e.pingSamples === 0 ? rttMs : (1 - this.alpha) * e.rttMs + this.alpha * rttMs;
    e.pingSamples++;
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
