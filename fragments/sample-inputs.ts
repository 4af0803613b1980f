/**
 * Seeded sample inputs for a model, as verification and benchmarks need them: floats in [-1, 1),
 * integer inputs in the valid range of the Gather they index (token ids below the vocabulary size),
 * attention masks of ones, position ids that continue from the KV-cache length.
 */
import ort from 'onnxruntime-node';
import { int64ToNumber } from '../proto/onnx.js';
import type { GraphIndex } from './analysis/graph.js';
import { resolveShape, type TensorInfo } from './analysis/infer.js';
import { dataTypeFromName, DataType, ortTypeName } from './onnx/dtype.js';
import { FragmentError } from './onnx/errors.js';
import { seededRandom } from './seeded-random.js';
import type { BoundaryTensor } from './partition.js';

/** Default sizes of symbolic dims for sample inputs: batch 1, KV-cache length 3, other dims 8. */
export function sampleDefaultDim(symbol: string): number {
  if (/batch/i.test(symbol)) return 1;
  if (/past/i.test(symbol)) return 3;
  return 8;
}

/** Upper bounds (exclusive) of integer inputs that index a Gather: the size of the gathered axis. */
export function integerInputBounds(index: GraphIndex, infos: Map<string, TensorInfo>): Map<string, number> {
  const bounds = new Map<string, number>();
  for (const input of index.graphInputs) {
    const name = input.name!;
    for (const pos of index.consumers.get(name) ?? []) {
      const node = index.nodes[pos];
      if (node.opType !== 'Gather' || node.input?.[1] !== name) continue;
      const axisAttr = node.attribute?.find((a) => a.name === 'axis');
      const axis = axisAttr ? int64ToNumber(axisAttr.i) : 0;
      const dataShape = infos.get(node.input[0])?.shape;
      if (!dataShape) continue;
      const dim = dataShape[axis < 0 ? dataShape.length + axis : axis];
      if (typeof dim === 'number' && dim > 0) bounds.set(name, Math.min(bounds.get(name) ?? dim, dim));
    }
  }
  return bounds;
}

export interface SampleOptions {
  dims?: Record<string, number>;
  shapes?: Record<string, number[]>;
  seed?: number;
  bounds?: Map<string, number>;
}

/** Builds one onnxruntime tensor per model input. */
export function sampleInputs(inputs: BoundaryTensor[], options: SampleOptions = {}): { feeds: Record<string, ort.Tensor>; dims: Record<string, number> } {
  const dims: Record<string, number> = { ...(options.dims ?? {}) };
  const fallback = (s: string): number => (dims[s] ??= sampleDefaultDim(s));
  const random = seededRandom(options.seed ?? 1234);
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of inputs) {
    const explicit = options.shapes?.[input.name];
    const shape = explicit ?? resolveShape((input.shape ?? []).map((d) => (d === null ? 1 : d)), dims, fallback);
    const code = dataTypeFromName(input.dtype);
    const type = ortTypeName(code);
    if (!type || type === 'string') throw new FragmentError('UNSUPPORTED', `input "${input.name}" has type ${input.dtype}, which sample inputs cannot be made for`);
    const count = shape.reduce((a, b) => a * b, 1);
    const pastLength = Object.entries(dims).find(([k]) => /past/i.test(k))?.[1] ?? 0;
    const value = (i: number): number => {
      if (/mask/i.test(input.name)) return 1;
      if (/position/i.test(input.name) && shape.length > 0) return pastLength + (i % shape[shape.length - 1]);
      if (code === DataType.BOOL) return random() < 0.5 ? 1 : 0;
      if (code === DataType.FLOAT || code === DataType.DOUBLE || code === DataType.FLOAT16) return random() * 2 - 1;
      const bound = options.bounds?.get(input.name) ?? 2;
      return Math.floor(random() * bound);
    };
    feeds[input.name] = new ort.Tensor(type as 'float32', makeArray(type, count, value), shape);
  }
  return { feeds, dims };
}

/** The sample inputs in a line: `name[1×8] int64, ...`, to say which inputs a model was run on. */
export function describeSampleInputs(feeds: Record<string, ort.Tensor>): string {
  return Object.entries(feeds).map(([name, t]) => `${name}[${t.dims.join('×')}] ${t.type}`).join(', ');
}

function makeArray(type: string, count: number, value: (i: number) => number): ort.Tensor.DataType {
  switch (type) {
    case 'float32': return Float32Array.from({ length: count }, (_, i) => value(i));
    case 'float64': return Float64Array.from({ length: count }, (_, i) => value(i));
    case 'float16': return Uint16Array.from({ length: count }, (_, i) => toHalf(value(i)));
    case 'int64': return BigInt64Array.from({ length: count }, (_, i) => BigInt(value(i)));
    case 'uint64': return BigUint64Array.from({ length: count }, (_, i) => BigInt(value(i)));
    case 'int32': return Int32Array.from({ length: count }, (_, i) => value(i));
    case 'uint32': return Uint32Array.from({ length: count }, (_, i) => value(i));
    case 'int16': return Int16Array.from({ length: count }, (_, i) => value(i));
    case 'uint16': return Uint16Array.from({ length: count }, (_, i) => value(i));
    case 'int8': return Int8Array.from({ length: count }, (_, i) => value(i));
    case 'uint8': case 'bool': return Uint8Array.from({ length: count }, (_, i) => value(i));
    default: throw new FragmentError('UNSUPPORTED', `no sample data for ${type}`);
  }
}

/** IEEE 754 half-precision bits of a number (round to nearest). */
function toHalf(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  const mant = x & 0x7fffff;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | Math.round(mant / 8192);
}
