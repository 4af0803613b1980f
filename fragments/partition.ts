/**
 * The partitioner: from a cut plan, one standalone ONNX model per fragment. A fragment holds its placed
 * nodes plus copies of the static nodes and weights they need; its inputs are the graph inputs it reads
 * and the tensors it reads from earlier fragments; its outputs are what later fragments read and the
 * graph outputs it produces. Weights keep pointing at their source bytes, so writing streams them.
 */
import { int64ToNumber, type TensorShapeDimension, type ValueInfoProto } from '../proto/onnx.js';
import { FragmentError } from './onnx/errors.js';
import { tensorBytesLength, type ModelDoc, type Weight } from './onnx/model-doc.js';
import type { Dim, TensorInfo } from './analysis/infer.js';
import type { PlacedGraph } from './cut-problem.js';
import type { CutPlan } from './planner.js';
import { statefulPairs, type StatefulPair } from './stateful.js';
import { dataTypeName } from './onnx/dtype.js';

/** A tensor at a fragment boundary, as the manifest describes it. */
export interface BoundaryTensor {
  name: string;
  dtype: string;
  /** Dims: numbers, symbols, or null where unknown; absent when the rank is unknown. */
  shape?: (number | string | null)[];
}
export interface FragmentInput extends BoundaryTensor {
  /** 'graph' for a model input, else the index of the fragment that produces it. */
  from: 'graph' | number;
}
export interface FragmentOutput extends BoundaryTensor {
  /** Later fragments that read it. */
  to: number[];
  /** Whether it is an output of the whole model. */
  graphOutput: boolean;
}

export interface FragmentModel {
  index: number;
  doc: ModelDoc;
  inputs: FragmentInput[];
  outputs: FragmentOutput[];
  flops: number;
  weightBytes: number;
  nodeCount: number;
  ops: Record<string, number>;
  stateful: StatefulPair[];
}

