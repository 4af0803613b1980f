/**
 * Penalties for peers that flood or send garbage (issue 21): an honest peer never sends a malformed exec or
 * blob message and opens streams at the pace of its sessions, so a peer that sends `limit` malformed
 * messages, or opens `limit` streams, within a window is refused for a while: the first time for `refuseMs`,
 * each repeat offence twice as long (capped at `maxRefuseMs`), the repeat count forgotten after `forgetMs`
 * of good behaviour. Pure and clocked from outside: the supplier (net/peer-guard.ts hangs the peer up and
 * refuses its connections) and the client's swarm view (ignores the records of a peer whose replies were
 * garbage) apply the same rule.
 *
 * Memory is bounded: a peer's counters are one small entry, and entries with nothing left to remember are
 * dropped once more than `maxTracked` peers are held (a flood of fresh peer ids cannot grow the map).
 */

/** What a peer did wrong: a malformed message, or one stream too many. */
export type OffenceKind = 'garbage' | 'streams';

/** `limit` offences of a kind within `windowMs` are one too many. */
export interface PenaltyRule {
  limit: number;
  windowMs: number;
}

export interface PeerPenaltiesOptions {
  /** Malformed messages a peer may send per window (default 16 per minute). */
  garbage?: PenaltyRule;
  /** Streams a peer may open per window (default 600 per 10 s: 60 sessions a second, far above a gateway's pace). */
  streams?: PenaltyRule;
  /** First refusal (default 60 s); doubled per repeat offence. */
  refuseMs?: number;
  /** Longest refusal (default 30 min). */
  maxRefuseMs?: number;
  /** Good behaviour after a refusal ends that clears the repeat count (default 1 h). */
  forgetMs?: number;
  /** Peers tracked before idle entries are dropped (default 10,000). */
  maxTracked?: number;
  now?: () => number;
}

/** A peer refused because of its last offence. */
export interface Penalty {
  peerId: string;
  kind: OffenceKind;
  /** Offences of that kind counted in the window, the last included. */
  count: number;
  /** Refused until (ms, on the clock given). */
  until: number;
  /** How many times this peer has been refused (1 the first time), back-off exponent + 1. */
  repeat: number;
}

export const DEFAULT_GARBAGE_RULE: Readonly<PenaltyRule> = { limit: 16, windowMs: 60_000 };
export const DEFAULT_STREAM_RULE: Readonly<PenaltyRule> = { limit: 600, windowMs: 10_000 };

interface Counter { start: number; count: number }
interface PeerRecord { garbage?: Counter; streams?: Counter; until: number; repeat: number }

export class PeerPenalties {
  private readonly peers = new Map<string, PeerRecord>();
  private readonly rules: Record<OffenceKind, PenaltyRule>;
  private readonly refuseMs: number;
  private readonly maxRefuseMs: number;
  private readonly forgetMs: number;
  private readonly maxTracked: number;
  private readonly now: () => number;

  constructor(options: PeerPenaltiesOptions = {}) {
    this.rules = { garbage: { ...DEFAULT_GARBAGE_RULE, ...options.garbage }, streams: { ...DEFAULT_STREAM_RULE, ...options.streams } };
    this.refuseMs = options.refuseMs ?? 60_000;
    this.maxRefuseMs = options.maxRefuseMs ?? 30 * 60_000;
    this.forgetMs = options.forgetMs ?? 60 * 60_000;
    this.maxTracked = options.maxTracked ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * Counts one offence of a peer; the Penalty when it is the one too many (the peer is refused from now on),
   * else undefined. Offences of a peer already refused are not counted again.
   */
  record(peerId: string, kind: OffenceKind): Penalty | undefined {
    const now = this.now();
    const peer = this.entry(peerId, now);
    if (peer.until > now) return undefined;
    const rule = this.rules[kind];
    const counter = peer[kind] && now - peer[kind].start < rule.windowMs ? peer[kind] : (peer[kind] = { start: now, count: 0 });
    counter.count++;
    if (counter.count < rule.limit) return undefined;
    peer.repeat++;
    peer.until = now + Math.min(this.maxRefuseMs, this.refuseMs * 2 ** (peer.repeat - 1));
    peer.garbage = undefined;
    peer.streams = undefined;
    return { peerId, kind, count: counter.count, until: peer.until, repeat: peer.repeat };
  }

  /** Whether a peer is refused right now. */
  isRefused(peerId: string): boolean {
    return (this.peers.get(peerId)?.until ?? 0) > this.now();
  }

  /** Until when a peer is refused (0: it is not). */
  refusedUntil(peerId: string): number {
    const until = this.peers.get(peerId)?.until ?? 0;
    return until > this.now() ? until : 0;
  }

  /** Peers refused right now. */
  refused(): string[] {
    const now = this.now();
    return [...this.peers].filter(([, p]) => p.until > now).map(([id]) => id);
  }

  /** Peers with an entry (bounded by maxTracked plus those still worth remembering). */
  get tracked(): number {
    return this.peers.size;
  }

  private entry(peerId: string, now: number): PeerRecord {
    let peer = this.peers.get(peerId);
    if (peer && peer.repeat > 0 && peer.until <= now && now - peer.until >= this.forgetMs) peer.repeat = 0;
    if (!peer) {
      if (this.peers.size >= this.maxTracked) this.prune(now);
      peer = { until: 0, repeat: 0 };
      this.peers.set(peerId, peer);
    }
    return peer;
  }

  /** Drops the entries that remember nothing any more: no refusal running or to repeat, no open window. */
  private prune(now: number): void {
    for (const [id, p] of this.peers) {
      const refusalMatters = p.until > now || (p.repeat > 0 && now - p.until < this.forgetMs);
      const open = (c: Counter | undefined, rule: PenaltyRule): boolean => c !== undefined && now - c.start < rule.windowMs;
      if (!refusalMatters && !open(p.garbage, this.rules.garbage) && !open(p.streams, this.rules.streams)) this.peers.delete(id);
    }
  }
}
