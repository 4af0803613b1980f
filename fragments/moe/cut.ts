/**
 * Cuts a model with recognised mixture-of-experts layers for selective activation: each layer becomes a
 * router fragment (layer input → gates and scores) and one fragment per expert, or per `expertsPerFragment`
 * experts (layer input → their outputs); the weighted sum is left to the caller, who runs only the experts a
 * token chose. The dense stretches between the layers are planned as usual (--parts over all of them, or
 * --max-bytes each). Nodes are first reordered so that each part of a layer is a contiguous run, so the
 * ordinary partitioner writes every fragment; the sum's fragment is then dropped and the indices closed up.
 */
import type { ModelDoc } from '../onnx/model-doc.js';
import { FragmentError } from '../onnx/errors.js';
import { indexGraph, type GraphIndex } from '../analysis/graph.js';
import type { TensorInfo } from '../analysis/infer.js';
import { buildCutProblem, type PlacedGraph } from '../cut-problem.js';
import { planCuts, type CutPlan, type CutProblem, type CutTarget } from '../planner.js';
import { boundaryOf, partition, valueInfoOf, type FragmentModel } from '../partition.js';
import type { MoeLayer } from './recognise.js';

/** What a fragment of a cut MoE layer is, as the manifest records it. */
export interface ExpertFragmentRole { group: number; role: 'router' | 'experts'; experts?: number[] }

export interface MoeCutFragment extends FragmentModel { expertRole?: ExpertFragmentRole }

export interface MoeCut {
  placedGraph: PlacedGraph;
  plan: CutPlan;
  fragments: MoeCutFragment[];
  /** Per layer: the router's fragment index and each expert's fragment index. */
  groups: { router: number; expertFragments: number[] }[];
}

type Range = { start: number; end: number; kind: 'dense' } | { start: number; end: number; kind: 'router' | 'experts' | 'sum'; layer: number; experts?: number[] };