/** Splits the graph along the plan into fragment models. */
export function partition(placedGraph: PlacedGraph, plan: CutPlan): FragmentModel[] {
  const { index, infos, placed, support } = placedGraph;
  const doc = index.doc;
  const k = plan.fragments.length;
  const fragmentOfPlaced = new Int32Array(placed.length);
  plan.fragments.forEach((f, i) => { for (let p = f.start; p < f.end; p++) fragmentOfPlaced[p] = i; });
  const fragmentOfNode = new Map<number, number>();
  placed.forEach((pos, i) => fragmentOfNode.set(pos, fragmentOfPlaced[i]));

  const graphInputNames = new Set(index.graphInputs.map((i) => i.name!));
  const graphOutputNames = new Set(index.graphOutputs.map((o) => o.name!));
  const originalInfo = new Map<string, ValueInfoProto>();
  for (const v of [...doc.graph.valueInfo, ...doc.graph.input, ...doc.graph.output]) if (v.name) originalInfo.set(v.name, v);

  // Graph outputs that no placed node produces (made by static nodes or straight from weights) go to the last fragment.
  const extraStaticOutputs: { weights: Set<string>; statics: Set<number> } = { weights: new Set(), statics: new Set() };
  for (const o of index.graphOutputs) {
    const name = o.name!;
    if (graphInputNames.has(name)) throw new FragmentError('UNSUPPORTED', `graph output "${name}" is also a graph input; nothing computes it`);
    const producer = index.producer.get(name);
    if (producer === undefined) { extraStaticOutputs.weights.add(name); continue; }
    if (index.staticNodes.has(producer)) collectStatic(producer, extraStaticOutputs);
  }
  function collectStatic(pos: number, into: { weights: Set<string>; statics: Set<number> }): void {
    if (into.statics.has(pos)) return;
    into.statics.add(pos);
    for (const input of index.nodeInputs[pos]) {
      if (index.weights.has(input)) into.weights.add(input);
      const p = index.producer.get(input);
      if (p !== undefined && index.staticNodes.has(p)) collectStatic(p, into);
    }
  }

  const pairs = statefulPairs([...graphInputNames], [...graphOutputNames]);
  return plan.fragments.map((range, fi) => {
    const nodeSet = new Set<number>();
    const weightSet = new Set<string>();
    for (let p = range.start; p < range.end; p++) {
      nodeSet.add(placed[p]);
      for (const s of support[p].statics) nodeSet.add(s);
      for (const w of support[p].weights) weightSet.add(w);
    }
    if (fi === k - 1) {
      for (const s of extraStaticOutputs.statics) nodeSet.add(s);
      for (const w of extraStaticOutputs.weights) weightSet.add(w);
    }
    const positions = [...nodeSet].sort((a, b) => a - b);
    const produced = new Set<string>();
    for (const pos of positions) for (const o of index.nodes[pos].output ?? []) if (o) produced.add(o);

    // Inputs: graph inputs in their original order, then tensors from earlier fragments in producer order.
    const reads = new Set<string>();
    for (const pos of positions) for (const i of index.nodeInputs[pos]) reads.add(i);
    const inputs: FragmentInput[] = [];
    const inputInfos: ValueInfoProto[] = [];
    for (const gi of index.graphInputs) {
      if (!reads.has(gi.name!)) continue;
      inputs.push({ ...boundary(gi.name!, infos, originalInfo), from: 'graph' });
      inputInfos.push(gi);
    }
    const crossing = [...reads]
      .filter((t) => !produced.has(t) && !weightSet.has(t) && !graphInputNames.has(t))
      .sort((a, b) => (index.producer.get(a) ?? 0) - (index.producer.get(b) ?? 0));
    for (const t of crossing) {
      const producer = index.producer.get(t);
      const from = producer === undefined ? undefined : fragmentOfNode.get(producer);
      if (from === undefined || from >= fi) throw new Error(`internal: fragment ${fi} reads "${t}", which no earlier fragment produces`);
      const b = boundary(t, infos, originalInfo);
      inputs.push({ ...b, from });
      inputInfos.push(valueInfoFor(t, infos, originalInfo));
    }

    // Outputs: graph outputs made here (original order), then tensors later fragments read.
    const outputs: FragmentOutput[] = [];
    const outputInfos: ValueInfoProto[] = [];
    const readersOf = (t: string): number[] => {
      const set = new Set<number>();
      for (const pos of index.consumers.get(t) ?? []) {
        const f = fragmentOfNode.get(pos);
        if (f !== undefined && f > fi) set.add(f);
      }
      return [...set].sort((a, b) => a - b);
    };
    for (const go of index.graphOutputs) {
      const name = go.name!;
      const producerPos = index.producer.get(name);
      const owner = producerPos !== undefined && fragmentOfNode.has(producerPos) ? fragmentOfNode.get(producerPos) : k - 1;
      if (owner !== fi) continue;
      outputs.push({ ...boundary(name, infos, originalInfo), to: readersOf(name), graphOutput: true });
      outputInfos.push(go);
    }
    for (const pos of positions) {
      if (fragmentOfNode.get(pos) !== fi) continue;
      for (const o of index.nodes[pos].output ?? []) {
        if (!o || graphOutputNames.has(o)) continue;
        const to = readersOf(o);
        if (to.length === 0) continue;
        outputs.push({ ...boundary(o, infos, originalInfo), to, graphOutput: false });
        outputInfos.push(valueInfoFor(o, infos, originalInfo));
      }
    }

    const weights: Weight[] = doc.graph.initializer.filter((w) => weightSet.has(w.header.name!));
    const irVersion = int64ToNumber(doc.model.irVersion);
    if (irVersion < 4) {
      // IR 3 wants every initializer listed among the graph inputs.
      for (const w of weights) {
        inputInfos.push({ name: w.header.name, type: { tensorType: { elemType: w.header.dataType, shape: { dim: (w.header.dims ?? []).map((d) => ({ dimValue: d })) } } } });
      }
    }
    const boundaryNames = new Set([...inputInfos, ...outputInfos].map((v) => v.name));
    const valueInfo = doc.graph.valueInfo.filter((v) => v.name && produced.has(v.name) && !boundaryNames.has(v.name));
    const nodes = positions.map((pos) => index.nodes[pos]);
    const ops: Record<string, number> = {};
    for (const n of nodes) ops[n.opType ?? '?'] = (ops[n.opType ?? '?'] ?? 0) + 1;
    const fragmentDoc: ModelDoc = {
      model: {
        ...doc.model,
        metadataProps: [
          ...(doc.model.metadataProps ?? []),
          { key: 'gridpipe.fragment', value: `${fi}/${k}` },
        ],
      },
      graph: {
        name: `${doc.graph.name || 'graph'}_fragment_${fi}`,
        node: nodes,
        input: inputInfos,
        output: outputInfos,
        valueInfo,
        initializer: weights,
        rest: { ...doc.graph.rest },
      },
    };
    const inputNames = new Set(inputs.map((i) => i.name));
    const outputNames = new Set(outputs.map((o) => o.name));
    return {
      index: fi,
      doc: fragmentDoc,
      inputs,
      outputs,
      flops: range.flops,
      weightBytes: weights.reduce((s, w) => s + tensorBytesLength(w.bytes), 0),
      nodeCount: nodes.length,
      ops,
      stateful: pairs.filter((p) => inputNames.has(p.input) && outputNames.has(p.output)),
    };
  });
}

