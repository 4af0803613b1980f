/**
 * planCuts: cheap cuts when balance allows, the best balance among equal costs, never a forbidden position, and a
 * clear error when there are too few cut points.
 */
import { describe, expect, it } from 'vitest';
import { planCuts, countCutPoints, type CutProblem } from '../../fragments/planner.js';
import { FragmentError } from '../../fragments/onnx/errors.js';

/** A uniform chain of n nodes with equal work; crossing bytes given per position. */
function chain(n: number, cross: (p: number) => number, allowed: (p: number) => boolean = () => true): CutProblem {
  return {
    flops: Array(n).fill(100),
    weightBytes: Array(n).fill(1000),
    crossBytes: Array.from({ length: n }, (_, p) => (p === 0 ? 0 : cross(p))),
    allowed: Array.from({ length: n }, (_, p) => p > 0 && allowed(p)),
  };
}

describe('planCuts', () => {
  it('picks the cheap cut when two positions balance equally well', () => {
    // 10 nodes; cutting before node 5 crosses 4 KB, before node 4 or 6 (just as balanced within the band) 1 KB.
    const problem = chain(10, (p) => (p === 4 ? 1_000 : 4_000));
    const plan = planCuts(problem, { parts: 2 });
    expect(plan.cuts).toEqual([4]);
    expect(plan.crossBytes).toEqual([1_000]);
  });

  it('prefers the best balance among cuts of equal cost', () => {
    const plan = planCuts(chain(12, () => 500), { parts: 3 });
    expect(plan.cuts).toEqual([4, 8]);
    for (const f of plan.fragments) expect(f.load).toBeCloseTo(1 / 3, 6);
  });

  it('does not take a cheap cut that would unbalance the fragments badly', () => {
    // The cheapest cut is right after the first node: far outside the balance band.
    const problem = chain(20, (p) => (p === 1 ? 1 : 1_000));
    const plan = planCuts(problem, { parts: 2 });
    expect(plan.cuts[0]).toBeGreaterThanOrEqual(8);
    expect(plan.cuts[0]).toBeLessThanOrEqual(12);
  });

  it('never cuts at a forbidden position', () => {
    const problem = chain(10, () => 100, (p) => p < 3 || p > 7);
    const plan = planCuts(problem, { parts: 2 });
    expect(plan.cuts[0] < 3 || plan.cuts[0] > 7).toBe(true);
  });

  it('fails clearly when there are fewer cut points than needed', () => {
    const problem = chain(4, () => 10, (p) => p === 2);
    expect(countCutPoints(problem)).toBe(1);
    expect(() => planCuts(problem, { parts: 3 })).toThrow(FragmentError);
    expect(() => planCuts(problem, { parts: 3 })).toThrow(/only 1 possible cut point/);
  });

  it('with --max-bytes, uses as few fragments as fit and keeps each under the limit', () => {
    const problem = chain(10, () => 10); // 10 kB of weights in all
    const plan = planCuts(problem, { maxBytes: 3_000 });
    expect(plan.fragments.length).toBe(4);
    for (const f of plan.fragments) expect(f.weightBytes).toBeLessThanOrEqual(3_000);
  });

  it('with --max-bytes, refuses a node whose own weights exceed the limit', () => {
    const problem = chain(5, () => 10);
    problem.weightBytes[2] = 50_000;
    expect(() => planCuts(problem, { maxBytes: 10_000 })).toThrow(/node 2 alone holds 50000 bytes/);
  });

  it('balances FLOPs and weight bytes together', () => {
    // First half: heavy compute, no weights; second half: weights, little compute.
    const problem: CutProblem = {
      flops: [1000, 1000, 1000, 1000, 1, 1, 1, 1],
      weightBytes: [0, 0, 0, 0, 1000, 1000, 1000, 1000],
      crossBytes: [0, 10, 10, 10, 10, 10, 10, 10],
      allowed: [false, true, true, true, true, true, true, true],
    };
    const plan = planCuts(problem, { parts: 2 });
    expect(plan.fragments.map((f) => f.load.toFixed(3))).toEqual(['0.500', '0.500']);
  });
});

describe('planCuts with shared weights', () => {
  it('counts a weight read by two fragments in both under --max-bytes', () => {
    // Nodes 0 and 5 read the same 3 kB weight (a tied embedding); nodes 1-4 read 1 kB each.
    const problem: CutProblem = {
      flops: Array(6).fill(1),
      weightBytes: [3000, 1000, 1000, 1000, 1000, 0],
      crossBytes: [0, 10, 10, 10, 10, 10],
      allowed: [false, true, true, true, true, true],
      weightSets: [[0], [1], [2], [3], [4], [0]],
      weightSizes: [3000, 1000, 1000, 1000, 1000],
    };
    const plan = planCuts(problem, { maxBytes: 5000 });
    // Attributed bytes would allow 2 fragments (5 kB + 2 kB); the copy of weight 0 makes the last one 5 kB too.
    const union = (start: number, end: number): number => {
      const ids = new Set<number>();
      for (let p = start; p < end; p++) for (const w of problem.weightSets![p]) ids.add(w);
      return [...ids].reduce((s, w) => s + problem.weightSizes![w], 0);
    };
    for (const f of plan.fragments) expect(union(f.start, f.end)).toBeLessThanOrEqual(5000);
    expect(plan.fragments.length).toBe(2);
  });
});
