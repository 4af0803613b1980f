/**
 * Seeded randomness for the simulator: one independent stream per purpose (peers, churn, arrivals,
 * network jitter, ...), so that changing how requests are routed does not change the swarm's churn or
 * the arrival sequence: two policies compared on one seed see the same peers come and go.
 */
import { seededRandom } from '../../fragments/seeded-random.js';

export type Rng = () => number;

/** An independent stream named `name` under `seed`. */
export function rngStream(seed: number, name: string): Rng {
  let h = (seed >>> 0) ^ 0x9e3779b9;
  for (let i = 0; i < name.length; i++) {
    h = Math.imul(h ^ name.charCodeAt(i), 0x85ebca6b) >>> 0;
    h ^= h >>> 13;
  }
  h = Math.imul(h ^ (h >>> 16), 0xc2b2ae35) >>> 0;
  const r = seededRandom(h);
  r(); // decorrelate neighbouring seeds
  return r;
}

/** Exponential with the given mean (Infinity gives Infinity). */
export function exponential(r: Rng, mean: number): number {
  if (!Number.isFinite(mean)) return Number.POSITIVE_INFINITY;
  return -mean * Math.log(1 - r());
}

/** Standard normal (Box-Muller; one draw per call keeps streams simple to reason about). */
export function standardNormal(r: Rng): number {
  const u = 1 - r();
  const v = r();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Log-normal with the given median and shape σ. */
export function logNormal(r: Rng, median: number, sigma: number): number {
  return median * Math.exp(sigma * standardNormal(r));
}

/** Uniform in [a, b). */
export function uniform(r: Rng, a: number, b: number): number {
  return a + (b - a) * r();
}

/** An index drawn with probability proportional to its weight. */
export function weightedIndex(r: Rng, weights: readonly number[]): number {
  let total = 0;
  for (const w of weights) total += w;
  let x = r() * total;
  for (let i = 0; i < weights.length; i++) {
    x -= weights[i];
    if (x < 0) return i;
  }
  return weights.length - 1;
}
