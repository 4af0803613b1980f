/**
 * `fragmentModel`'s path for `--experts-per-fragment`: reads and analyses the model, recognises its
 * mixture-of-experts layers (a model without one is refused, saying why each TopK was not a router), cuts
 * them apart and describes each layer as a manifest expert group.
 */
import { readModel } from '../onnx/read.js';
import { FragmentError } from '../onnx/errors.js';
import type { ModelDoc } from '../onnx/model-doc.js';
import { indexGraph } from '../analysis/graph.js';
import { analyzeModel } from '../analysis/infer.js';
import type { PlacedGraph } from '../cut-problem.js';
import type { CutPlan, CutTarget } from '../planner.js';
import type { ExpertGroup } from '../manifest.js';
import { recogniseMoeLayers } from './recognise.js';
import { cutMoeLayers, type MoeCutFragment } from './cut.js';

export type { MoeCutFragment } from './cut.js';

/** Cuts the model at `modelPath` for selective activation; see module doc. */
export function cutMoeModel(modelPath: string, expertsPerFragment: number, target: CutTarget, dims: Record<string, number> = {}): { doc: ModelDoc; placedGraph: PlacedGraph; plan: CutPlan; fragments: MoeCutFragment[]; moeGroups: ExpertGroup[] } {
  const doc = readModel(modelPath);
  const index = indexGraph(doc);
  const { infos, values } = analyzeModel(doc);
  const { layers, skipped } = recogniseMoeLayers(index, infos, values);
  if (layers.length === 0) {
    const why = skipped.length ? skipped.map((s) => `${s.node}: ${s.reason}`).join('; ') : 'it has no TopK node';
    throw new FragmentError('UNSUPPORTED', `--experts-per-fragment: no mixture-of-experts layer recognised in ${modelPath} (${why})`);
  }
  const cut = cutMoeLayers(index, infos, layers, { expertsPerFragment, target, dims });
  const moeGroups: ExpertGroup[] = layers.map((l, li) => ({
    layer: li,
    topK: l.topK,
    router: l.scores,
    routerFragment: cut.groups[li].router,
    input: l.input,
    output: l.output,
    gates: l.gates,
    scoreKind: l.scoreKind,
    experts: l.experts.map((e) => ({ index: e.index, fragments: [cut.groups[li].expertFragments[e.index]], nodes: e.nodes.length, output: e.output })),
  }));
  return { doc, placedGraph: cut.placedGraph, plan: cut.plan, fragments: cut.fragments, moeGroups };
}
