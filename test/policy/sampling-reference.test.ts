/**
 * Sampling checked against references that do not call the code under test (issue 21: the sampling test's
 * reference sampler called `uniformAt` itself, and top-p in `sampleFromRanked` never ran): `uniformAt` against
 * pinned values and its own definition (splitmix64's finaliser over seed × golden ratio + position + 1,
 * written out here), its spread over many positions, and both samplers against an inverse-CDF reference
 * over explicit softmax weights, with top-k and top-p.
 */
import { describe, expect, it } from 'vitest';
import { argmax, sampleFromRanked, sampleToken, topIndices, uniformAt } from '../../policy/sampling.js';

const MASK = (1n << 64n) - 1n;

/** uniformAt's definition, written out: a 53-bit uniform in [0, 1). */
function referenceUniform(seed: number, position: number): number {
  let x = (BigInt.asUintN(64, BigInt(seed)) * 0x9e3779b97f4a7c15n + BigInt(position) + 1n) & MASK;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK;
  x ^= x >> 31n;
  return Number(x >> 11n) / 2 ** 53;
}

/** The token an inverse CDF picks for `u` over `ids` in order with weights exp((v − max) / T). */
function inverseCdf(values: number[], ids: number[], temperature: number, u: number): number {
  const max = Math.max(...values);
  const w = values.map((v) => Math.exp((v - max) / temperature));
  let r = u * w.reduce((a, b) => a + b, 0);
  for (let n = 0; n < ids.length; n++) if ((r -= w[n]) < 0) return ids[n];
  return ids[ids.length - 1];
}

/** The smallest ranked prefix whose weight reaches `topP` of the total (at least one). */
function nucleus(values: number[], temperature: number, topP: number): number {
  const max = Math.max(...values);
  const w = values.map((v) => Math.exp((v - max) / temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let sum = 0;
  let keep = 0;
  while (keep < w.length && sum < topP * total) sum += w[keep++];
  return Math.max(1, keep);
}

describe('uniformAt', () => {
  it('gives the pinned values, equal to its definition', () => {
    const pinned: [number, number, number][] = [
      [0, 0, 0.3381666012719897], [0, 1, 0.8586764687735633], [1, 0, 0.5665615751722809],
      [21, 7, 0.8453579900468766], [-1, 3, 0.8878265330493276], [2 ** 40, 1000, 0.7102234766188181],
    ];
    for (const [seed, position, value] of pinned) {
      expect(uniformAt(seed, position), `(${seed}, ${position})`).toBe(value);
      expect(referenceUniform(seed, position)).toBe(value);
    }
    for (let p = 0; p < 200; p++) expect(uniformAt(7, p)).toBe(referenceUniform(7, p));
  });

  it('spreads over [0, 1): mean, quartiles and no repeats over 20,000 positions', () => {
    const n = 20_000;
    const xs = Array.from({ length: n }, (_, p) => uniformAt(5, p));
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
    const mean = xs.reduce((a, b) => a + b, 0) / n;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const quarter = xs.filter((x) => x < 0.25).length / n;
    expect(Math.abs(quarter - 0.25)).toBeLessThan(0.015);
    expect(new Set(xs).size).toBe(n);
    expect(uniformAt(5, 0)).not.toBe(uniformAt(6, 0));
  });
});

describe('samplers against an inverse-CDF reference', () => {
  const row = [0.5, 2.0, -1.0, 1.5, 0.0, 2.0, -3.0, 1.0];

  it('sampleToken: greedy is argmax (first on ties); temperature alone walks the row in index order', () => {
    expect(sampleToken(row, 0)).toBe(1);
    expect(argmax(row)).toBe(1);
    expect(sampleToken(row, 3, { temperature: 0 })).toBe(1);
    const ids = row.map((_, i) => i);
    for (let p = 0; p < 300; p++) {
      expect(sampleToken(row, p, { temperature: 0.7, seed: 3 }), `position ${p}`).toBe(inverseCdf(row, ids, 0.7, referenceUniform(3, p)));
    }
  });

  it('top-k: both samplers draw from the k largest, ranked (value, then index)', () => {
    const top = topIndices(row, 3);
    expect(top).toEqual([1, 5, 3]);
    for (let p = 0; p < 300; p++) {
      const want = inverseCdf(top.map((i) => row[i]), top, 1.3, referenceUniform(9, p));
      expect(sampleToken(row, p, { temperature: 1.3, topK: 3, seed: 9 })).toBe(want);
      expect(sampleFromRanked(top.map((i) => row[i]), top, p, { temperature: 1.3, topK: 3, seed: 9 })).toBe(want);
    }
  });

  it('top-p in sampleFromRanked and sampleToken: only the nucleus is drawn from, in proportion', () => {
    const ranked = topIndices(row, row.length);
    const values = ranked.map((i) => row[i]);
    for (const topP of [0.3, 0.6, 0.9]) {
      const keep = nucleus(values, 1, topP);
      expect(keep).toBeLessThan(row.length);
      const allowed = ranked.slice(0, keep);
      const seen = new Set<number>();
      for (let p = 0; p < 400; p++) {
        const want = inverseCdf(values.slice(0, keep), allowed, 1, referenceUniform(11, p));
        const got = sampleFromRanked(values, ranked, p, { temperature: 1, topP, seed: 11 });
        expect(got, `top_p ${topP}, position ${p}`).toBe(want);
        expect(sampleToken(row, p, { temperature: 1, topP, seed: 11 })).toBe(want);
        seen.add(got);
      }
      expect([...seen].sort()).toEqual([...allowed].sort());
    }
    // top_p at 0 or 1 is no cut
    for (let p = 0; p < 50; p++) {
      const whole = inverseCdf(values, ranked, 1, referenceUniform(11, p));
      expect(sampleFromRanked(values, ranked, p, { temperature: 1, topP: 1, seed: 11 })).toBe(whole);
      expect(sampleFromRanked(values, ranked, p, { temperature: 1, topP: 0, seed: 11 })).toBe(whole);
    }
  });

  it('greedy sampleFromRanked is the first id; a one-entry nucleus is always that entry', () => {
    expect(sampleFromRanked([3, 2], [42, 7], 0)).toBe(42);
    for (let p = 0; p < 50; p++) expect(sampleFromRanked([9, 0, 0], [5, 6, 7], p, { temperature: 1, topP: 0.5, seed: 1 })).toBe(5);
  });
});
