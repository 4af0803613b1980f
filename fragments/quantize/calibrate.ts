/**
 * Calibration for GPTQ (gptq.ts): runs the full-precision model in onnxruntime over calibration token sequences
 * with the inputs of the layers to be quantized exposed as extra outputs, and sums each input's second moment
 * Σ xxᵀ. Only language models with a decoder's inputs (input_ids, optional attention_mask / position_ids /
 * empty KV cache) are calibrated; the model is loaded whole, so this is for models that fit in memory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import ort from 'onnxruntime-node';
import os from 'node:os';
import path from 'node:path';
import { int64ToNumber } from '../../proto/onnx.js';
import { DataType } from '../onnx/dtype.js';
import type { ModelDoc } from '../onnx/model-doc.js';
import { readModel } from '../onnx/read.js';
import { writeModel } from '../onnx/write.js';
import { FragmentError } from '../onnx/errors.js';
import type { InputMoment } from './gptq.js';
import { sequentialMoments, type StagedScheme } from './sequential.js';

/** `model fragment --calibrate FILE`: windows of the file's tokens at this seed (64 tokens each, as the prompt set). */
export const CALIBRATION_SEED = 5;
export const CALIBRATION_WINDOWS = 32;

/**
 * What calibrated the moments (recorded in the manifest) and the sequences themselves. `sequential`: each layer
 * calibrated on the outputs of the already quantized layers before it, fitted to the full-precision outputs
 * (sequential.ts; not yet the default: see docs/quantization.md for what it measured).
 */
export interface Calibration { sequences: number[][]; source: string; sequential?: boolean }

/** Σ xxᵀ of each named tensor (its last axis is the layer input) over every position of every sequence. */
export async function collectInputMoments(modelPath: string, tensors: string[], calibration: Calibration): Promise<Map<string, InputMoment>> {
  return momentsOnDoc(readModel(modelPath), tensors, calibration);
}

/**
 * As collectInputMoments, on a model held in memory (sequential.ts runs it with earlier layers quantized). With
 * `reference` (the full-precision model), each moment also gets `cross`: Σ x̃xᵀ of this model's input x̃ and the
 * reference's x at the same positions.
 */
