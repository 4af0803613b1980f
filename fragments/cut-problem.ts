/**
 * Turns an indexed graph into the planner's plain data: which nodes are placed (all but static ones),
 * their FLOPs and weight bytes, the bytes crossing each possible cut, and which cuts are forbidden
 * (inside a KV-cache pair, or across a tensor whose element type is unknown or that is not a tensor).
 */
import { byteSizeOf, ortTypeName } from './onnx/dtype.js';
import { tensorBytesLength } from './onnx/model-doc.js';
import type { GraphIndex } from './analysis/graph.js';
import { nodeFlops, resolveShape, type TensorInfo } from './analysis/infer.js';
import type { CutProblem } from './planner.js';
import { statefulPairs } from './stateful.js';

/** Symbolic dims are costed at these sizes unless the caller says otherwise: one sequence, 16 positions. */
export function defaultCostDim(symbol: string): number {
  return /batch/i.test(symbol) ? 1 : 16;
}

export interface PlacedGraph {
  index: GraphIndex;
  infos: Map<string, TensorInfo>;
  /** Positions (in index.nodes) of the nodes that are placed in fragments, ascending. */
  placed: number[];
  /** For each placed node, the weights and static nodes it needs (directly or through static nodes). */
  support: { weights: Set<string>; statics: Set<number> }[];
  problem: CutProblem;
  /** Byte size of each tensor at the costing dims (undefined when unknown). */
  tensorBytes: (name: string) => number | undefined;
  costDims: Record<string, number>;
}

