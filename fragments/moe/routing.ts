/**
 * The arithmetic of selective activation, over plain arrays: which experts each token goes to (the router's
 * top-k, with dead experts replaced by the next-ranked live ones and the weights renormalised), which tokens
 * each expert gets (several tokens of one prefill that chose the same expert go in one call), and the
 * weighted sum of the experts' outputs. Shared by the local check (verify) and the grid client.
 */
import type { ScoreKind } from './recognise.js';

/** Where one token goes: experts in rank order with their weights; `replaced`: chosen experts that were dead, and who stood in. */
export interface TokenRoute { experts: number[]; weights: number[]; replaced: { expert: number; by: number | undefined }[] }

/**
 * Routes `rows` tokens: `scores` and `gates` are rows × `experts` (row-major). With every chosen expert live the
 * weights are the model's own gates; otherwise the chosen set is the k best live experts and the weights are
 * the router's renormalised over that set (probabilities divided by their sum, or a softmax of logits).
 */
export function routeTokens(scores: Float32Array, gates: Float32Array, experts: number, topK: number, kind: ScoreKind, isLive: (expert: number) => boolean = () => true): TokenRoute[] {
  const rows = scores.length / experts;
  const routes: TokenRoute[] = [];
  for (let r = 0; r < rows; r++) {
    const row = scores.subarray(r * experts, (r + 1) * experts);
    // Rank: larger first, ties to the lower index (ONNX TopK's order).
    const ranked = Array.from({ length: experts }, (_, e) => e).sort((a, b) => (row[b] - row[a]) || (a - b));
    const chosen = ranked.slice(0, topK);
    const dead = chosen.filter((e) => !isLive(e));
    if (dead.length === 0) {
      routes.push({ experts: chosen, weights: chosen.map((e) => gates[r * experts + e]), replaced: [] });
      continue;
    }
    const spares = ranked.slice(topK).filter(isLive);
    const replaced = dead.map((expert, i) => ({ expert, by: spares[i] }));
    const set = [...chosen.filter(isLive), ...spares.slice(0, dead.length)].sort((a, b) => ranked.indexOf(a) - ranked.indexOf(b));
    routes.push({ experts: set, weights: renormalised(set.map((e) => row[e]), kind), replaced });
  }
  return routes;
}

function renormalised(values: number[], kind: ScoreKind): number[] {
  if (values.length === 0) return [];
  if (kind === 'probabilities') {
    const total = values.reduce((s, v) => s + v, 0);
    return values.map((v) => (total > 0 ? v / total : 1 / values.length));
  }
  const top = Math.max(...values);
  const exps = values.map((v) => Math.exp(v - top));
  const total = exps.reduce((s, v) => s + v, 0);
  return exps.map((v) => v / total);
}

/** Tokens (row numbers, ascending) per expert that some token goes to. */
export function tokensPerExpert(routes: TokenRoute[]): Map<number, number[]> {
  const byExpert = new Map<number, number[]>();
  routes.forEach((route, r) => {
    for (const e of route.experts) {
      const list = byExpert.get(e) ?? [];
      list.push(r);
      byExpert.set(e, list);
    }
  });
  return new Map([...byExpert.entries()].sort((a, b) => a[0] - b[0]));
}

/** Rows `rows` of a rows × `width` matrix, packed. */
export function gatherRows(data: Float32Array, width: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(data.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/**
 * Σ over each token's experts (ascending expert index, as the model's sum runs) of weight · output row.
 * `outputs`: per expert, the rows it computed (ascending) and their values, rows × width.
 */
export function combineExperts(routes: TokenRoute[], width: number, outputs: Map<number, { rows: readonly number[]; data: Float32Array }>): Float32Array {
  const out = new Float32Array(routes.length * width);
  const rowIndex = new Map<number, Map<number, number>>();
  for (const [e, o] of outputs) rowIndex.set(e, new Map(o.rows.map((r, i) => [r, i])));
  routes.forEach((route, r) => {
    const order = route.experts.map((e, i) => ({ e, w: route.weights[i] })).sort((a, b) => a.e - b.e);
    const target = out.subarray(r * width, (r + 1) * width);
    for (const { e, w } of order) {
      const at = rowIndex.get(e)?.get(r);
      const data = outputs.get(e)?.data;
      if (at === undefined || !data) throw new Error(`internal: expert ${e} has no output for token ${r}`);
      const src = data.subarray(at * width, (at + 1) * width);
      for (let j = 0; j < width; j++) target[j] += w * src[j];
    }
  });
  return out;
}
