/**
 * The verification rules (policy/verification.ts) at their exact edges, written so that a changed line is seen
 * (issue 21, mutation testing): the digest's ordering, ties and replacement of the smallest kept entry, every
 * tolerance at equality, the pooled mean over steps with integer outputs among them, the duplicate-index case of
 * the distance, and the economics' clamps. test/verify/rules.test.ts shows the rules work on realistic tensors;
 * this file pins each branch with numbers worked by hand.
 */
import { describe, expect, it } from 'vitest';
import {
  checksToDetect, compareDigests, DEFAULT_DIGEST_K, DEFAULT_DIGEST_TOLERANCE, DEFAULT_VERIFY_RATE, detectionProbability, expectedChecksToDetect,
  firstMismatch, majorityVerdict, minimumDeterrentStake, outputDigest, tensorDistance, type StepDigest, type TensorDigest,
} from '../../policy/verification.js';

/** A top-k digest of one tensor written out by hand. */
function top(name: string, rows: number, k: number, indices: number[], values: number[]): TensorDigest {
  return { name, kind: 'top', rows, k, indices: Int32Array.from(indices), values: Float32Array.from(values) };
}

/** An exact (integer) digest written out by hand. */
function exact(name: string, values: number[]): TensorDigest {
  return { name, kind: 'exact', rows: 1, k: values.length, indices: Float64Array.from(values), values: new Float32Array(0) };
}

const tolerance = { meanRelError: 0.125, maxRelError: 0.25, minOverlap: 0.5 };

describe('outputDigest, entry by entry', () => {
  it('orders by magnitude, keeps the earlier of equal magnitudes, and replaces the smallest kept entry only for a larger one', () => {
    // row 1 walked by hand: [1] → [1,0] → [1,2,0] → 5 ties 5 and goes after it → [1,3,2]; 2 ≤ 3 stays out; 4 > 3 → [1,3,5]
    // row 2: zeros keep their order, 7 and then -8 climb past them → [5,3,0]
    const t = { type: 'float32', dims: [2, 6], data: Float32Array.from([1, -5, 3, 5, 2, -4, 0, 0, 0, 7, 0, -8]) };
    const [d] = outputDigest({ h: t }, 3);
    expect(d).toMatchObject({ name: 'h', kind: 'top', rows: 2, k: 3 });
    expect([...d.indices]).toEqual([1, 3, 5, 5, 3, 0]);
    expect([...d.values]).toEqual([-5, 5, -4, -8, 7, 0]);
  });

  it('an entry equal in magnitude to the smallest kept one does not replace it', () => {
    const [d] = outputDigest({ h: { type: 'float32', dims: [1, 3], data: Float32Array.from([2, 1, -1]) } }, 2);
    expect([...d.indices]).toEqual([0, 1]);
    expect([...d.values]).toEqual([2, 1]);
  });

  it('keeps 8 entries by default and the whole row when it is shorter than k', () => {
    expect(DEFAULT_DIGEST_K).toBe(8);
    const wide = outputDigest({ h: { type: 'float32', dims: [1, 10], data: Float32Array.from({ length: 10 }, (_, i) => i) } });
    expect(wide[0].k).toBe(8);
    expect([...wide[0].indices]).toEqual([9, 8, 7, 6, 5, 4, 3, 2]);
    const narrow = outputDigest({ h: { type: 'float32', dims: [1, 3], data: Float32Array.from([1, 3, 2]) } });
    expect(narrow[0].k).toBe(3);
    expect([...narrow[0].indices]).toEqual([1, 2, 0]);
  });

  it('sorts tensors by name, digests every float type, keeps integers and booleans whole and skips the rest', () => {
    const d = outputDigest({
      z: { type: 'float64', dims: [1, 2], data: Float64Array.from([1, 2]) },
      b: { type: 'bool', dims: [2], data: Uint8Array.from([1, 0]) },
      a: { type: 'int64', dims: [1, 3], data: BigInt64Array.from([7n, -1n, 3n]) },
      m: { type: 'float16', dims: [2], data: Float32Array.from([0.5, -1]) },
      s: { type: 'string', dims: [1], data: ['x'] },
    }, 1);
    expect(d.map((t) => [t.name, t.kind, t.rows, t.k])).toEqual([['a', 'exact', 1, 3], ['b', 'exact', 1, 2], ['m', 'top', 1, 1], ['z', 'top', 1, 1]]);
    expect([...d[0].indices]).toEqual([7, -1, 3]);
    expect(d[0].values.length).toBe(0);
    expect([...d[2].indices]).toEqual([1]);
    expect([...d[3].values]).toEqual([2]);
  });

  it('a scalar is one row of one entry, and a zero-width last axis has no rows', () => {
    const [scalar] = outputDigest({ s: { type: 'float32', dims: [], data: Float32Array.from([-3]) } });
    expect(scalar).toMatchObject({ rows: 1, k: 1 });
    expect([...scalar.values]).toEqual([-3]);
    const [empty] = outputDigest({ e: { type: 'float32', dims: [4, 0], data: new Float32Array(0) } });
    expect(empty).toMatchObject({ rows: 0, k: 0 });
    expect(empty.indices.length).toBe(0);
  });
});

