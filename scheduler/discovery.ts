/**
 * Discovery: for one model (its manifest CID), the suppliers that host its fragments, from their
 * signed capacity records as the process's swarm view (scheduler/swarm-view.ts) read them from the DHT:
 * every sweep of the view, in the background or on demand (after a failure), updates every model at once.
 *
 * Stake: a record's staking address is only what its stake binding proves (net/capacity/record.ts
 * blanks an unbound one), so routing, payment (the payee) and disputes never use an address a peer
 * merely named. With a stake check, a supplier counts only when its binding is for the check's
 * StakeRegistry and chain and that address is listed there (`isStakedRecord`).
 */
import type { CapacityRecord } from '../net/capacity/record.js';
import { isJoining } from '../net/capacity/swarm.js';
import { isEvmAddress } from '../contracts/address.js';

/** A supplier's contiguous run of hosted fragments of the model. */
export interface HostedSpan {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
  gflops: number;
  pricePerGflop: string;
  stakingAddress: string;
  paused: boolean;
  /** The expert fragments of the span, with the experts the record says each computes (cut MoE layers; absent when none). */
  experts?: { fragment: number; group: number; experts: number[] }[];
}

/** Splits a record's served fragments of one manifest into contiguous spans. */
export function spansOf(record: CapacityRecord, manifestCid: string): HostedSpan[] {
  // Fragments still being downloaded (announced early so others count them) are not served yet.
  const served = record.fragments.filter((f) => f.manifestCid === manifestCid && !isJoining(f));
  const indices = [...new Set(served.map((f) => f.index))].sort((a, b) => a - b);
  const spans: HostedSpan[] = [];
  for (let i = 0; i < indices.length;) {
    let j = i;
    while (j + 1 < indices.length && indices[j + 1] === indices[j] + 1) j++;
    const [start, end] = [indices[i], indices[j] + 1];
    const experts = served.filter((f) => f.experts && f.index >= start && f.index < end).map((f) => ({ fragment: f.index, ...f.experts! }));
    spans.push({
      peerId: record.peerId, addrs: record.addrs, start, end,
      gflops: record.benchmark?.matmulGflops ?? 10, pricePerGflop: record.pricePerGflop, stakingAddress: record.stakingAddress,
      paused: record.limits?.paused ?? false, ...(experts.length ? { experts } : {}),
    });
    i = j + 1;
  }
  return spans;
}

/** Which of the swarm view's records count as hosts of a model. */
export interface DiscoveryFilter {
  /** Keep only suppliers this returns true for. */
  accept?: (record: CapacityRecord) => boolean | Promise<boolean>;
  /** When a chain is configured: keep only suppliers whose staking address is listed (staked) there. */
  stakeCheck?: StakeCheck;
}

/** Discovery settings of a GridClient: the swarm view's sweeps and the filter of every model's hosts. */
export interface DiscoveryOptions extends DiscoveryFilter {
  /** Background sweep when no sweep ran for this long (default 30 s). */
  refreshMs?: number;
  /** Timeout of one DHT sweep (default 10 s). */
  lookupTimeoutMs?: number;
}

/** Whether an address is staked enough to be routed to. */
export interface StakeCheck {
  isListed(stakingAddress: string): Promise<boolean>;
  /** The StakeRegistry (and chain) bindings must be signed for; a binding for another counts for nothing. */
  domain?: { chainId: number; stakeRegistry: string };
}

/**
 * Whether a (verified) record is bound to a staking address, for the check's registry when it names one,
 * and that address is listed.
 */
export async function isStakedRecord(check: StakeCheck, record: Pick<CapacityRecord, 'stakingAddress' | 'stakeBinding'>): Promise<boolean> {
  const b = record.stakeBinding;
  if (!b || !record.stakingAddress) return false;
  if (check.domain && (b.chainId !== check.domain.chainId || b.stakeRegistry.toLowerCase() !== check.domain.stakeRegistry.toLowerCase())) return false;
  return check.isListed(record.stakingAddress);
}

