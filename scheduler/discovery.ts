/**
 * Discovery: for one model (its manifest CID), the suppliers that host its fragments, from their
 * signed capacity records in the DHT, refreshed in the background and on demand (after a failure).
 *
 * Stake: a record's staking address is only what its stake binding proves (net/capacity/record.ts
 * blanks an unbound one), so routing, payment (the payee) and disputes never use an address a peer
 * merely named. With a stake check, a supplier counts only when its binding is for the check's
 * StakeRegistry and chain and that address is listed there (`isStakedRecord`).
 */
import type { GridHost } from '../net/host.js';
import { findAllRecords } from '../net/capacity/dht.js';
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
}

/** Splits a record's served fragments of one manifest into contiguous spans. */
export function spansOf(record: CapacityRecord, manifestCid: string): HostedSpan[] {
  // Fragments still being downloaded (announced early so others count them) are not served yet.
  const indices = [...new Set(record.fragments.filter((f) => f.manifestCid === manifestCid && !isJoining(f)).map((f) => f.index))].sort((a, b) => a - b);
  const spans: HostedSpan[] = [];
  for (let i = 0; i < indices.length;) {
    let j = i;
    while (j + 1 < indices.length && indices[j + 1] === indices[j] + 1) j++;
    spans.push({
      peerId: record.peerId, addrs: record.addrs, start: indices[i], end: indices[j] + 1,
      gflops: record.benchmark?.matmulGflops ?? 10, pricePerGflop: record.pricePerGflop, stakingAddress: record.stakingAddress,
      paused: record.limits?.paused ?? false,
    });
    i = j + 1;
  }
  return spans;
}

export interface DiscoveryOptions {
  /** Background refresh period (default 30 s). */
  refreshMs?: number;
  /** Timeout of one DHT sweep (default 10 s). */
  lookupTimeoutMs?: number;
  /** Keep only suppliers this returns true for. */
  accept?: (record: CapacityRecord) => boolean | Promise<boolean>;
  /** When a chain is configured: keep only suppliers whose staking address is listed (staked) there. */
  stakeCheck?: StakeCheck;
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

export class ModelDiscovery {
  private spans: HostedSpan[] = [];
  private timer?: ReturnType<typeof setInterval>;
  private inflight?: Promise<HostedSpan[]>;

  constructor(private readonly host: GridHost, readonly manifestCid: string, private readonly options: DiscoveryOptions = {}) {}

  /** The spans known now. */
  get current(): HostedSpan[] { return this.spans; }

  /** Looks the hosts up now (concurrent calls share one lookup). */
  refresh(): Promise<HostedSpan[]> {
    this.inflight ??= (async () => {
      try {
        const records = await findAllRecords(this.host, { timeoutMs: this.options.lookupTimeoutMs ?? 10_000 });
        const kept: HostedSpan[] = [];
        for (const r of records) {
          if (r.withdrawn) continue;
          if (this.options.accept && !(await this.options.accept(r))) continue;
          if (this.options.stakeCheck && !(await isStakedRecord(this.options.stakeCheck, r))) continue;
          kept.push(...spansOf(r, this.manifestCid).filter((s) => !s.paused));
        }
        this.spans = kept;
        return kept;
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  /** Waits until every fragment in [0, fragments) has a host or the deadline passes; returns the spans. */
  async waitForCoverage(fragments: number, timeoutMs = 30_000): Promise<HostedSpan[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const spans = await this.refresh();
      const covered = new Set(spans.flatMap((s) => Array.from({ length: s.end - s.start }, (_, i) => s.start + i)));
      if (covered.size >= fragments || Date.now() >= deadline) return spans;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Refreshes in the background every `refreshMs`. */
  start(): void {
    this.timer ??= setInterval(() => { void this.refresh().catch(() => undefined); }, this.options.refreshMs ?? 30_000);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
