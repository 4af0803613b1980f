/**
 * What a request cost, in the payment token's base units. A hop paid with a voucher reports its `charge`,
 * which is used as is; a hop on a free supplier (no staking address, so no voucher) is metered at the
 * supplier's advertised `pricePerGflop` with the very function suppliers charge with (node/payments/pricing),
 * so key budgets count the same way whether or not payments are on.
 */
import type { Manifest } from '../fragments/manifest.js';
import type { HostedSpan } from '../scheduler/discovery.js';
import type { HopTiming } from '../scheduler/session.js';
import { parseBaseUnits, stepCharge } from '../node/payments/pricing.js';

/** A hop as the session reports it (`charge` set when it was paid). */
export type PricedHop = HopTiming;

/** Prices hops of one model from its manifest and the hosts' advertised prices. */
export class HopPricer {
  constructor(private readonly manifest: Manifest, private readonly spans: () => HostedSpan[]) {}

  /** The cost of one hop of a step that fed `tokens` new positions (each replayed step counted alike). */
  hopCost(hop: PricedHop, tokens: number): bigint {
    if (typeof hop.charge === 'bigint') return hop.charge;
    const span = this.spans().find((s) => s.peerId === hop.peerId && s.start <= hop.start && hop.end <= s.end);
    let price: bigint;
    try {
      price = parseBaseUnits(span?.pricePerGflop);
    } catch {
      return 0n;
    }
    return stepCharge(this.manifest, price, { start: hop.start, end: hop.end, chunkTokens: Array<number>(1 + hop.replayed).fill(tokens) });
  }
}
