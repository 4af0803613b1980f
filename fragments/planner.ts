/**
 * The cut planner, over plain data: nodes in topological order with their FLOPs and weight bytes, the
 * bytes that would cross a cut before each node, and which cuts are allowed. It picks cut points that
 * minimise the bytes crossing cuts while keeping every fragment's load (an even mix of its share of
 * FLOPs and of weight bytes) within a band around 1/K; the band widens only when no plan fits.
 */
import { FragmentError } from './onnx/errors.js';

export interface CutProblem {
  /** FLOPs of each node, in order. */
  flops: number[];
  /** Weight bytes attributed to each node, in order. */
  weightBytes: number[];
  /** crossBytes[p]: bytes crossing a cut placed just before node p (index 0 unused). */
  crossBytes: number[];
  /** allowed[p]: whether a cut just before node p is allowed (index 0 unused). */
  allowed: boolean[];
  /**
   * Optional, for --max-bytes: the weights (ids into weightSizes) each node reads. A weight read by
   * several fragments is copied into each, so a fragment's bytes are those of the union of its nodes' sets.
   */
  weightSets?: number[][];
  weightSizes?: number[];
}

export type CutTarget = { parts: number } | { maxBytes: number };

export interface CutPlan {
  /** Cut positions p (a cut just before node p), ascending; K-1 of them for K fragments. */
  cuts: number[];
  /** Bytes crossing each cut. */
  crossBytes: number[];
  /** Per fragment: [start, end) node range, FLOPs, weight bytes, load share. */
  fragments: { start: number; end: number; flops: number; weightBytes: number; load: number }[];
  /** The balance band that was needed: every fragment's load ≤ (1 + tolerance) / K. */
  tolerance: number;
}

const BANDS = [0.25, 0.5, 1, 2, Number.POSITIVE_INFINITY];
/** Above this many allowed cut points, the DP keeps the cheapest half and an even spread of the rest. */
const MAX_CANDIDATES = 1500;

/** Number of places the problem can be cut. */
export function countCutPoints(problem: CutProblem): number {
  return problem.allowed.reduce((n, ok, p) => (p > 0 && p < problem.flops.length && ok ? n + 1 : n), 0);
}

/** Chooses the cuts (see module doc). Throws FragmentError TOO_MANY_PARTS when the target cannot be met. */
export function planCuts(problem: CutProblem, target: CutTarget): CutPlan {
  const m = problem.flops.length;
  if (m === 0) throw new FragmentError('TOO_MANY_PARTS', 'the graph has no compute nodes to place in fragments');
  const prefixF = prefix(problem.flops);
  const prefixW = prefix(problem.weightBytes);
  const totalF = prefixF[m];
  const totalW = prefixW[m];
  const load = (a: number, b: number): number => {
    const f = totalF > 0 ? (prefixF[b] - prefixF[a]) / totalF : 0;
    const w = totalW > 0 ? (prefixW[b] - prefixW[a]) / totalW : 0;
    if (totalF > 0 && totalW > 0) return 0.5 * f + 0.5 * w;
    if (totalF > 0) return f;
    if (totalW > 0) return w;
    return (b - a) / m;
  };
  const candidates = candidateCuts(problem);
  const points = [0, ...candidates, m];

  if ('parts' in target) {
    const k = target.parts;
    if (!Number.isInteger(k) || k < 1) throw new FragmentError('BAD_ARGUMENT', `--parts must be a positive integer, got ${k}`);
    if (k - 1 > candidates.length) {
      throw new FragmentError('TOO_MANY_PARTS', `cannot cut into ${k} parts: the graph has only ${candidates.length} possible cut point${candidates.length === 1 ? '' : 's'}`);
    }
    for (const tol of BANDS) {
      const limit = (1 + tol) / k;
      const cuts = solve(points, k, problem.crossBytes, load, (a, b) => load(a, b) <= limit + 1e-12);
      if (cuts) return describe(cuts, problem, load, tol);
    }
    throw new Error('internal: no plan even without a balance constraint');
  }

  const maxBytes = target.maxBytes;
  if (!(maxBytes > 0)) throw new FragmentError('BAD_ARGUMENT', `--max-bytes must be positive, got ${maxBytes}`);
  const segmentBytes = exactSegmentBytes(points, problem);
  const slot = new Map(points.map((p, i) => [p, i]));
  const fits = (a: number, b: number): boolean => segmentBytes(slot.get(a)!, slot.get(b)!) <= maxBytes;
  for (let p = 0; p < m; p++) {
    const own = problem.weightSets ? problem.weightSets[p].reduce((s, w) => s + problem.weightSizes![w], 0) : problem.weightBytes[p];
    if (own > maxBytes) {
      throw new FragmentError('TOO_MANY_PARTS', `node ${p} alone holds ${own} bytes of weights, more than --max-bytes ${maxBytes}`);
    }
  }
  const minK = Math.max(1, Math.ceil(totalW / maxBytes));
  for (let k = minK; k <= points.length - 1; k++) {
    for (const tol of BANDS) {
      const limit = (1 + tol) / k;
      const cuts = solve(points, k, problem.crossBytes, load, (a, b) => fits(a, b) && load(a, b) <= limit + 1e-12);
      if (cuts) return describe(cuts, problem, load, tol);
    }
  }
  throw new FragmentError('TOO_MANY_PARTS', `cannot keep every fragment under --max-bytes ${maxBytes}: the allowed cut points are too far apart`);
}

