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

/** Picks the next token from one row of logits. */
export function sampleToken(logits: ArrayLike<number>, position: number, options: SamplingOptions = {}): number {
  const temperature = options.temperature ?? 0;
  if (!(temperature > 0)) return argmax(logits);
  let candidates = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  if (options.topK && options.topK > 0) candidates = candidates.slice(0, options.topK);
  return sampleFromRanked(candidates.map((i) => logits[i]), candidates, position, options);
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
