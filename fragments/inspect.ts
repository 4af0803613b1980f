/** `inspectModel`: what a model is made of (ops, parameters, FLOPs) and where it could be cut. */
import { int64ToNumber } from '../proto/onnx.js';
import { tensorBytesLength } from './onnx/model-doc.js';
import { analyseModel } from './fragment.js';
import { countCutPoints } from './planner.js';
import { statefulPairs } from './stateful.js';

export interface CandidateCut { before: string; position: number; crossBytes: number; loadBefore: number }

export interface ModelInspection {
  name: string;
  irVersion: number;
  opsets: Record<string, number>;
  producer: string;
  inputs: string[];
  outputs: string[];
  nodes: number;
  ops: Record<string, number>;
  parameters: number;
  weightBytes: number;
  flops: number;
  costDims: Record<string, number>;
  subgraphNodes: string[];
  statefulPairs: number;
  cutPoints: number;
  /** The cheapest cut points, each with the share of the load before it. */
  candidateCuts: CandidateCut[];
}

/** Summarises a model and lists its cheapest cut points. */
export function inspectModel(modelPath: string, options: { dims?: Record<string, number>; top?: number } = {}): ModelInspection {
  const { doc, index, placedGraph } = analyseModel(modelPath, options.dims);
  const { problem, placed } = placedGraph;
  const ops: Record<string, number> = {};
  for (const n of index.nodes) ops[n.opType ?? '?'] = (ops[n.opType ?? '?'] ?? 0) + 1;
  const totalF = problem.flops.reduce((a, b) => a + b, 0);
  const totalW = problem.weightBytes.reduce((a, b) => a + b, 0);
  let f = 0;
  let w = 0;
  const cuts: CandidateCut[] = [];
  for (let p = 0; p < placed.length; p++) {
    if (p > 0 && problem.allowed[p]) {
      const share = (totalF > 0 ? f / totalF : 0) * (totalW > 0 ? 0.5 : 1) + (totalW > 0 ? w / totalW : 0) * (totalF > 0 ? 0.5 : 1);
      const node = index.nodes[placed[p]];
      cuts.push({ before: node.name || `${node.opType}#${placed[p]}`, position: p, crossBytes: problem.crossBytes[p], loadBefore: share });
    }
    f += problem.flops[p];
    w += problem.weightBytes[p];
  }
  cuts.sort((a, b) => a.crossBytes - b.crossBytes || a.position - b.position);
  const opsets: Record<string, number> = {};
  for (const o of doc.model.opsetImport ?? []) opsets[o.domain || 'ai.onnx'] = int64ToNumber(o.version);
  return {
    name: doc.graph.name,
    irVersion: int64ToNumber(doc.model.irVersion),
    opsets,
    producer: [doc.model.producerName, doc.model.producerVersion].filter(Boolean).join(' '),
    inputs: index.graphInputs.map((i) => i.name!),
    outputs: index.graphOutputs.map((o) => o.name!),
    nodes: index.nodes.length,
    ops,
    parameters: doc.graph.initializer.reduce((s, t) => s + (t.header.dims ?? []).reduce<number>((a, d) => a * int64ToNumber(d), 1), 0),
    weightBytes: doc.graph.initializer.reduce((s, t) => s + tensorBytesLength(t.bytes), 0),
    flops: totalF,
    costDims: placedGraph.costDims,
    subgraphNodes: placed.filter((p) => index.hasSubgraph(p)).map((p) => `${index.nodes[p].opType} ${index.nodes[p].name ?? ''}`.trim()),
    statefulPairs: statefulPairs(index.graphInputs.map((i) => i.name!), index.graphOutputs.map((o) => o.name!)).length,
    cutPoints: countCutPoints(problem),
    candidateCuts: cuts.slice(0, options.top ?? 10).sort((a, b) => a.position - b.position),
  };
}
