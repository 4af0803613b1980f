/**
 * Sampling (policy/sampling.ts) at its edges, written so that a changed line is seen (issue 21, mutation
 * testing): `entriesNeeded` for every option shape, top-k and top-p bounds (0, negative, 1, past 1), a nucleus
 * that ends exactly on the mass, ties ranked by index, distributions whose nucleus is made of many small weights
 * (each threshold of the ranked head, and the fallback to the whole row), overflowing weights and NaN logits.
 * The reference here ranks the whole row and walks an inverse CDF; it never calls the code under test except
 * `uniformAt`, which test/policy/sampling-reference.test.ts pins against its definition.
 */
import { describe, expect, it } from 'vitest';
import { entriesNeeded, sampleFromRanked, sampleToken, uniformAt } from '../../policy/sampling.js';

/** The reference: softmax weights over the whole row, ranked (value desc, index asc) when top-k/top-p apply. */
function reference(logits: number[], position: number, o: { temperature: number; topK?: number; topP?: number; seed?: number }): number {
  const u = uniformAt(o.seed ?? 0, position);
  const max = Math.max(...logits);
  const w = logits.map((l) => Math.exp((l - max) / o.temperature));
  let order = logits.map((_, i) => i);
  const ranked = (o.topK !== undefined && o.topK > 0) || (o.topP !== undefined && o.topP > 0 && o.topP < 1);
  if (ranked) order = order.sort((a, b) => (logits[b] - logits[a]) || (a - b));
  if (o.topK !== undefined && o.topK > 0) order = order.slice(0, o.topK);
  if (o.topP !== undefined && o.topP > 0 && o.topP < 1) {
    const total = order.reduce((s, i) => s + w[i], 0);
    let sum = 0;
    let keep = 0;
    while (keep < order.length && sum < o.topP * total) sum += w[order[keep++]];
    order = order.slice(0, Math.max(1, keep));
  }
  let r = u * order.reduce((s, i) => s + w[i], 0);
  for (const i of order) if ((r -= w[i]) < 0) return i;
  return order[order.length - 1];
}

/** Tokens drawn at positions 0..n-1. */
const draws = (n: number, pick: (position: number) => number): number[] => Array.from({ length: n }, (_, p) => pick(p));

describe('entriesNeeded', () => {
  it('1 when greedy; top-k alone up to 256; the whole row otherwise', () => {
    for (const o of [{}, { temperature: 0 }, { temperature: -1 }, { temperature: Number.NaN }, { topK: 5 }]) expect(entriesNeeded(o)).toBe(1);
    const t = { temperature: 0.7 };
    expect(entriesNeeded({ ...t, topK: 5 })).toBe(5);
    expect(entriesNeeded({ ...t, topK: 256 })).toBe(256);
    expect(entriesNeeded({ ...t, topK: 257 })).toBeUndefined();
    expect(entriesNeeded({ ...t, topK: 0 })).toBeUndefined();
    expect(entriesNeeded({ ...t, topK: -3 })).toBeUndefined();
    expect(entriesNeeded(t)).toBeUndefined();
    expect(entriesNeeded({ ...t, topK: 5, topP: 0.9 })).toBeUndefined();
    for (const topP of [1, 0, -1, 1.5]) expect(entriesNeeded({ ...t, topK: 5, topP }), `topP ${topP}`).toBe(5);
  });
});

