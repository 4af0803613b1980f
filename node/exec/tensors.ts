/**
 * onnxruntime tensors ↔ wire tensors without avoidable copies. A decoded wire tensor's bytes are a view into
 * the received frame; they become a typed array over the same memory when their offset is aligned to the
 * element size, and are copied only when it is not (a protobuf `bytes` field may start at any offset).
 */
import ort from 'onnxruntime-node';
import type { WireTensor } from '../../proto/grid.js';
import { dataTypeFromOrt, dataTypeName, ortTypeName } from '../../fragments/onnx/dtype.js';
import { sampleToken, topIndices } from '../../scheduler/sampling.js';
import { ExecError } from './errors.js';
import type { WireSampling } from './codec.js';

type TypedArrayCtor = {
  new (length: number): ort.Tensor.DataType & ArrayBufferView;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): ort.Tensor.DataType & ArrayBufferView;
  readonly BYTES_PER_ELEMENT: number;
};

/** Typed array used by onnxruntime-node for each tensor type it can carry (strings excluded). */
const ARRAYS: Record<string, TypedArrayCtor> = {
  float32: Float32Array as unknown as TypedArrayCtor,
  float64: Float64Array as unknown as TypedArrayCtor,
  float16: Uint16Array as unknown as TypedArrayCtor,
  int8: Int8Array as unknown as TypedArrayCtor,
  uint8: Uint8Array as unknown as TypedArrayCtor,
  bool: Uint8Array as unknown as TypedArrayCtor,
  int16: Int16Array as unknown as TypedArrayCtor,
  uint16: Uint16Array as unknown as TypedArrayCtor,
  int32: Int32Array as unknown as TypedArrayCtor,
  uint32: Uint32Array as unknown as TypedArrayCtor,
  int64: BigInt64Array as unknown as TypedArrayCtor,
  uint64: BigUint64Array as unknown as TypedArrayCtor,
};

/** ONNX dtype code by onnxruntime type name (a lookup per tensor on the hot path). */
const CODES = new Map<string, number>(Object.keys(ARRAYS).map((t) => [t, dataTypeFromOrt(t)]));

/** Counters of copies made because bytes arrived unaligned (for tests and profiling). */
export const tensorCopyStats = { aligned: 0, copied: 0 };

/** The onnxruntime type name for an ONNX dtype code, or an ExecError BAD_REQUEST when it cannot travel. */
export function ortTypeOf(dtype: number, what: string): ort.Tensor.Type {
  const type = ortTypeName(dtype);
  if (!type || !ARRAYS[type]) throw new ExecError('BAD_REQUEST', `${what}: dtype ${dataTypeName(dtype)} (${dtype}) cannot be carried by this node`);
  return type as ort.Tensor.Type;
}

/** Elements in a tensor of these dims. */
export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** Bytes taken by one element of an onnxruntime type. */
export function elementBytes(type: string): number {
  const ctor = ARRAYS[type];
  if (!ctor) throw new ExecError('BAD_REQUEST', `tensor type ${type} cannot be carried by this node`);
  return ctor.BYTES_PER_ELEMENT;
}

/**
 * A wire tensor as an onnxruntime tensor: zero-copy when its bytes are aligned, else one copy. Throws
 * ExecError BAD_REQUEST when the dtype cannot be carried, a dim is invalid or the byte count does not match.
 */
export function wireToOrt(t: WireTensor): ort.Tensor {
  const what = `tensor "${t.name}"`;
  const type = ortTypeOf(t.dtype, what);
  const ctor = ARRAYS[type];
  for (const d of t.dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new ExecError('BAD_REQUEST', `${what}: dim ${d} is not a non-negative integer`);
  }
  const count = elementCount(t.dims);
  const size = ctor.BYTES_PER_ELEMENT;
  const data = t.data ?? new Uint8Array(0);
  if (data.byteLength !== count * size) {
    throw new ExecError('BAD_REQUEST', `${what}: ${data.byteLength} bytes for dims [${t.dims.join(', ')}] of ${type} (expected ${count * size})`);
  }
  let array: ort.Tensor.DataType & ArrayBufferView;
  if (data.byteOffset % size === 0) {
    array = new ctor(data.buffer, data.byteOffset, count);
    tensorCopyStats.aligned++;
  } else {
    array = new ctor(count);
    new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(data);
    tensorCopyStats.copied++;
  }
  return new ort.Tensor(type as 'float32', array as Float32Array, t.dims.slice());
}

