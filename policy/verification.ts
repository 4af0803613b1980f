/**
 * The verification rules (issue 21), pure so the gateway's verifier, the supplier's commitments, the bench
 * and the docs share one implementation:
 * - `outputDigest`: a compact, tolerance-aware digest of a step's outputs (after TOPLOC, arXiv 2501.16007):
 *   per position (every row along the last axis) the k entries of largest magnitude, as indices and values;
 *   integer outputs (sampled tokens, top-k indices) are kept whole. 64 bytes per position at k = 8, whatever
 *   the hidden size.
 * - `compareDigests`: whether two digests of the same step agree within what differs between honest
 *   execution providers (kernel order, fused ops), but not within a cheat's error (1 % noise, a skipped
 *   layer, int8 weights, another fragment's outputs).
 * - `majorityVerdict`: who is in the minority once a third host has answered.
 * - `detectionProbability`, `expectedChecksToDetect`, `minimumDeterrentStake`: the economics of
 *   docs/verification.md.
 */

/** What the digest reads of a tensor: ort.Tensor fits (type 'float32', 'int64', ...). */
export interface DigestableTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
}

/** One tensor's digest. */
export interface TensorDigest {
  name: string;
  /** 'top': per row the k largest-magnitude entries; 'exact': the integer values themselves. */
  kind: 'top' | 'exact';
  rows: number;
  /** Entries per row (top: min(k, row length); exact: row length). */
  k: number;
  /** rows × k: the entries' indices within their row (top) or the values (exact, as numbers). */
  indices: Int32Array | Float64Array;
  /** rows × k values of the entries (top only). */
  values: Float32Array;
}

/** A step's digest: one per output tensor, sorted by name. */
export type StepDigest = TensorDigest[];

/** Share of (session, supplier) links the gateway re-runs by default: about 4 % of the grid's compute. */
export const DEFAULT_VERIFY_RATE = 0.04;

/** Entries kept per position (TOPLOC keeps 128 of a hidden state of 4096+; our hidden sizes are 64–1024). */
export const DEFAULT_DIGEST_K = 8;

/** Digest of a step's outputs (tensors of other dtypes than float/int are skipped). */
export function outputDigest(outputs: Readonly<Record<string, DigestableTensor>>, k = DEFAULT_DIGEST_K): StepDigest {
  const names = Object.keys(outputs).sort();
  const out: StepDigest = [];
  for (const name of names) {
    const t = outputs[name];
    const cols = t.dims.length ? t.dims[t.dims.length - 1] : 1;
    const data = t.data as ArrayLike<number | bigint>;
    const rows = cols > 0 ? Math.floor(data.length / cols) : 0;
    if (t.type === 'float32' || t.type === 'float64' || t.type === 'float16') {
      out.push(topDigest(name, data as ArrayLike<number>, rows, cols, k));
    } else if (/int|bool/.test(t.type)) {
      const values = new Float64Array(data.length);
      for (let i = 0; i < data.length; i++) values[i] = Number(data[i]);
      out.push({ name, kind: 'exact', rows, k: cols, indices: values, values: new Float32Array(0) });
    }
  }
  return out;
}

function topDigest(name: string, data: ArrayLike<number>, rows: number, cols: number, k: number): TensorDigest {
  const kk = Math.min(k, cols);
  const indices = new Int32Array(rows * kk);
  const values = new Float32Array(rows * kk);
  const best = new Int32Array(kk);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let n = 0;
    for (let c = 0; c < cols; c++) {
      const m = Math.abs(data[base + c]);
      if (n < kk) {
        let p = n++;
        while (p > 0 && Math.abs(data[base + best[p - 1]]) < m) { best[p] = best[p - 1]; p--; }
        best[p] = c;
      } else if (m > Math.abs(data[base + best[kk - 1]])) {
        let p = kk - 1;
        while (p > 0 && Math.abs(data[base + best[p - 1]]) < m) { best[p] = best[p - 1]; p--; }
        best[p] = c;
      }
    }
    for (let i = 0; i < kk; i++) { indices[r * kk + i] = best[i]; values[r * kk + i] = data[base + best[i]]; }
  }
  return { name, kind: 'top', rows, k: kk, indices, values };
}