describe('tensorDistance', () => {
  it('scales each row by the larger first entry of either side, and counts a shared index once', () => {
    // row 1: scale max(2, 4) = 4; index 0: |2 − 4| / 4 = 0.5; index 1 is not in y's row → overlap 1/2
    // row 2: scale 10; index 3 matches y's first 3 only (the duplicate is not counted again): |10 − 9| / 10 = 0.1
    const x = top('h', 2, 2, [0, 1, 3, 4], [2, 1, 10, 1]);
    const y = top('h', 2, 2, [0, 7, 3, 3], [4, 1, 9, 9]);
    const d = tensorDistance(x, y);
    expect(d.common).toBe(2);
    expect(d.overlap).toBe(0.5);
    expect(d.meanRelError).toBeCloseTo(0.3, 12);
    expect(d.maxRelError).toBeCloseTo(0.5, 12);
  });

  it('all-zero rows agree (no 0 / 0), and no rows overlap fully', () => {
    const zero = top('h', 1, 2, [0, 1], [0, 0]);
    expect(tensorDistance(zero, zero)).toEqual({ meanRelError: 0, maxRelError: 0, overlap: 1, common: 2 });
    const none = top('h', 0, 2, [], []);
    expect(tensorDistance(none, none)).toEqual({ meanRelError: 0, maxRelError: 0, overlap: 1, common: 0 });
    const disjoint = tensorDistance(top('h', 1, 1, [0], [1]), top('h', 1, 1, [1], [1]));
    expect(disjoint).toEqual({ meanRelError: 0, maxRelError: 0, overlap: 0, common: 0 });
  });
});

