/**
 * Discovery: for one model (its manifest CID), the suppliers that host its fragments, from their
 * signed capacity records in the DHT, refreshed in the background and on demand (after a failure).
 */
import type { GridHost } from '../node/host.js';
import { findAllRecords } from '../node/capacity/dht.js';
import type { CapacityRecord } from '../node/capacity/record.js';
import { isJoining } from '../node/placement/swarm.js';

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
  /** Keep only suppliers this returns true for (e.g. staked ones). */
  accept?: (record: CapacityRecord) => boolean | Promise<boolean>;
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