/**
 * Weight bytes of the segment between candidate points i < j: the union of its nodes' weight sets when
 * the problem has them (shared weights count in every fragment that reads them), else the attributed sum.
 */
function exactSegmentBytes(points: number[], problem: CutProblem): (i: number, j: number) => number {
  const n = points.length;
  if (!problem.weightSets || !problem.weightSizes) {
    const prefixW = prefix(problem.weightBytes);
    return (i, j) => prefixW[points[j]] - prefixW[points[i]];
  }
  const sets = problem.weightSets;
  const sizes = problem.weightSizes;
  const table = new Float64Array(n * n);
  for (let j = 1; j < n; j++) {
    const seen = new Set<number>();
    let total = 0;
    for (let i = j - 1; i >= 0; i--) {
      for (let p = points[i]; p < points[i + 1]; p++) {
        for (const w of sets[p]) {
          if (!seen.has(w)) { seen.add(w); total += sizes[w]; }
        }
      }
      table[i * n + j] = total;
    }
  }
  return (i, j) => table[i * n + j];
}

function prefix(values: number[]): number[] {
  const out = new Array<number>(values.length + 1);
  out[0] = 0;
  for (let i = 0; i < values.length; i++) out[i + 1] = out[i] + values[i];
  return out;
}

function candidateCuts(problem: CutProblem): number[] {
  const m = problem.flops.length;
  const all: number[] = [];
  for (let p = 1; p < m; p++) if (problem.allowed[p]) all.push(p);
  if (all.length <= MAX_CANDIDATES) return all;
  const half = Math.floor(MAX_CANDIDATES / 2);
  const cheapest = [...all].sort((a, b) => problem.crossBytes[a] - problem.crossBytes[b] || a - b).slice(0, half);
  const keep = new Set(cheapest);
  for (let i = 0; i < half; i++) keep.add(all[Math.floor((i * all.length) / half)]);
  return [...keep].sort((a, b) => a - b);
}

/**
 * DP over candidate points: best[k][j] = cheapest way to cover nodes [0, points[j]) with k fragments.
 * Cost is (sum of crossing bytes, then the largest load), compared lexicographically.
 */
function solve(points: number[], k: number, crossBytes: number[], load: (a: number, b: number) => number,
  feasible: (a: number, b: number) => boolean): number[] | undefined {
  const n = points.length;
  const INF = Number.POSITIVE_INFINITY;
  let cost = new Float64Array(n).fill(INF);
  let worst = new Float64Array(n).fill(INF);
  cost[0] = 0;
  worst[0] = 0;
  const from: Int32Array[] = [];
  for (let step = 1; step <= k; step++) {
    const nextCost = new Float64Array(n).fill(INF);
    const nextWorst = new Float64Array(n).fill(INF);
    const back = new Int32Array(n).fill(-1);
    const lastStep = step === k;
    for (let j = 1; j < n; j++) {
      if (lastStep && j !== n - 1) continue;
      if (!lastStep && j === n - 1) continue;
      for (let i = j - 1; i >= 0; i--) {
        if (cost[i] === INF) continue;
        const a = points[i];
        const b = points[j];
        if (!feasible(a, b)) continue;
        const c = cost[i] + (i > 0 ? crossBytes[a] : 0);
        const w = Math.max(worst[i], load(a, b));
        if (c < nextCost[j] - 1e-9 * Math.max(1, c) || (Math.abs(c - nextCost[j]) <= 1e-9 * Math.max(1, c) && w < nextWorst[j])) {
          nextCost[j] = c;
          nextWorst[j] = w;
          back[j] = i;
        }
      }
    }
    from.push(back);
    cost = nextCost;
    worst = nextWorst;
  }
  if (cost[n - 1] === INF) return undefined;
  const cuts: number[] = [];
  let j = n - 1;
  for (let step = k - 1; step >= 0; step--) {
    const i = from[step][j];
    if (i > 0) cuts.push(points[i]);
    j = i;
  }
  return cuts.reverse();
}

function describe(cuts: number[], problem: CutProblem, load: (a: number, b: number) => number, tolerance: number): CutPlan {
  const bounds = [0, ...cuts, problem.flops.length];
  const fragments = bounds.slice(0, -1).map((start, i) => {
    const end = bounds[i + 1];
    let flops = 0;
    let weightBytes = 0;
    for (let p = start; p < end; p++) { flops += problem.flops[p]; weightBytes += problem.weightBytes[p]; }
    return { start, end, flops, weightBytes, load: load(start, end) };
  });
  return { cuts, crossBytes: cuts.map((c) => problem.crossBytes[c]), fragments, tolerance };
}
