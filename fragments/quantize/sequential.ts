/**
 * Sequential GPTQ calibration (as the GPTQ paper and AutoGPTQ do it): each layer's input moment Σxxᵀ is measured on
 * the model whose earlier layers are already quantized, so a layer's rounding compensates the errors the layers
 * before it made, not an ideal full-precision input it will never see. The layers are put in stages by depth (a
 * layer's stage is the number of quantized layers on its longest path from the model inputs); stage by stage, the
 * model runs with every earlier stage's weights replaced by their quantized values (dequantized to fp32, so plain
 * onnxruntime runs it), the stage's inputs are measured, and its weights are quantized with those moments.
 * Embedding tables (Gather) are rounded to nearest as the rewrite stores them, from the first stage on.
 * The quantized values are computed with the same functions and arguments rewrite.ts uses when it writes the
 * fragments, so the weights written are the ones the later stages were calibrated against.
 */
import { int64ToNumber, type NodeProto } from '../../proto/onnx.js';
import { DataType } from '../onnx/dtype.js';
import type { ModelDoc, Weight } from '../onnx/model-doc.js';
import { loadTensorBytesSync } from '../onnx/tensor-bytes.js';
import { dequantizeRows, quantizeRows, transpose } from './blockwise.js';
import { gptqQuantizeRows, type InputMoment } from './gptq.js';

/** Bits and block of the scheme being calibrated for. */
export interface StagedScheme { bits: 4 | 8; block: number }

/** Measures the moments of `tensors` (graph tensors of `doc`) on `doc` as it is. */
export type MomentCollector = (doc: ModelDoc, tensors: string[]) => Promise<Map<string, InputMoment>>;

/** A layer to calibrate: a MatMul / Gemm whose weight is an fp32 matrix, or an embedding Gather (rounded, never calibrated). */
interface Layer {
  node: NodeProto;
  /** The data input whose moment calibrates it (absent for a Gather). */
  input?: string;
  source: Weight;
  /** 'rows': the source's rows run along the reduced axis; 'columns': its transpose's do. */
  layout: 'rows' | 'columns';
  /** The shape the node reads in `slot`: the source as stored, or transposed (a MatMul fed through a Transpose). */
  readsTransposed: boolean;
}

/** The input moments of every calibrated layer, each measured with the layers before it quantized. */
export async function sequentialMoments(doc: ModelDoc, tensors: readonly string[], scheme: StagedScheme, collect: MomentCollector): Promise<Map<string, InputMoment>> {
  const wanted = new Set(tensors);
  const layers = findLayers(doc, wanted);
  const stageOf = layerStages(doc, layers);
  const moments = new Map<string, InputMoment>();
  const replaced = new Map<NodeProto, Weight>();
  for (const layer of layers) if (!layer.input) replaced.set(layer.node, quantizedWeight(layer, scheme));
  const stages = Math.max(-1, ...layers.filter((l) => l.input).map((l) => stageOf.get(l.node)!)) + 1;
  for (let stage = 0; stage < stages; stage++) {
    const members = layers.filter((l) => l.input && stageOf.get(l.node) === stage);
    if (members.length === 0) continue;
    const measured = await collect(withWeights(doc, replaced), [...new Set(members.map((l) => l.input!))]);
    for (const [name, m] of measured) moments.set(name, m);
    for (const layer of members) replaced.set(layer.node, quantizedWeight(layer, scheme, moments.get(layer.input!)));
  }
  return moments;
}