/** Builds the planner's problem for a graph. */
export function buildCutProblem(index: GraphIndex, infos: Map<string, TensorInfo>, dims: Record<string, number> = {}): PlacedGraph {
  const placed: number[] = [];
  const placedIndexOf = new Map<number, number>();
  index.nodes.forEach((_, pos) => {
    if (!index.staticNodes.has(pos)) {
      placedIndexOf.set(pos, placed.length);
      placed.push(pos);
    }
  });
  const m = placed.length;
  const costDims: Record<string, number> = {};
  const fallback = (s: string): number => (costDims[s] ??= dims[s] ?? defaultCostDim(s));

  const bytesCache = new Map<string, number | undefined>();
  const tensorBytes = (name: string): number | undefined => {
    if (bytesCache.has(name)) return bytesCache.get(name);
    const info = infos.get(name);
    let bytes: number | undefined;
    if (info?.dtype !== undefined && info.shape) {
      try {
        const count = resolveShape(info.shape, dims, fallback).reduce((a, b) => a * b, 1);
        const b = byteSizeOf(info.dtype, count);
        bytes = Number.isFinite(b) ? b : undefined;
      } catch {
        bytes = undefined;
      }
    }
    bytesCache.set(name, bytes);
    return bytes;
  };

  // What each placed node needs from weights and static nodes, memoised over static nodes.
  const staticMemo = new Map<number, { weights: Set<string>; statics: Set<number> }>();
  const supportOfStatic = (pos: number): { weights: Set<string>; statics: Set<number> } => {
    const known = staticMemo.get(pos);
    if (known) return known;
    const result = { weights: new Set<string>(), statics: new Set<number>([pos]) };
    for (const input of index.nodeInputs[pos]) addSupport(input, result);
    staticMemo.set(pos, result);
    return result;
  };
  const addSupport = (tensor: string, into: { weights: Set<string>; statics: Set<number> }): void => {
    if (index.weights.has(tensor)) { into.weights.add(tensor); return; }
    const producer = index.producer.get(tensor);
    if (producer !== undefined && index.staticNodes.has(producer)) {
      const s = supportOfStatic(producer);
      for (const w of s.weights) into.weights.add(w);
      for (const st of s.statics) into.statics.add(st);
    }
  };
  const support = placed.map((pos) => {
    const result = { weights: new Set<string>(), statics: new Set<number>() };
    for (const input of index.nodeInputs[pos]) addSupport(input, result);
    return result;
  });

  // Weight bytes: each weight counts once, at the first placed node that needs it.
  const counted = new Set<string>();
  const weightBytes = support.map((s) => {
    let total = 0;
    for (const w of s.weights) {
      if (counted.has(w)) continue;
      counted.add(w);
      total += tensorBytesLength(index.weights.get(w)?.bytes);
    }
    return total;
  });
  const flopDims = symbolBindings(infos, dims, fallback);
  const flops = placed.map((pos) => {
    try {
      const f = nodeFlops(index.nodes[pos], infos, flopDims);
      return Number.isFinite(f) && f >= 0 ? f : 0;
    } catch {
      return 0;
    }
  });

  // Crossing bytes by a sweep: a tensor made by placed node a and last read by placed node z crosses cuts (a, z].
  const diff = new Float64Array(m + 2);
  const forbidDiff = new Int32Array(m + 2);
  const knownSizes: number[] = [];
  const unknownRanges: [number, number][] = [];
  for (let a = 0; a < m; a++) {
    const node = index.nodes[placed[a]];
    for (const out of node.output ?? []) {
      if (!out) continue;
      const readers = (index.consumers.get(out) ?? []).map((pos) => placedIndexOf.get(pos)).filter((x): x is number => x !== undefined);
      if (readers.length === 0) continue;
      const z = Math.max(...readers);
      if (z <= a) continue;
      const info = infos.get(out);
      if (info?.dtype === undefined || ortTypeName(info.dtype) === undefined) {
        forbidDiff[a + 1]++;
        forbidDiff[z + 1]--;
        continue;
      }
      const b = tensorBytes(out);
      if (b === undefined) unknownRanges.push([a, z]);
      else {
        knownSizes.push(b);
        diff[a + 1] += b;
        diff[z + 1] -= b;
      }
    }
  }
  // A tensor of unknown size is costed like the largest known activation, so cuts avoid it when they can.
  const unknownCost = knownSizes.length ? Math.max(...knownSizes) : 16384;
  for (const [a, z] of unknownRanges) { diff[a + 1] += unknownCost; diff[z + 1] -= unknownCost; }

  // KV-cache pairs: the reader of past_key_values.N.* and the writer of present.N.* share a fragment.
  const pairs = statefulPairs(index.graphInputs.map((i) => i.name!), index.graphOutputs.map((o) => o.name!));
  for (const { input, output } of pairs) {
    const positions = [
      ...(index.consumers.get(input) ?? []),
      ...(index.producer.has(output) ? [index.producer.get(output)!] : []),
    ].map((pos) => placedIndexOf.get(pos)).filter((x): x is number => x !== undefined);
    if (positions.length < 2) continue;
    const lo = Math.min(...positions);
    const hi = Math.max(...positions);
    forbidDiff[lo + 1]++;
    forbidDiff[hi + 1]--;
  }

  const crossBytes = new Array<number>(m).fill(0);
  const allowed = new Array<boolean>(m).fill(false);
  let running = 0;
  let forbidden = 0;
  for (let p = 1; p < m; p++) {
    running += diff[p];
    forbidden += forbidDiff[p];
    crossBytes[p] = Math.max(0, Math.round(running));
    allowed[p] = forbidden === 0;
  }
  // Exact weight sets, so --max-bytes counts a shared weight in every fragment that copies it.
  const weightIds = new Map<string, number>();
  const weightSizes: number[] = [];
  const weightSets = support.map((s) => [...s.weights].map((w) => {
    let id = weightIds.get(w);
    if (id === undefined) {
      id = weightSizes.length;
      weightIds.set(w, id);
      weightSizes.push(tensorBytesLength(index.weights.get(w)?.bytes));
    }
    return id;
  }));
  return { index, infos, placed, support, problem: { flops, weightBytes, crossBytes, allowed, weightSets, weightSizes }, tensorBytes, costDims };
}

/** Every plain symbol that appears in a shape, bound to the caller's value or the costing default. */
function symbolBindings(infos: Map<string, TensorInfo>, dims: Record<string, number>, fallback: (s: string) => number): Record<string, number> {
  const out: Record<string, number> = { ...dims };
  for (const info of infos.values()) {
    for (const d of info.shape ?? []) {
      if (typeof d === 'string' && !(d in out) && /^[A-Za-z_][\w.:]*$/.test(d)) out[d] = fallback(d);
    }
  }
  return out;
}