describe('compareDigests at each tolerance', () => {
  const base = top('h', 1, 2, [0, 1], [4, 2]);
  it('agrees at every bound exactly and names the bound it breaks', () => {
    // mean (0 + 0.5 / 4) / 2 = 0.0625, max 0.125: inside
    expect(compareDigests([base], [top('h', 1, 2, [0, 1], [4, 2.5])], tolerance)).toBeUndefined();
    // mean exactly 0.125 (max 0.25 exactly): agrees
    expect(compareDigests([base], [top('h', 1, 2, [0, 1], [4, 3])], tolerance)).toBeUndefined();
    // mean 0.125 + a hair
    expect(compareDigests([base], [top('h', 1, 2, [0, 1], [4, 3.01])], tolerance)).toEqual({ reason: 'mean-error', tensor: 'h', measured: expect.closeTo(0.12625, 6) });
    // max over its bound with the mean inside: one entry off by 0.3 of the scale among four
    const four = top('h', 1, 4, [0, 1, 2, 3], [10, 1, 1, 1]);
    expect(compareDigests([four], [top('h', 1, 4, [0, 1, 2, 3], [10, 4, 1, 1])], tolerance)).toEqual({ reason: 'max-error', tensor: 'h', measured: expect.closeTo(0.3, 6) });
    expect(compareDigests([four], [top('h', 1, 4, [0, 1, 2, 3], [10, 3.5, 1, 1])], tolerance)).toBeUndefined();
    // overlap exactly 0.5 agrees, below it not
    expect(compareDigests([base], [top('h', 1, 2, [0, 9], [4, 2])], tolerance)).toBeUndefined();
    expect(compareDigests([base], [top('h', 1, 2, [8, 9], [4, 2])], tolerance)).toEqual({ reason: 'overlap', tensor: 'h', measured: 0 });
  });

  it('checks the overlap before the errors, and every tensor, not only the first', () => {
    expect(compareDigests([base], [top('h', 1, 2, [9, 0], [4, 100])], { ...tolerance, minOverlap: 0.75 })?.reason).toBe('overlap');
    const ok = exact('a', [1, 2]);
    expect(compareDigests([ok, base], [ok, top('h', 1, 2, [0, 1], [4, 4])], tolerance)).toEqual({ reason: 'mean-error', tensor: 'h', measured: 0.25 });
    expect(compareDigests([ok, ok], [ok, ok])).toBeUndefined();
  });

  it('names the tensor whose kind, rows or k differ, and outputs that differ in number or name', () => {
    expect(compareDigests([base], [exact('h', [0, 1])])).toEqual({ reason: 'shape', tensor: 'h' });
    expect(compareDigests([base], [top('h', 2, 2, [0, 1, 0, 1], [4, 2, 4, 2])])).toEqual({ reason: 'shape', tensor: 'h' });
    expect(compareDigests([base], [top('h', 1, 1, [0], [4])])).toEqual({ reason: 'shape', tensor: 'h' });
    expect(compareDigests([base], [base, exact('x', [1])])).toEqual({ reason: 'outputs' });
    expect(compareDigests([base], [{ ...base, name: 'g' }])).toEqual({ reason: 'outputs' });
    expect(compareDigests([base], [])).toEqual({ reason: 'outputs' });
  });

  it('exact digests agree only when every value is equal, the last one included', () => {
    expect(compareDigests([exact('t', [1, 2, 3])], [exact('t', [1, 2, 3])])).toBeUndefined();
    expect(compareDigests([exact('t', [1, 2, 3])], [exact('t', [1, 2, 4])])).toEqual({ reason: 'exact', tensor: 't' });
    expect(compareDigests([exact('t', [0, 2, 3])], [exact('t', [1, 2, 3])])).toEqual({ reason: 'exact', tensor: 't' });
  });

  it('the default tolerance is the documented one', () => {
    expect(DEFAULT_DIGEST_TOLERANCE).toEqual({ meanRelError: 1e-3, maxRelError: 0.05, minOverlap: 0.75 });
    expect(DEFAULT_VERIFY_RATE).toBe(0.04);
  });
});