/** Cuts `doc` (already indexed and analysed) along its MoE layers; see module doc. */
export function cutMoeLayers(index: GraphIndex, infos: Map<string, TensorInfo>, layers: MoeLayer[], options: { expertsPerFragment: number; target: CutTarget; dims?: Record<string, number> }): MoeCut {
  const per = options.expertsPerFragment;
  if (!Number.isSafeInteger(per) || per < 1) throw new FragmentError('BAD_ARGUMENT', `--experts-per-fragment must be a positive integer, got ${per}`);

  // 1. Reorder: each layer's nodes move to where its last node was, as router, expert groups, sum.
  const parts = layers.map((l) => {
    const runs: { kind: 'router' | 'experts' | 'sum'; nodes: number[]; experts?: number[] }[] = [{ kind: 'router', nodes: l.routerNodes }];
    for (let e = 0; e < l.experts.length; e += per) {
      const chunk = l.experts.slice(e, e + per);
      runs.push({ kind: 'experts', nodes: chunk.flatMap((x) => x.nodes).sort((a, b) => a - b), experts: chunk.map((x) => x.index) });
    }
    runs.push({ kind: 'sum', nodes: l.combineNodes });
    return runs;
  });
  const layerOf = new Map<number, number>();
  parts.forEach((runs, li) => runs.forEach((r) => r.nodes.forEach((n) => layerOf.set(n, li))));
  const lastOf = parts.map((runs) => Math.max(...runs.flatMap((r) => r.nodes)));
  const order: number[] = [];
  const runStarts: { layer: number; run: number; at: number }[] = [];
  index.nodes.forEach((_, pos) => {
    const li = layerOf.get(pos);
    if (li === undefined) { order.push(pos); return; }
    if (pos !== lastOf[li]) return;
    parts[li].forEach((r, ri) => { runStarts.push({ layer: li, run: ri, at: order.length }); order.push(...r.nodes); });
  });
  const doc: ModelDoc = { model: index.doc.model, graph: { ...index.doc.graph, node: order.map((p) => index.nodes[p]) } };
  const reordered = indexGraph(doc);
  if (reordered.nodes.some((n, i) => n !== index.nodes[order[i]])) throw new Error('internal: the MoE reordering is not a topological order');
  const placedGraph = buildCutProblem(reordered, infos, options.dims);
  const placedIndexOf = new Map(placedGraph.placed.map((pos, i) => [pos, i]));

  // 2. Ranges over placed nodes: the layers' runs, and dense stretches between them.
  const layerRanges: Range[] = [];
  for (const s of runStarts) {
    const run = parts[s.layer][s.run];
    const first = placedIndexOf.get(s.at);
    if (first === undefined) throw new Error('internal: a node of an MoE layer is static');
    layerRanges.push({ start: first, end: first + run.nodes.length, kind: run.kind, layer: s.layer, ...(run.experts ? { experts: run.experts } : {}) });
  }
  const m = placedGraph.placed.length;
  const dense: { start: number; end: number }[] = [];
  let at = 0;
  for (const r of layerRanges) {
    if (r.start > at) dense.push({ start: at, end: r.start });
    at = r.end;
  }
  if (at < m) dense.push({ start: at, end: m });
  const densePlans = planDense(placedGraph.problem, dense, options.target);
  const ranges = [...densePlans.map((r) => ({ ...r, kind: 'dense' as const })), ...layerRanges].sort((a, b) => a.start - b.start);

  const { problem } = placedGraph;
  const sum = (xs: number[], a: number, b: number): number => xs.slice(a, b).reduce((s, v) => s + v, 0);
  const totalF = sum(problem.flops, 0, m) || 1;
  const totalW = sum(problem.weightBytes, 0, m) || 1;
  const plan: CutPlan = {
    cuts: ranges.slice(1).map((r) => r.start),
    crossBytes: ranges.slice(1).map((r) => problem.crossBytes[r.start]),
    fragments: ranges.map((r) => ({
      start: r.start, end: r.end, flops: sum(problem.flops, r.start, r.end), weightBytes: sum(problem.weightBytes, r.start, r.end),
      load: 0.5 * sum(problem.flops, r.start, r.end) / totalF + 0.5 * sum(problem.weightBytes, r.start, r.end) / totalW,
    })),
    tolerance: Math.max(0, ...densePlans.map((d) => d.tolerance)),
  };
  const written = partition(placedGraph, plan);

  // 3. Drop the sums' fragments: the caller combines. Close up the indices; the sum's output counts as the router's.
  const newIndex: (number | undefined)[] = [];
  let next = 0;
  ranges.forEach((r) => { newIndex.push(r.kind === 'sum' ? undefined : next++); });
  const routerOfLayer = new Map<number, number>();
  ranges.forEach((r, i) => { if (r.kind === 'router') routerOfLayer.set(r.layer, newIndex[i]!); });
  const sumLayer = new Map<number, number>();
  ranges.forEach((r, i) => { if (r.kind === 'sum') sumLayer.set(i, r.layer); });
  const total = next;
  const sumReaders = (layer: number): number[] => {
    const at = ranges.findIndex((r) => r.kind === 'sum' && r.layer === layer);
    const readers = [...new Set(written[at].outputs.flatMap((o) => o.to))].map((t) => newIndex[t]).filter((t): t is number => t !== undefined).sort((a, b) => a - b);
    if (readers.length === 0) throw new FragmentError('UNSUPPORTED', `the output of mixture-of-experts layer ${layer} ("${layers[layer].output}") is a model output; selective activation needs a fragment after it`);
    return readers;
  };
  const fragments: MoeCutFragment[] = [];
  const groups = layers.map(() => ({ router: -1, expertFragments: [] as number[] }));
  ranges.forEach((r, i) => {
    const f = written[i];
    const ni = newIndex[i];
    if (ni === undefined) return;
    const mapFrom = (from: 'graph' | number): 'graph' | number => (from === 'graph' ? from : newIndex[from] ?? routerOfLayer.get(sumLayer.get(from)!)!);
    const inputs = f.inputs.map((input) => ({ ...input, from: mapFrom(input.from) }));
    // What the router and the experts return flows, through the caller's sum, into the readers of the layer output.
    const layerOf = r.kind === 'router' || r.kind === 'experts' ? r.layer : undefined;
    const outputs = f.outputs.map((o) => ({ ...o, to: layerOf !== undefined ? sumReaders(layerOf) : o.to.map((t) => newIndex[t]).filter((t): t is number => t !== undefined) }));
    let expertRole: ExpertFragmentRole | undefined;
    let docOut = f.doc;
    if (r.kind === 'router') {
      const layer = layers[r.layer];
      expertRole = { group: r.layer, role: 'router' };
      groups[r.layer].router = ni;
      // The scores travel too: a fallback re-ranks the experts by them.
      if (!outputs.some((o) => o.name === layer.scores)) {
        outputs.push({ ...boundaryOf(layer.scores, placedGraph.infos, reordered), to: sumReaders(r.layer), graphOutput: false });
        docOut = { ...docOut, graph: { ...docOut.graph, output: [...docOut.graph.output, valueInfoOf(layer.scores, placedGraph.infos, reordered)], valueInfo: docOut.graph.valueInfo.filter((v) => v.name !== layer.scores) } };
      }
    } else if (r.kind === 'experts') {
      expertRole = { group: r.layer, role: 'experts', experts: r.experts };
      for (const e of r.experts ?? []) groups[r.layer].expertFragments[e] = ni;
    }
    docOut = {
      ...docOut,
      model: { ...docOut.model, metadataProps: (docOut.model.metadataProps ?? []).map((p) => (p.key === 'gridpipe.fragment' ? { key: p.key, value: `${ni}/${total}` } : p)) },
      graph: { ...docOut.graph, name: docOut.graph.name.replace(/_fragment_\d+$/, `_fragment_${ni}`) },
    };
    fragments.push({ ...f, index: ni, doc: docOut, inputs, outputs, ...(expertRole ? { expertRole } : {}) });
  });
  const keptPlan: CutPlan = {
    ...plan,
    cuts: plan.cuts.filter((_, i) => ranges[i + 1].kind !== 'sum'),
    crossBytes: plan.crossBytes.filter((_, i) => ranges[i + 1].kind !== 'sum'),
    fragments: plan.fragments.filter((_, i) => ranges[i].kind !== 'sum'),
  };
  return { placedGraph, plan: keptPlan, fragments, groups };
}