/**
 * StakeRegistry.isListed, cached per address for `ttlMs` (default 60 s): discovery sweeps run every few
 * seconds and a stake changes rarely. An address that is not 0x + 20 bytes is never listed; a failed RPC
 * read answers with the last known value, or not listed when there is none (better to skip a supplier than
 * to route to one that may be unstaked).
 */
export function cachedStakeCheck(
  registry: { isListed(address: string): Promise<boolean> }, ttlMs = 60_000, now: () => number = Date.now,
  domain?: { chainId: number; stakeRegistry: string },
): StakeCheck {
  const cache = new Map<string, { listed: boolean; at: number }>();
  return {
    ...(domain ? { domain } : {}),
    async isListed(address: string): Promise<boolean> {
      if (!isEvmAddress(address)) return false;
      const key = address.toLowerCase();
      const hit = cache.get(key);
      if (hit && now() - hit.at < ttlMs) return hit.listed;
      try {
        const listed = await registry.isListed(address);
        cache.set(key, { listed, at: now() });
        return listed;
      } catch {
        return hit?.listed ?? false;
      }
    },
  };
}

/** One DHT sweep of the swarm view: every live (not withdrawn) capacity record, numbered in order. */
export interface Sweep {
  number: number;
  records: readonly CapacityRecord[];
  /** When it completed (ms since the epoch). */
  at: number;
}

/** Where a discovery reads records: the process's swarm view (scheduler/swarm-view.ts). */
export interface RecordFeed {
  refresh(options?: { acceptRecent?: boolean }): Promise<Sweep>;
  subscribe(listener: (sweep: Sweep) => unknown): () => void;
}

/**
 * The hosts of one model: the spans of its fragments in the records of the swarm view's sweeps (its own
 * filters applied), updated by every sweep of the view once started.
 */
export class ModelDiscovery {
  private spans: HostedSpan[] = [];
  /** The sweep the spans come from (a late answer from an older sweep never overwrites a newer one). */
  private applied = 0;
  private unsubscribe?: () => void;

  constructor(private readonly feed: RecordFeed, readonly manifestCid: string, private readonly options: DiscoveryFilter = {}) {}

  /** The spans known now. */
  get current(): HostedSpan[] { return this.spans; }

  /** Looks the hosts up now: a fresh sweep of the swarm view (concurrent calls share one). */
  async refresh(): Promise<HostedSpan[]> {
    return this.apply(await this.feed.refresh());
  }

  /**
   * Waits until every fragment in [0, fragments) has a host or the deadline passes; returns the spans. A
   * recent sweep of the view counts as the first look (the catalog's sweep that found the model).
   */
  async waitForCoverage(fragments: number, timeoutMs = 30_000): Promise<HostedSpan[]> {
    const deadline = Date.now() + timeoutMs;
    let spans = await this.apply(await this.feed.refresh({ acceptRecent: true }));
    for (;;) {
      const covered = new Set(spans.flatMap((s) => Array.from({ length: s.end - s.start }, (_, i) => s.start + i)));
      if (covered.size >= fragments || Date.now() >= deadline) return spans;
      await new Promise((r) => setTimeout(r, 250));
      spans = await this.refresh();
    }
  }

  /** Follows every sweep of the view from now on (the view sweeps in the background while any discovery follows it). */
  start(): void {
    this.unsubscribe ??= this.feed.subscribe((sweep) => this.apply(sweep));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** The model's spans in a sweep, filtered; kept as current unless a newer sweep was applied already. */
  private async apply(sweep: Sweep): Promise<HostedSpan[]> {
    if (sweep.number === this.applied) return this.spans;
    const kept: HostedSpan[] = [];
    for (const r of sweep.records) {
      if (this.options.accept && !(await this.options.accept(r))) continue;
      if (this.options.stakeCheck && !(await isStakedRecord(this.options.stakeCheck, r))) continue;
      kept.push(...spansOf(r, this.manifestCid).filter((s) => !s.paused));
    }
    if (sweep.number > this.applied) {
      this.spans = kept;
      this.applied = sweep.number;
    }
    return kept;
  }
}