/** How far two digests may differ and still count as the same computation. */
export interface DigestTolerance {
  /**
   * Largest mean relative error over the entries both digests kept: mean |a − b| / (the row's largest
   * magnitude). Honest CPU runs differ by about 1e-7, fp16/TF32 GPU kernels by up to about 1e-3; 1 % noise
   * on activations gives about 3e-3 and int8 weights more.
   */
  meanRelError: number;
  /** Largest relative error of any one entry (catches a cheat confined to a few positions). */
  maxRelError: number;
  /** Smallest mean share of a row's top-k indices the two digests have in common. */
  minOverlap: number;
}

export const DEFAULT_DIGEST_TOLERANCE: DigestTolerance = { meanRelError: 1e-3, maxRelError: 0.05, minOverlap: 0.75 };

/** Why two digests differ (undefined from compareDigests when they agree). */
export interface DigestMismatch {
  reason: 'outputs' | 'shape' | 'exact' | 'overlap' | 'mean-error' | 'max-error';
  tensor?: string;
  /** The measured figure that broke the tolerance. */
  measured?: number;
}

/** Measured agreement of two digests, the inputs of the verdict. */
export interface DigestDistance {
  meanRelError: number;
  maxRelError: number;
  overlap: number;
  /** Entries both digests kept. */
  common: number;
}

/** Compares two digests of the same step: undefined when they agree within `tolerance`, else why not. */
export function compareDigests(a: StepDigest, b: StepDigest, tolerance: DigestTolerance = DEFAULT_DIGEST_TOLERANCE): DigestMismatch | undefined {
  if (a.length !== b.length || a.some((t, i) => t.name !== b[i].name)) return { reason: 'outputs' };
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x.kind !== y.kind || x.rows !== y.rows || x.k !== y.k) return { reason: 'shape', tensor: x.name };
    if (x.kind === 'exact') {
      for (let j = 0; j < x.indices.length; j++) if (x.indices[j] !== y.indices[j]) return { reason: 'exact', tensor: x.name };
      continue;
    }
    const d = tensorDistance(x, y);
    if (d.overlap < tolerance.minOverlap) return { reason: 'overlap', tensor: x.name, measured: d.overlap };
    if (d.meanRelError > tolerance.meanRelError) return { reason: 'mean-error', tensor: x.name, measured: d.meanRelError };
    if (d.maxRelError > tolerance.maxRelError) return { reason: 'max-error', tensor: x.name, measured: d.maxRelError };
  }
  return undefined;
}

/** The distance of two top-k digests of one tensor (same rows and k). */
export function tensorDistance(x: TensorDigest, y: TensorDigest): DigestDistance {
  let common = 0;
  let sum = 0;
  let max = 0;
  const k = x.k;
  for (let r = 0; r < x.rows; r++) {
    const base = r * k;
    const scale = Math.max(Math.abs(x.values[base]), Math.abs(y.values[base]), Number.MIN_VALUE);
    for (let i = 0; i < k; i++) {
      const idx = x.indices[base + i];
      for (let j = 0; j < k; j++) {
        if (y.indices[base + j] !== idx) continue;
        const rel = Math.abs(x.values[base + i] - y.values[base + j]) / scale;
        sum += rel;
        if (rel > max) max = rel;
        common++;
        break;
      }
    }
  }
  const total = x.rows * k;
  return { meanRelError: common ? sum / common : 0, maxRelError: max, overlap: total ? common / total : 1, common };
}

/**
 * Compares the digests of a run of consecutive steps (a session's chunks on one span). Exact outputs, shapes,
 * index overlap and the largest error are checked per step; the mean error is pooled over every step's
 * entries, so a one-position decode step (8 entries, a noisy mean) is judged together with the rest of its
 * session. Undefined when the runs agree, else the first step at fault (for the mean: the worst step).
 */