describe('firstMismatch over a run of steps', () => {
  const step = (second: number): StepDigest => [exact('a', [5]), top('h', 1, 2, [0, 1], [4, second])];
  const clean: StepDigest = step(2);
  // per step only the overlap and a loose maximum; the mean is pooled
  const pooled = { meanRelError: 0.125, maxRelError: 1, minOverlap: 0.5 };

  it('pools the mean over steps (integer outputs aside) and blames the worst step, the first of equals', () => {
    // errors 0.5/4/2 = 0.0625 and 1.5/4/2 = 0.1875 per step: pooled 0.125 agrees
    expect(firstMismatch([clean, clean], [step(2.5), step(3.5)], pooled)).toBeUndefined();
    // 0.0625 and 0.25: pooled 0.15625, worst step 1
    expect(firstMismatch([clean, clean], [step(2.5), step(4)], pooled)).toEqual({ step: 1, mismatch: { reason: 'mean-error', tensor: 'h', measured: 0.15625 } });
    // equal errors: the first step is named
    expect(firstMismatch([clean, clean], [step(3.2), step(3.2)], pooled)).toEqual({ step: 0, mismatch: { reason: 'mean-error', tensor: 'h', measured: expect.closeTo(0.15, 6) } });
    // a step over the mean bound alone does not fail the run when the pooled mean is inside it
    expect(firstMismatch([clean, clean, clean], [step(3.2), step(2), step(2)], pooled)).toBeUndefined();
  });

  it('reports the first step that fails on anything but the mean, and runs of different lengths', () => {
    const bad: StepDigest = [exact('a', [6]), top('h', 1, 2, [0, 1], [4, 2])];
    expect(firstMismatch([clean, clean, clean], [clean, bad, bad], pooled)).toEqual({ step: 1, mismatch: { reason: 'exact', tensor: 'a' } });
    expect(firstMismatch([clean, clean], [clean], pooled)).toEqual({ step: 1, mismatch: { reason: 'outputs' } });
    expect(firstMismatch([clean], [clean, clean, clean], pooled)).toEqual({ step: 1, mismatch: { reason: 'outputs' } });
    expect(firstMismatch([], [], pooled)).toBeUndefined();
    expect(firstMismatch([clean], [clean])).toBeUndefined();
  });
});

describe('economics', () => {
  it('majority: the referee condemns whoever it disagrees with, alone', () => {
    expect(majorityVerdict(false, true)).toBe('supplier');
    expect(majorityVerdict(true, false)).toBe('checker');
    expect(majorityVerdict(true, true)).toBe('undecided');
    expect(majorityVerdict(false, false)).toBe('undecided');
  });

  it('detection probability, with rates clamped into [0, 1] and non-finite rates as 0', () => {
    expect(detectionProbability(0.1, 0.5)).toBeCloseTo(0.05, 12);
    expect(detectionProbability(0.1, 0.5, 3)).toBeCloseTo(1 - 0.95 ** 3, 12);
    expect(detectionProbability(2, 0.5)).toBeCloseTo(0.5, 12);
    expect(detectionProbability(0.5, 7)).toBeCloseTo(0.5, 12);
    expect(detectionProbability(-1, 0.5)).toBe(0);
    expect(detectionProbability(Number.NaN, 0.5)).toBe(0);
    expect(detectionProbability(Number.POSITIVE_INFINITY, 0.5)).toBe(0);
  });

  it('checks to detect: expected 1 / q; within a confidence ceil(ln(1 − p) / ln(1 − q)), 1 when q ≥ 1', () => {
    expect(expectedChecksToDetect(0.25)).toBe(4);
    expect(expectedChecksToDetect(3)).toBe(1);
    expect(expectedChecksToDetect(0)).toBe(Number.POSITIVE_INFINITY);
    expect(checksToDetect(0.5)).toBe(7);
    expect(checksToDetect(0.5, 0.9)).toBe(4);
    expect(checksToDetect(1)).toBe(1);
    expect(checksToDetect(1.5)).toBe(1);
    expect(checksToDetect(0.999999)).toBe(1);
  });

  it('the deterrent stake is gain / (c · (1 − escape)) + 1 in integers, and no rate deters nothing', () => {
    expect(minimumDeterrentStake(1000n, 0.04)).toBe(25_001n);
    expect(minimumDeterrentStake(1000n, 0.04, 0.5)).toBe(50_001n);
    expect(minimumDeterrentStake(1000n, 0.04, -3)).toBe(25_001n);
    expect(minimumDeterrentStake(7n, 1e-12)).toBe(7_000_000_001n);
    expect(() => minimumDeterrentStake(1000n, 0)).toThrow(RangeError);
    expect(() => minimumDeterrentStake(1000n, 0.5, 1)).toThrow(/no checks/);
    expect(() => minimumDeterrentStake(1000n, Number.NaN)).toThrow(RangeError);
  });
});
