/**
 * Which advertised prices a client accepts, and the most a request may cost at them. A supplier's price is
 * its own claim in its capacity record, so a client that routes to it blindly signs whatever it asks (issue
 * 13, attack 1). Two limits keep a price honest: an operator maximum per GFLOP, and a cap relative to the
 * model's other hosts (far above the median of its priced hosts is refused even under the maximum). The cost
 * ceiling of a request prices all its positions at the dearest host the limits still allow, so a payer can
 * refuse, before signing, a voucher that takes the request past what it may cost. Pure functions over plain
 * data: no I/O, no chain.
 */
import type { Manifest } from '../fragments/manifest.js';
import { parseBaseUnits, stepCharge } from './pricing.js';

/** What a client accepts (base units of the payment token per GFLOP). */
export interface PriceLimits {
  /** Hosts asking more per GFLOP are never routed to. */
  maxPricePerGflop: bigint;
  /** Hosts asking more than this many times the median price of the model's priced hosts are refused. */
  maxOverMedian: number;
}

/** 1000 × the devnet's price (10^12 base units = 10^-6 GRID per GFLOP): 0.001 GRID per GFLOP. */
export const DEFAULT_MAX_PRICE_PER_GFLOP = 1_000_000_000_000_000n;
/** A host asking more than 4 × the median of the model's priced hosts is refused. */
export const DEFAULT_MAX_OVER_MEDIAN = 4;
export const DEFAULT_PRICE_LIMITS: PriceLimits = { maxPricePerGflop: DEFAULT_MAX_PRICE_PER_GFLOP, maxOverMedian: DEFAULT_MAX_OVER_MEDIAN };

/** What the policy reads of a hosted span. */
export interface PricedSpan { peerId: string; start: number; end: number; pricePerGflop: string }

/** A span's price, or undefined when it is not a whole number of base units (such a host is never used). */
export function priceOf(span: Pick<PricedSpan, 'pricePerGflop'>): bigint | undefined {
  try {
    return parseBaseUnits(span.pricePerGflop);
  } catch {
    return undefined;
  }
}

/**
 * The lower median of the priced (non-zero) hosts' prices, one price per peer (its highest); 0 when no host
 * charges. The lower median so that one honest host and one rogue yield the honest price.
 */
export function medianPrice(spans: readonly PricedSpan[]): bigint {
  const byPeer = new Map<string, bigint>();
  for (const s of spans) {
    const p = priceOf(s);
    if (p === undefined || p === 0n) continue;
    const seen = byPeer.get(s.peerId);
    if (seen === undefined || p > seen) byPeer.set(s.peerId, p);
  }
  const prices = [...byPeer.values()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return prices.length ? prices[(prices.length - 1) >> 1] : 0n;
}

/** Why a span is refused under `limits` (undefined: it is admissible). `median` is medianPrice of the model's spans. */
export function refusal(span: PricedSpan, limits: PriceLimits, median: bigint): string | undefined {
  const price = priceOf(span);
  if (price === undefined) return `its price "${span.pricePerGflop}" is not a whole number of base units`;
  if (price > limits.maxPricePerGflop) return `it asks ${price} base units per GFLOP, above this client's maximum of ${limits.maxPricePerGflop}`;
  // Compared in thousandths so a fractional factor stays exact in bigint arithmetic.
  if (median > 0n && price * 1000n > median * BigInt(Math.round(limits.maxOverMedian * 1000))) {
    return `it asks ${price} base units per GFLOP, more than ${limits.maxOverMedian} × the median ${median} of the model's hosts`;
  }
  return undefined;
}

/** The spans whose prices `limits` admit, and for each fragment of `fragments` whose every host was refused, why. */
export function admissibleSpans<T extends PricedSpan>(spans: readonly T[], limits: PriceLimits, fragments?: number): { spans: T[]; refused: Map<number, string> } {
  const median = medianPrice(spans);
  const kept: T[] = [];
  const reasons = new Map<number, string>();
  for (const s of spans) {
    const why = refusal(s, limits, median);
    if (why === undefined) kept.push(s);
    else for (let j = s.start; j < s.end; j++) if (!reasons.has(j)) reasons.set(j, `supplier ${s.peerId} is refused: ${why}`);
  }
  const refused = new Map<number, string>();
  for (let j = 0; j < (fragments ?? 0); j++) {
    const why = reasons.get(j);
    if (why !== undefined && !kept.some((s) => s.start <= j && j < s.end)) refused.set(j, why);
  }
  return { spans: kept, refused };
}

/** Per fragment, the highest price among its admissible hosts (0 for a fragment none of them hosts). */
export function dearestPrices(spans: readonly PricedSpan[], fragments: number): bigint[] {
  const out: bigint[] = new Array<bigint>(fragments).fill(0n);
  for (const s of spans) {
    const p = priceOf(s) ?? 0n;
    for (let j = Math.max(0, s.start); j < Math.min(fragments, s.end); j++) if (p > out[j]) out[j] = p;
  }
  return out;
}

/** The work a request may do: positions it may fill (prompt + max new tokens) and steps it may take. */
export interface RequestWork { positions: number; steps: number }

/**
 * The most a request may cost: every fragment's share of `work` at the dearest admissible host of that
 * fragment, plus one base unit per step and fragment for each step's rounding up. Replays after a failover are
 * not included: a request whose replays do not fit ends early instead of costing more.
 */
export function costCeiling(manifest: Pick<Manifest, 'fragments' | 'costDims' | 'statefulPairs'>, prices: readonly bigint[], work: RequestWork): bigint {
  const kv = manifest.statefulPairs.length > 0;
  // With a KV cache a step is priced by positions; without one every step is a run over the whole input.
  const chunkTokens = kv ? [work.positions] : new Array<number>(Math.max(1, work.steps)).fill(1);
  let total = 0n;
  for (let j = 0; j < manifest.fragments.length; j++) {
    const price = prices[j] ?? 0n;
    if (price === 0n) continue;
    total += stepCharge(manifest, price, { start: j, end: j + 1, chunkTokens }) + BigInt(Math.max(1, work.steps));
  }
  return total;
}