export function firstMismatch(a: readonly StepDigest[], b: readonly StepDigest[], tolerance: DigestTolerance = DEFAULT_DIGEST_TOLERANCE): { step: number; mismatch: DigestMismatch } | undefined {
  if (a.length !== b.length) return { step: Math.min(a.length, b.length), mismatch: { reason: 'outputs' } };
  let sum = 0;
  let common = 0;
  let worst = { step: 0, mean: -1, tensor: '' };
  for (let s = 0; s < a.length; s++) {
    const m = compareDigests(a[s], b[s], { ...tolerance, meanRelError: Number.POSITIVE_INFINITY });
    if (m) return { step: s, mismatch: m };
    for (let i = 0; i < a[s].length; i++) {
      if (a[s][i].kind !== 'top') continue;
      const d = tensorDistance(a[s][i], b[s][i]);
      sum += d.meanRelError * d.common;
      common += d.common;
      if (d.meanRelError > worst.mean) worst = { step: s, mean: d.meanRelError, tensor: a[s][i].name };
    }
  }
  const mean = common ? sum / common : 0;
  if (mean > tolerance.meanRelError) return { step: worst.step, mismatch: { reason: 'mean-error', tensor: worst.tensor, measured: mean } };
  return undefined;
}

/**
 * After a mismatch between the checked supplier and a checker, a third host's run decides: the party the
 * referee disagrees with is the minority (the checked supplier when the referee sides with the checker, and
 * the checker when it sides with the supplier); when the referee agrees with neither, nobody is condemned.
 */
export function majorityVerdict(refereeAgreesWithSupplier: boolean, refereeAgreesWithChecker: boolean): 'supplier' | 'checker' | 'undecided' {
  if (refereeAgreesWithChecker && !refereeAgreesWithSupplier) return 'supplier';
  if (refereeAgreesWithSupplier && !refereeAgreesWithChecker) return 'checker';
  return 'undecided';
}

/**
 * Probability that a request is caught: each of its `steps` served by the supplier is checked with
 * probability `checkRate` and was cheated with probability `cheatRate`, independently:
 * 1 − (1 − checkRate · cheatRate)^steps.
 */
export function detectionProbability(checkRate: number, cheatRate: number, steps = 1): number {
  return 1 - (1 - clamp01(checkRate) * clamp01(cheatRate)) ** steps;
}

/** Expected checked steps until a supplier that cheats on a share `cheatRate` of its steps is caught: 1 / cheatRate. */
export function expectedChecksToDetect(cheatRate: number): number {
  return 1 / clamp01(cheatRate);
}

/**
 * Checked steps within which a cheater is caught with probability `confidence`:
 * ceil(ln(1 − confidence) / ln(1 − cheatRate)) (1 when it cheats on every step).
 */
export function checksToDetect(cheatRate: number, confidence = 0.99): number {
  const q = clamp01(cheatRate);
  if (q >= 1) return 1;
  return Math.ceil(Math.log(1 - confidence) / Math.log(1 - q));
}

/**
 * The smallest slash that makes cheating lose money in expectation. A cheater saves `gainPerStep` on each
 * cheated step; each cheated step is checked with probability `checkRate`, and a check that catches it costs
 * the slash S, so per cheated step the expected gain is gainPerStep − checkRate · S · (1 − escape), where
 * `escape` is the chance a caught cheat is not proven on chain (default 0). Cheating loses when
 * S > gainPerStep / (checkRate · (1 − escape)).
 */
export function minimumDeterrentStake(gainPerStep: bigint, checkRate: number, escape = 0): bigint {
  const p = clamp01(checkRate) * (1 - clamp01(escape));
  if (p <= 0) throw new RangeError('with no checks no stake deters cheating');
  // In integers, p as a ratio of 1e9: the smallest S with S · p > gain.
  const scale = 1_000_000_000n;
  const pScaled = BigInt(Math.max(1, Math.round(p * 1e9)));
  return (gainPerStep * scale) / pScaled + 1n;
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}