/** An onnxruntime tensor as a wire tensor; its bytes are a view of the tensor's memory (no copy). */
export function ortToWire(name: string, tensor: ort.Tensor): WireTensor {
  if (tensor.type === 'string') throw new ExecError('BAD_REQUEST', `tensor "${name}": string tensors cannot travel`);
  const data = tensor.data as ArrayBufferView;
  return {
    name,
    dtype: CODES.get(tensor.type) ?? dataTypeFromOrt(tensor.type),
    dims: tensor.dims.slice(),
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

/** Bytes held by a tensor's data. */
export function tensorBytes(tensor: ort.Tensor): number {
  return (tensor.data as ArrayBufferView).byteLength;
}

/** A tensor with no elements along `axis` (the empty KV cache before the first step). */
export function emptyTensor(type: ort.Tensor.Type, dims: number[]): ort.Tensor {
  const ctor = ARRAYS[type];
  if (!ctor) throw new ExecError('INTERNAL', `cannot make an empty ${type} tensor`);
  return new ort.Tensor(type as 'float32', new ctor(elementCount(dims)) as Float32Array, dims);
}

/** The last row of `tensor` along its second-to-last axis ([..., rows, cols] -> [..., 1, cols]; a copy). */
export function lastRow(tensor: ort.Tensor, name: string): ort.Tensor {
  const rank = tensor.dims.length;
  if (rank < 2) throw new ExecError('BAD_REQUEST', `output "${name}" has rank ${rank}; last_row_only needs rank 2 or more`);
  const rows = tensor.dims[rank - 2];
  return rows <= 1 ? tensor : sliceAxis(tensor, rank - 2, rows - 1, rows);
}

/**
 * The token drawn from each last-axis row of `row` ([..., 1, cols]) by the client's sampler (same code, same
 * settings, same position: the token the client would have drawn from the row), as int64 [..., 1, 1].
 */
export function sampledRows(row: ort.Tensor, sampling: WireSampling, name: string): ort.Tensor {
  if (row.type !== 'float32') throw new ExecError('BAD_REQUEST', `sample needs a float32 output; "${name}" is ${row.type}`);
  const cols = row.dims[row.dims.length - 1];
  const outer = elementCount(row.dims.slice(0, -1));
  const data = row.data as Float32Array;
  const ids = new BigInt64Array(outer);
  for (let o = 0; o < outer; o++) ids[o] = BigInt(sampleToken(data.subarray(o * cols, (o + 1) * cols), sampling.position, sampling));
  return new ort.Tensor('int64', ids, [...row.dims.slice(0, -1), 1]);
}

/**
 * The k largest entries of each last-axis row of `row` ([..., 1, cols]), in order (ties: the lower index
 * first, as argmax and the sampler order them): values (same dtype) and their indices (int64), [..., 1, k].
 */
export function topEntries(row: ort.Tensor, k: number, name: string): { values: ort.Tensor; indices: ort.Tensor } {
  if (row.type !== 'float32') throw new ExecError('BAD_REQUEST', `top_k needs a float32 output; "${name}" is ${row.type}`);
  const cols = row.dims[row.dims.length - 1];
  const take = Math.min(k, cols);
  const outer = elementCount(row.dims.slice(0, -1));
  const data = row.data as Float32Array;
  const values = new Float32Array(outer * take);
  const indices = new BigInt64Array(outer * take);
  for (let o = 0; o < outer; o++) {
    const base = o * cols;
    topIndices(data.subarray(base, base + cols), take).forEach((i, n) => { values[o * take + n] = data[base + i]; indices[o * take + n] = BigInt(i); });
  }
  const dims = [...row.dims.slice(0, -1), take];
  return { values: new ort.Tensor('float32', values, dims), indices: new ort.Tensor('int64', indices, dims) };
}

/** The first `length` entries of `tensor` along `axis` (a copy; used to roll a KV cache back). */
export function truncateAxis(tensor: ort.Tensor, axis: number, length: number): ort.Tensor {
  const old = tensor.dims[axis];
  if (length === old) return tensor;
  if (length > old) throw new ExecError('INTERNAL', `cannot truncate axis ${axis} of length ${old} to ${length}`);
  return sliceAxis(tensor, axis, 0, length);
}

/** Entries [from, to) of `tensor` along `axis`, as a new tensor (a copy). */
function sliceAxis(tensor: ort.Tensor, axis: number, from: number, to: number): ort.Tensor {
  const ctor = ARRAYS[tensor.type];
  if (!ctor) throw new ExecError('INTERNAL', `cannot slice a ${tensor.type} tensor`);
  const dims = tensor.dims.slice();
  const old = dims[axis];
  dims[axis] = to - from;
  const inner = elementCount(dims.slice(axis + 1));
  const outer = elementCount(dims.slice(0, axis));
  const src = tensor.data as unknown as { subarray(a: number, b: number): ArrayLike<number | bigint> };
  const out = new ctor(elementCount(dims)) as unknown as { set(a: ArrayLike<number | bigint>, offset: number): void };
  const block = (to - from) * inner;
  for (let o = 0; o < outer; o++) out.set(src.subarray((o * old + from) * inner, (o * old + from) * inner + block), o * block);
  return new ort.Tensor(tensor.type as 'float32', out as unknown as Float32Array, dims);
}