async function momentsOnDoc(doc: ModelDoc, tensors: string[], calibration: Calibration, reference?: ModelDoc): Promise<Map<string, InputMoment>> {
  const inputs = new Set(doc.graph.input.map((i) => i.name ?? ''));
  const wanted = [...new Set(tensors)].filter((t) => !inputs.has(t));
  const moments = new Map<string, InputMoment>();
  if (wanted.length === 0 || calibration.sequences.length === 0) return moments;
  const outputs = new Set(doc.graph.output.map((o) => o.name ?? ''));
  const exposed: ModelDoc = {
    ...doc,
    graph: { ...doc.graph, output: [...doc.graph.output, ...wanted.filter((t) => !outputs.has(t)).map((name) => ({ name, type: { tensorType: { elemType: DataType.FLOAT } } }))] },
  };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-calibrate-'));
  try {
    const open = async (model: ModelDoc, file: string): Promise<ort.InferenceSession> => {
      await writeModel({ ...model, graph: { ...model.graph, output: exposed.graph.output } }, path.join(dir, file));
      return ort.InferenceSession.create(path.join(dir, file), { logSeverityLevel: 4 });
    };
    const session = await open(doc, 'exposed.onnx');
    const referenceSession = reference ? await open(reference, 'reference.onnx') : undefined;
    try {
      for (const ids of calibration.sequences) {
        const result = await session.run(decoderFeeds(doc, ids), wanted);
        const exact = referenceSession ? await referenceSession.run(decoderFeeds(doc, ids), wanted) : undefined;
        for (const name of wanted) {
          const t = result[name];
          if (t.type !== 'float32') continue;
          const k = t.dims[t.dims.length - 1];
          let m = moments.get(name);
          if (!m) moments.set(name, (m = { k, sum: new Float64Array(k * k), positions: 0, ...(exact ? { cross: new Float64Array(k * k) } : {}) }));
          if (exact) accumulateCross(m, t.data as Float32Array, exact[name].data as Float32Array);
          accumulate(m, t.data as Float32Array);
        }
      }
    } finally {
      await session.release();
      await referenceSession?.release();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  for (const m of moments.values()) mirrorUpper(m);
  return moments;
}

/** Adds the rows of `x` (positions × k) into the upper triangle of the moment. */
function accumulate(m: InputMoment, x: Float32Array): void {
  const { k, sum } = m;
  for (let row = 0; row < x.length; row += k) {
    for (let i = 0; i < k; i++) {
      const xi = x[row + i];
      if (xi === 0) continue;
      const at = i * k;
      for (let j = i; j < k; j++) sum[at + j] += xi * x[row + j];
    }
    m.positions++;
  }
}

/** Adds Σ x̃ xᵀ over the rows of `own` (x̃) and `exact` (x), positions × k each, into the moment's cross term. */
function accumulateCross(m: InputMoment, own: Float32Array, exact: Float32Array): void {
  const { k } = m;
  const cross = m.cross!;
  for (let row = 0; row < own.length; row += k) {
    for (let i = 0; i < k; i++) {
      const xi = own[row + i];
      if (xi === 0) continue;
      const at = i * k;
      for (let j = 0; j < k; j++) cross[at + j] += xi * exact[row + j];
    }
  }
}

function mirrorUpper(m: InputMoment): void {
  for (let i = 0; i < m.k; i++) for (let j = i + 1; j < m.k; j++) m.sum[j * m.k + i] = m.sum[i * m.k + j];
}

/** One full-sequence forward pass with an empty KV cache, from the graph's declared inputs. */
function decoderFeeds(doc: ModelDoc, ids: number[]): Record<string, ort.Tensor> {
  const initializers = new Set(doc.graph.initializer.map((w) => w.header.name ?? ''));
  const int64 = (values: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of doc.graph.input) {
    const name = input.name ?? '';
    if (initializers.has(name)) continue;
    if (name === 'input_ids') feeds[name] = int64(ids);
    else if (name === 'attention_mask') feeds[name] = int64(ids.map(() => 1));
    else if (name === 'position_ids') feeds[name] = int64(ids.map((_, i) => i));
    else if (input.type?.tensorType?.elemType === DataType.FLOAT && input.type.tensorType.shape) {
      const dims = (input.type.tensorType.shape.dim ?? []).map((d, i) => (d.dimValue !== undefined && d.dimValue !== null && !d.dimParam ? int64ToNumber(d.dimValue) : i === 0 ? 1 : 0));
      if (!dims.includes(0)) throw new FragmentError('BAD_ARGUMENT', `calibration runs decoders only; input "${name}" is not an empty KV cache`);
      feeds[name] = new ort.Tensor('float32', new Float32Array(0), dims);
    } else throw new FragmentError('BAD_ARGUMENT', `calibration runs decoders only; input "${name}" is not input_ids, attention_mask, position_ids or a KV cache`);
  }
  if (!feeds.input_ids) throw new FragmentError('BAD_ARGUMENT', 'calibration needs a language model with an input_ids input');
  return feeds;
}

/**
 * The moments of every MatMul / Gemm data input in the fragments (the layers quantizeFragmentDoc may rewrite). With
 * `calibration.sequential` and the scheme, sequentially (sequential.ts): each layer measured on the model with the
 * layers before it quantized, with its cross moment against the full-precision model; else all on the full-precision model.
 */
export async function calibrationMoments(modelPath: string, fragments: { doc: ModelDoc }[], calibration: Calibration, scheme?: StagedScheme): Promise<Map<string, InputMoment>> {
  const names: string[] = [];
  for (const f of fragments) {
    const weights = new Set(f.doc.graph.initializer.map((w) => w.header.name ?? ''));
    const transposedWeights = new Set(f.doc.graph.node.filter((n) => n.opType === 'Transpose' && weights.has(n.input?.[0] ?? '')).map((n) => n.output![0]));
    for (const n of f.doc.graph.node) {
      if ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx') continue;
      const weight = n.input?.[1] ?? '';
      if ((n.opType === 'MatMul' || n.opType === 'Gemm') && n.input?.[0] && (weights.has(weight) || transposedWeights.has(weight))) names.push(n.input[0]);
    }
  }
  if (!scheme || !calibration.sequential) return collectInputMoments(modelPath, names, calibration);
  const full = readModel(modelPath);
  return sequentialMoments(full, names, scheme, (doc, tensors) => momentsOnDoc(doc, tensors, calibration, full));
}