/** A tensor of the indexed graph as a fragment boundary (for fragments that add outputs after partitioning). */
export function boundaryOf(name: string, infos: Map<string, TensorInfo>, index: { doc: ModelDoc }): BoundaryTensor {
  return boundary(name, infos, originalInfos(index.doc));
}

/** A tensor of the indexed graph as a fragment's ValueInfo (see boundaryOf). */
export function valueInfoOf(name: string, infos: Map<string, TensorInfo>, index: { doc: ModelDoc }): ValueInfoProto {
  return valueInfoFor(name, infos, originalInfos(index.doc));
}

function originalInfos(doc: ModelDoc): Map<string, ValueInfoProto> {
  const original = new Map<string, ValueInfoProto>();
  for (const v of [...doc.graph.valueInfo, ...doc.graph.input, ...doc.graph.output]) if (v.name) original.set(v.name, v);
  return original;
}

function boundary(name: string, infos: Map<string, TensorInfo>, original: Map<string, ValueInfoProto>): BoundaryTensor {
  const orig = original.get(name)?.type?.tensorType;
  const info = infos.get(name);
  const dtype = orig?.elemType || info?.dtype;
  if (!dtype) throw new Error(`internal: no element type for boundary tensor "${name}"`);
  const shape = orig?.shape ? orig.shape.dim?.map(dimOf) ?? [] : info?.shape?.map((d) => d);
  return shape ? { name, dtype: dataTypeName(dtype), shape } : { name, dtype: dataTypeName(dtype) };
}

function dimOf(d: TensorShapeDimension): number | string | null {
  if (d.dimParam) return d.dimParam;
  if (d.dimValue !== undefined && d.dimValue !== null) return int64ToNumber(d.dimValue);
  return null;
}

function valueInfoFor(name: string, infos: Map<string, TensorInfo>, original: Map<string, ValueInfoProto>): ValueInfoProto {
  const orig = original.get(name);
  if (orig?.type?.tensorType?.elemType) return orig;
  const info = infos.get(name);
  if (!info?.dtype) throw new Error(`internal: no element type for boundary tensor "${name}"`);
  const tensorType: { elemType: number; shape?: { dim: TensorShapeDimension[] } } = { elemType: info.dtype };
  if (info.shape) tensorType.shape = { dim: info.shape.map((d: Dim) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return { name, type: { tensorType } };
}
