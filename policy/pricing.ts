/**
 * The price of a step, computed identically by the supplier (what it charges) and the payer (what it
 * signs for): both call `stepCharge` with the same manifest, span and chunk sizes, in bigint arithmetic,
 * so they agree to the base unit.
 *
 *   charge = ceil(pricePerGflop × spanFlops × units / (divisor × 1e9))
 *
 * spanFlops is the sum of the span's fragments' `flops` (each costed by the manifest at its costDims,
 * rounded up to an integer). For a model with a KV cache (the manifest lists stateful pairs) `units` is the
 * number of new positions the step runs, replayed chunks included, and `divisor` the largest non-batch
 * costDim (so spanFlops / divisor is the per-token cost, as scheduler/session.ts fragmentCosts has it). For a
 * model without a KV cache every chunk is one run at costDims: `units` = runs, `divisor` = 1.
 */
import { positionsAtCostDims, type Manifest } from '../fragments/manifest.js';

/** What a step on a span is priced from. */
export interface StepWork {
  /** First fragment of the span (inclusive). */
  start: number;
  /** Past the span's last fragment. */
  end: number;
  /** New positions per chunk: replay chunks in order, then the step's own inputs. */
  chunkTokens: readonly number[];
}

const GIGA = 1_000_000_000n;

/** The manifest's per-token divisor: the largest non-batch costDim (1 when none). */
export function tokensAtCostDims(manifest: Pick<Manifest, 'costDims'>): bigint {
  return BigInt(Math.max(1, Math.ceil(positionsAtCostDims(manifest))));
}

/** Whether the model keeps a KV cache (priced per position) or not (priced per run). */
export function pricedPerToken(manifest: Pick<Manifest, 'statefulPairs'>): boolean {
  return manifest.statefulPairs.length > 0;
}

/** The FLOPs of fragments [start, end) at costDims, as an integer. */
export function spanFlops(manifest: Pick<Manifest, 'fragments'>, start: number, end: number): bigint {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end > start && end <= manifest.fragments.length)) {
    throw new RangeError(`span [${start}, ${end}) is not within the model's ${manifest.fragments.length} fragments`);
  }
  let total = 0n;
  for (let j = start; j < end; j++) total += BigInt(Math.ceil(Math.max(0, manifest.fragments[j].flops)));
  return total;
}

/** The charge of one step, in token base units (rounded up). */
export function stepCharge(manifest: Pick<Manifest, 'fragments' | 'costDims' | 'statefulPairs'>, pricePerGflop: bigint, work: StepWork): bigint {
  if (pricePerGflop < 0n) throw new RangeError('pricePerGflop must not be negative');
  if (pricePerGflop === 0n) return 0n;
  for (const t of work.chunkTokens) if (!Number.isSafeInteger(t) || t < 0) throw new RangeError(`chunk tokens must be non-negative integers, got ${t}`);
  const perToken = pricedPerToken(manifest);
  const units = perToken ? work.chunkTokens.reduce((a, t) => a + BigInt(t), 0n) : BigInt(work.chunkTokens.length);
  const divisor = (perToken ? tokensAtCostDims(manifest) : 1n) * GIGA;
  const numerator = pricePerGflop * spanFlops(manifest, work.start, work.end) * units;
  return (numerator + divisor - 1n) / divisor;
}

/** A price as given on the wire or in a record ("" means free); RangeError when not a whole number. */
export function parseBaseUnits(value: string | undefined, what = 'amount'): bigint {
  if (value === undefined || value === '') return 0n;
  if (!/^\d+$/.test(value)) throw new RangeError(`${what} must be a whole number of token base units, got "${value}"`);
  return BigInt(value);
}
