/**
 * onnxruntime tensors ↔ wire tensors without avoidable copies. A decoded wire tensor's bytes are a view into
 * the received frame; they become a typed array over the same memory when their offset is aligned to the
 * element size, and are copied only when it is not (a protobuf `bytes` field may start at any offset). A tensor
 * that travelled compressed (fp16, int8 blocks: wire-compression.ts) is decoded back to float32 here.
 */
import ort from 'onnxruntime-node';
import type { WireTensor } from '../../proto/grid.js';
import { dataTypeFromOrt, dataTypeName, ortTypeName } from '../../fragments/onnx/dtype.js';
import { ExecError } from './errors.js';
import { decodeFloats } from './wire-compression.js';

export type TypedArrayCtor = {
  new (length: number): ort.Tensor.DataType & ArrayBufferView;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): ort.Tensor.DataType & ArrayBufferView;
  readonly BYTES_PER_ELEMENT: number;
};

/** Typed array used by onnxruntime-node for each tensor type it can carry (strings excluded). */
export const ARRAYS: Record<string, TypedArrayCtor> = {
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
  if (t.encoding) {
    if (type !== 'float32') throw new ExecError('BAD_REQUEST', `${what}: wire encoding ${t.encoding} on a ${type} tensor (only float32 travels compressed)`);
    return new ort.Tensor('float32', decodeFloats(t.data ?? new Uint8Array(0), t.encoding, count, what), t.dims.slice());
  }
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
