/**
 * Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p. Sampling
 * draws from a counter-based generator keyed by (seed, position), so a step retried after a failover
 * draws the same number and a generation is the same on any route.
 */

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** A uniform [0, 1) number for (seed, position): splitmix64-style mixing, no state. */
export function uniformAt(seed: number, position: number): number {
  let x = (BigInt.asUintN(64, BigInt(seed)) * 0x9e3779b97f4a7c15n + BigInt(position) + 1n) & 0xffffffffffffffffn;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  x ^= x >> 31n;
  return Number(x >> 11n) / 2 ** 53;
}

/** Index of the largest value (the first on ties). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Indices of `values`, ranked: value descending, then index ascending (the order every sampler walks). */
function ranked(values: ArrayLike<number>, indices: number[]): number[] {
  return indices.sort((a, b) => values[b] - values[a] || a - b);
}

/** The `k` largest entries of a row, ranked; one pass with a small sorted buffer instead of sorting the row. */
export function topIndices(values: ArrayLike<number>, k: number): number[] {
  const top: number[] = [];
  const before = (i: number, j: number): boolean => values[i] > values[j] || (values[i] === values[j] && i < j);
  for (let i = 0; i < values.length; i++) {
    if (top.length === k && !before(i, top[k - 1])) continue;
    let at = top.length === k ? k - 1 : top.length;
    while (at > 0 && before(i, top[at - 1])) { top[at] = top[at - 1]; at--; }
    top[at] = i;
  }
  return top;
}

/**
 * The ranked row's first entries, enough that their weights add up to more than `mass`: found with a threshold
 * on the weights (entries left out weigh less, so their values are lower) instead of ranking the whole row.
 */
function rankedHead(values: ArrayLike<number>, weights: Float64Array, mass: number): number[] {
  for (const floor of [1e-2, 1e-4, 1e-8]) {
    const picked: number[] = [];
    let sum = 0;
    for (let i = 0; i < weights.length; i++) if (weights[i] >= floor) { picked.push(i); sum += weights[i]; }
    if (sum > mass) return ranked(values, picked);
  }
  return ranked(values, Array.from({ length: values.length }, (_, i) => i));
}

/**
 * Picks the next token from one row of logits. With top-k, from its k largest entries (as sampleFromRanked);
 * with top-p, from the ranked head holding that share of the mass; with temperature alone, by walking the
 * whole row in index order (the same distribution, without ranking 50k entries per token).
 */
export function sampleToken(logits: ArrayLike<number>, position: number, options: SamplingOptions = {}): number {
  const temperature = options.temperature ?? 0;
  if (!(temperature > 0)) return argmax(logits);
  if (options.topK && options.topK > 0) {
    const ids = topIndices(logits, Math.min(options.topK, logits.length));
    return sampleFromRanked(ids.map((i) => logits[i]), ids, position, options);
  }
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const weights = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += weights[i] = Math.exp((logits[i] - max) / temperature);
  const u = uniformAt(options.seed ?? 0, position);
  const topP = options.topP !== undefined && options.topP > 0 && options.topP < 1 ? options.topP : undefined;
  if (topP === undefined) {
    let r = u * total;
    for (let i = 0; i < weights.length; i++) if ((r -= weights[i]) < 0) return i;
    return weights.length - 1;
  }
  const head = rankedHead(logits, weights, topP * total);
  let cumulative = 0;
  let keep = 0;
  while (keep < head.length && cumulative < topP * total) cumulative += weights[head[keep++]];
  keep = Math.max(1, keep);
  let mass = 0;
  for (let n = 0; n < keep; n++) mass += weights[head[n]];
  let r = u * mass;
  for (let n = 0; n < keep; n++) if ((r -= weights[head[n]]) < 0) return head[n];
  return head[keep - 1];
}

const MAX_RANKED_ENTRIES = 256;

/**
 * How many of a row's largest entries are enough to choose the next token exactly as sampleToken would
 * from the whole row: 1 for greedy, top-k when sampling with top-k alone; undefined (the whole row) when
 * top-p needs the full distribution's mass.
 */
export function entriesNeeded(options: SamplingOptions): number | undefined {
  if (!((options.temperature ?? 0) > 0)) return 1;
  // Past a few hundred entries the whole row is as cheap to send as a ranked list is to build.
  if (options.topK && options.topK > 0 && options.topK <= MAX_RANKED_ENTRIES && !(options.topP !== undefined && options.topP > 0 && options.topP < 1)) return options.topK;
  return undefined;
}

/**
 * Picks the next token from a row's largest entries, ranked (value descending, then index ascending), with
 * their token ids: the same choice sampleToken makes from the whole row when `entriesNeeded` of them are given.
 */
export function sampleFromRanked(values: ArrayLike<number>, ids: ArrayLike<number>, position: number, options: SamplingOptions = {}): number {
  const temperature = options.temperature ?? 0;
  if (!(temperature > 0)) return ids[0];
  let candidates = Array.from(ids);
  if (options.topK && options.topK > 0) candidates = candidates.slice(0, options.topK);
  const max = values[0];
  let probs = candidates.map((_, n) => Math.exp((values[n] - max) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  if (options.topP !== undefined && options.topP > 0 && options.topP < 1) {
    let cumulative = 0;
    let keep = 0;
    while (keep < probs.length && cumulative < options.topP * total) cumulative += probs[keep++];
    candidates = candidates.slice(0, Math.max(1, keep));
    probs = probs.slice(0, Math.max(1, keep));
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = uniformAt(options.seed ?? 0, position) * total;
  for (let n = 0; n < candidates.length; n++) {
    r -= probs[n];
    if (r < 0) return candidates[n];
  }
  return candidates[candidates.length - 1];
}