function findLayers(doc: ModelDoc, wanted: Set<string>): Layer[] {
  const weights = new Map(doc.graph.initializer.map((w) => [w.header.name ?? '', w]));
  const producer = new Map<string, NodeProto>();
  for (const n of doc.graph.node) for (const o of n.output ?? []) producer.set(o, n);
  const matrix = (name: string | undefined): Weight | undefined => {
    const w = name === undefined ? undefined : weights.get(name);
    return w?.bytes && (w.header.dataType ?? 0) === DataType.FLOAT && (w.header.dims ?? []).length === 2 ? w : undefined;
  };
  const layers: Layer[] = [];
  for (const node of doc.graph.node) {
    if ((node.domain ?? '') !== '' && node.domain !== 'ai.onnx') continue;
    const [x, w] = node.input ?? [];
    if (node.opType === 'MatMul' && wanted.has(x)) {
      const direct = matrix(w);
      const t = direct ? undefined : producer.get(w);
      const perm = t?.attribute?.find((a) => a.name === 'perm')?.ints?.map((v) => int64ToNumber(v));
      const behind = t?.opType === 'Transpose' && (perm === undefined || (perm[0] === 1 && perm[1] === 0)) ? matrix(t.input?.[0]) : undefined;
      if (direct) layers.push({ node, input: x, source: direct, layout: 'columns', readsTransposed: false });
      else if (behind) layers.push({ node, input: x, source: behind, layout: 'rows', readsTransposed: true });
    } else if (node.opType === 'Gemm' && wanted.has(x)) {
      const source = matrix(w);
      const transB = node.attribute?.find((a) => a.name === 'transB');
      if (source) layers.push({ node, input: x, source, layout: transB && int64ToNumber(transB.i ?? 0) ? 'rows' : 'columns', readsTransposed: false });
    } else if (node.opType === 'Gather' && matrix(node.input?.[0])) {
      const axis = node.attribute?.find((a) => a.name === 'axis');
      if (!axis || int64ToNumber(axis.i ?? 0) === 0) layers.push({ node, source: matrix(node.input![0])!, layout: 'rows', readsTransposed: false });
    }
  }
  return layers;
}

/** Each calibrated layer's stage: how many calibrated layers lie on the longest path from the graph inputs to its input. */
function layerStages(doc: ModelDoc, layers: Layer[]): Map<NodeProto, number> {
  const calibrated = new Set(layers.filter((l) => l.input).map((l) => l.node));
  const depth = new Map<string, number>();
  const stages = new Map<NodeProto, number>();
  for (const node of doc.graph.node) { // ONNX nodes are in topological order
    const reached = Math.max(0, ...(node.input ?? []).map((i) => depth.get(i) ?? 0));
    if (calibrated.has(node)) stages.set(node, depth.get(node.input![0]) ?? 0);
    for (const o of node.output ?? []) depth.set(o, reached + (calibrated.has(node) ? 1 : 0));
  }
  return stages;
}

/** The layer's weight as rewrite.ts will store it (GPTQ with the moment, else rounded), dequantized, in the shape its node reads. */
function quantizedWeight(layer: Layer, scheme: StagedScheme, moment?: InputMoment): Weight {
  const dims = layer.source.header.dims!.map((d) => int64ToNumber(d));
  const raw = loadTensorBytesSync(layer.source.bytes!);
  const aligned = raw.byteOffset % 4 === 0 ? raw : new Uint8Array(raw);
  const source = new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
  const [rows, rowLength] = layer.layout === 'rows' ? [dims[0], dims[1]] : [dims[1], dims[0]];
  const values = layer.layout === 'rows' ? source : transpose(source, dims[0], dims[1]);
  let restored = values;
  const quantizable = rowLength >= 16 && (layer.input !== undefined || rowLength % scheme.block === 0);
  if (quantizable) {
    const q = moment?.k === rowLength ? gptqQuantizeRows(values, rows, rowLength, scheme.bits, scheme.block, moment) : quantizeRows(values, rows, rowLength, scheme.bits, scheme.block);
    restored = dequantizeRows(q, rows, rowLength, scheme.bits, scheme.block);
  }
  // Back to the node's view: rows layout is [rows, rowLength] as stored; the node reads the source or its transpose.
  const asStored = layer.layout === 'rows' ? restored : transpose(restored, rows, rowLength);
  const read = layer.readsTransposed ? transpose(asStored, dims[0], dims[1]) : asStored;
  const readDims = layer.readsTransposed ? [dims[1], dims[0]] : dims;
  const name = `${layer.source.header.name ?? ''}.quantized.${layer.node.name ?? layer.node.output?.[0] ?? ''}`;
  return { header: { name, dataType: DataType.FLOAT, dims: readDims }, bytes: { kind: 'inline', bytes: new Uint8Array(read.buffer, read.byteOffset, read.byteLength) } };
}

/** `doc` with each replaced node reading its quantized weight instead of the full-precision one. */
function withWeights(doc: ModelDoc, replaced: ReadonlyMap<NodeProto, Weight>): ModelDoc {
  const slotOf = (n: NodeProto): number => (n.opType === 'Gather' ? 0 : 1); // the weight input: Gather's table, MatMul / Gemm's B
  const node = doc.graph.node.map((n) => {
    const w = replaced.get(n);
    if (!w) return n;
    const input = [...(n.input ?? [])];
    input[slotOf(n)] = w.header.name ?? '';
    return { ...n, input };
  });
  return { ...doc, graph: { ...doc.graph, node, initializer: [...doc.graph.initializer, ...replaced.values()] } };
}