/** Plans the dense stretches: `parts` spread over them by load (one each at least), or `maxBytes` each. */
function planDense(problem: CutProblem, stretches: { start: number; end: number }[], target: CutTarget): { start: number; end: number; tolerance: number }[] {
  const sub = (a: number, b: number): CutProblem => ({
    flops: problem.flops.slice(a, b), weightBytes: problem.weightBytes.slice(a, b),
    crossBytes: problem.crossBytes.slice(a, b), allowed: problem.allowed.slice(a, b),
    ...(problem.weightSets ? { weightSets: problem.weightSets.slice(a, b), weightSizes: problem.weightSizes } : {}),
  });
  let targets: CutTarget[];
  if ('parts' in target) {
    if (target.parts < stretches.length) {
      throw new FragmentError('TOO_MANY_PARTS', `the mixture-of-experts layers split the dense part of the model into ${stretches.length} stretches: give --parts ${stretches.length} or more`);
    }
    const sumOf = (xs: number[], a: number, b: number): number => xs.slice(a, b).reduce((s, v) => s + v, 0);
    const totalF = sumOf(problem.flops, 0, problem.flops.length) || 1;
    const totalW = sumOf(problem.weightBytes, 0, problem.flops.length) || 1;
    const load = stretches.map((s) => sumOf(problem.flops, s.start, s.end) / totalF + sumOf(problem.weightBytes, s.start, s.end) / totalW);
    const counts = stretches.map(() => 1);
    for (let extra = target.parts - stretches.length; extra > 0; extra--) {
      let best = 0;
      for (let i = 1; i < counts.length; i++) if (load[i] / counts[i] > load[best] / counts[best]) best = i;
      counts[best]++;
    }
    targets = counts.map((parts) => ({ parts }));
  } else {
    targets = stretches.map(() => target);
  }
  return stretches.flatMap((s, i) => {
    const plan = planCuts(sub(s.start, s.end), targets[i]);
    return plan.fragments.map((f) => ({ start: s.start + f.start, end: s.start + f.end, tolerance: plan.tolerance }));
  });
}