describe('sampleFromRanked', () => {
  const flat = [0, 0, 0, 0];
  const ids = [10, 11, 12, 13];
  it('top-k cuts the candidates; 0 or a negative top-k does not', () => {
    expect(new Set(draws(40, (p) => sampleFromRanked(flat, ids, p, { temperature: 1, topK: 1 })))).toEqual(new Set([10]));
    expect(new Set(draws(60, (p) => sampleFromRanked(flat, ids, p, { temperature: 1, topK: 2 })))).toEqual(new Set([10, 11]));
    for (const topK of [0, -2]) expect(new Set(draws(80, (p) => sampleFromRanked(flat, ids, p, { temperature: 1, topK })))).toEqual(new Set(ids));
  });

  it('top-p: a nucleus that reaches the mass exactly stops there; 0, 1 and past 1 mean no nucleus', () => {
    // four equal weights, top-p 0.5: the first two reach half the mass exactly
    expect(new Set(draws(60, (p) => sampleFromRanked(flat, ids, p, { temperature: 1, topP: 0.5 })))).toEqual(new Set([10, 11]));
    for (const topP of [0, 1, 1.5, -1]) expect(new Set(draws(80, (p) => sampleFromRanked(flat, ids, p, { temperature: 1, topP }))), `topP ${topP}`).toEqual(new Set(ids));
  });

  it('gives the last candidate when the weights are not numbers', () => {
    expect(sampleFromRanked([Number.NaN, 0], [7, 8], 3, { temperature: 1 })).toBe(8);
  });
});

describe('sampleToken against the whole-row reference', () => {
  it('top-k: only the k largest; 0 or a negative k walks the row in index order like no top-k', () => {
    const logits = [0.5, 2, -1, 1.5, 2, 0];
    for (let p = 0; p < 60; p++) {
      expect(sampleToken(logits, p, { temperature: 1, topK: 2 })).toBe(reference(logits, p, { temperature: 1, topK: 2 }));
      for (const topK of [0, -1, undefined]) expect(sampleToken(logits, p, { temperature: 1, topK }), `topK ${topK}`).toBe(reference(logits, p, { temperature: 1 }));
    }
    expect(new Set(draws(60, (p) => sampleToken(logits, p, { temperature: 1, topK: 2 })))).toEqual(new Set([1, 4]));
  });

  it('top-p: exact mass, ties ranked by index, and 0, 1 or past 1 as no top-p', () => {
    const flat = [0, 0, 0, 0, 0, 0];
    expect(new Set(draws(80, (p) => sampleToken(flat, p, { temperature: 1, topP: 0.5 })))).toEqual(new Set([0, 1, 2]));
    const logits = [1, 3, 3, 0, 3, 2];
    for (let p = 0; p < 60; p++) {
      expect(sampleToken(logits, p, { temperature: 0.8, topP: 0.6 })).toBe(reference(logits, p, { temperature: 0.8, topP: 0.6 }));
      for (const topP of [0, 1, 1.5, -0.5]) expect(sampleToken(logits, p, { temperature: 0.8, topP }), `topP ${topP}`).toBe(reference(logits, p, { temperature: 0.8 }));
    }
  });

  it('a nucleus of many small weights, at each threshold of the ranked head and past the last', () => {
    // one token of weight 1 and many of weight w: top-p needs most of them (w between the head's thresholds, and below the last)
    for (const [w, n, topP] of [[5e-3, 2000, 0.5], [5e-5, 60_000, 0.5], [5e-9, 30_000, 0.9999]] as const) {
      const logits = [0, ...new Array<number>(n).fill(Math.log(w))];
      // shuffle the big one into the middle so index order and rank order differ
      logits.splice(n >> 1, 0, logits.shift()!);
      const seen = new Set<number>();
      for (let p = 0; p < 12; p++) {
        const got = sampleToken(logits, p, { temperature: 1, topP });
        expect(got, `w ${w} position ${p}`).toBe(reference(logits, p, { temperature: 1, topP }));
        seen.add(got);
      }
      // below the last threshold the nucleus is the big one and a sliver of the rest: the reference still decides
      if (w > 1e-8) expect(seen.size, `w ${w}`).toBeGreaterThan(1);
    }
  });

  it('weights relative to the row\'s maximum (no overflow), and an index inside the row for NaN logits', () => {
    for (let p = 0; p < 20; p++) expect(sampleToken([100, 0, -5], p, { temperature: 0.1 })).toBe(0);
    for (let p = 0; p < 20; p++) expect(sampleToken([0, 100], p, { temperature: 0.1 })).toBe(1);
    expect(sampleToken([0, Number.NaN, 0], 5, { temperature: 1 })).toBe(2);
  });
});
