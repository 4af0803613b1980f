/**
 * Tensors over HTTP for POST /v1/infer, in two encodings chosen by Content-Type / Accept:
 *
 * - JSON (`application/json`), for small tensors: `{"name": {"dtype": "float32", "dims": [1, 3], "data": [..]}}`;
 *   dtype is an onnxruntime name (float32, int64, ...) or an ONNX one (float, int64, ...); data is the flat
 *   row-major list of values (64-bit integers as numbers or decimal strings).
 * - Binary (`application/x-gridpipe-tensors`), for large ones: a sequence of frames, each a 4-byte big-endian
 *   length followed by that many bytes of a protobuf `gridpipe.v1.Tensor` (proto/grid.proto: name, ONNX dtype
 *   code, dims, raw little-endian bytes) — the grid's own wire encoding, no base64, no copies of the data.
 */
import ort from 'onnxruntime-node';
import { decodeTensor, encodeTensor, type WireTensor } from '../proto/wire.js';
import { wireToOrt, ortToWire } from '../net/exec/tensors.js';
import type { TensorMap } from '../net/exec/client.js';
import { dataTypeFromName, dataTypeFromOrt, ortTypeName } from '../fragments/onnx/dtype.js';
import { badRequest } from './errors.js';

export const TENSORS_MEDIA_TYPE = 'application/x-gridpipe-tensors';

/** Tensors by name: the one declaration is net/exec's. */
export type { TensorMap };

export interface JsonTensor { dtype: string; dims: number[]; data: (number | string | boolean)[] }

/** The onnxruntime type name for a dtype written either way, or undefined. */
function ortType(dtype: string): string | undefined {
  for (const code of [() => dataTypeFromOrt(dtype), () => dataTypeFromName(dtype)]) {
    try {
      const t = ortTypeName(code());
      if (t && t !== 'string') return t;
    } catch {
      // not this naming; try the other
    }
  }
  return undefined;
}

const ARRAYS: Record<string, (values: (number | string | boolean)[]) => ort.Tensor.DataType> = {
  float32: (v) => Float32Array.from(v as number[]), float64: (v) => Float64Array.from(v as number[]),
  int8: (v) => Int8Array.from(v as number[]), uint8: (v) => Uint8Array.from(v as number[]), bool: (v) => Uint8Array.from(v.map((x) => (x ? 1 : 0))),
  int16: (v) => Int16Array.from(v as number[]), uint16: (v) => Uint16Array.from(v as number[]),
  int32: (v) => Int32Array.from(v as number[]), uint32: (v) => Uint32Array.from(v as number[]),
  int64: (v) => BigInt64Array.from(v.map((x) => BigInt(x))), uint64: (v) => BigUint64Array.from(v.map((x) => BigInt(x))),
};

/** One JSON tensor as an onnxruntime tensor; 400 naming the tensor when it is malformed. */
export function tensorFromJson(name: string, value: unknown): ort.Tensor {
  const where = `inputs.${name}`;
  if (typeof value !== 'object' || value === null) throw badRequest(`${where} must be an object {dtype, dims, data}`, where, 'invalid_type');
  const { dtype, dims, data } = value as Record<string, unknown>;
  const type = typeof dtype === 'string' ? ortType(dtype) : undefined;
  if (!type || !ARRAYS[type]) throw badRequest(`${where}.dtype must be a numeric tensor type such as float32 or int64, got ${JSON.stringify(dtype)}`, `${where}.dtype`, 'invalid_type');
  if (!Array.isArray(dims) || dims.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
    throw badRequest(`${where}.dims must be an array of non-negative integers`, `${where}.dims`, 'invalid_type');
  }
  const count = (dims as number[]).reduce((a, d) => a * d, 1);
  if (!Array.isArray(data)) throw badRequest(`${where}.data must be a flat array of ${count} values`, `${where}.data`, 'invalid_type');
  if (data.length !== count) throw badRequest(`${where}.data holds ${data.length} values but dims [${(dims as number[]).join(', ')}] need ${count}`, `${where}.data`, 'invalid_value');
  const integer = /int/.test(type);
  for (const x of data) {
    const ok = type === 'bool' ? typeof x === 'boolean' || x === 0 || x === 1
      : integer ? (typeof x === 'number' && Number.isInteger(x)) || (typeof x === 'string' && /^-?\d+$/.test(x))
        : typeof x === 'number' && Number.isFinite(x);
    if (!ok) throw badRequest(`${where}.data has ${JSON.stringify(x)}, not a ${type} value`, `${where}.data`, 'invalid_value');
  }
  return new ort.Tensor(type as 'float32', ARRAYS[type](data as (number | string | boolean)[]) as Float32Array, dims as number[]);
}

/** An onnxruntime tensor as JSON (64-bit integers as numbers when exact, else strings). */
export function tensorToJson(t: ort.Tensor): JsonTensor {
  const values = Array.from(t.data as ArrayLike<number | bigint>, (x) => (typeof x === 'bigint' ? (Number.isSafeInteger(Number(x)) ? Number(x) : x.toString()) : x));
  return { dtype: t.type, dims: [...t.dims], data: t.type === 'bool' ? values.map((x) => x === 1) : values };
}

/** Binary frames → tensors; 400 on a malformed body. */
export function tensorsFromFrames(body: Uint8Array): TensorMap {
  const out: TensorMap = {};
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  for (let at = 0; at < body.byteLength;) {
    if (at + 4 > body.byteLength) throw badRequest(`binary tensors: ${body.byteLength - at} stray bytes at offset ${at} (each frame starts with a 4-byte length)`, null, 'invalid_body');
    const length = view.getUint32(at);
    at += 4;
    if (at + length > body.byteLength) throw badRequest(`binary tensors: a frame of ${length} bytes at offset ${at - 4} runs past the body's end`, null, 'invalid_body');
    let wire: WireTensor;
    try {
      wire = decodeTensor(body.subarray(at, at + length));
    } catch (err) {
      throw badRequest(`binary tensors: the frame at offset ${at - 4} is not a gridpipe.v1.Tensor (${(err as Error).message})`, null, 'invalid_body');
    }
    at += length;
    if (!wire.name) throw badRequest('binary tensors: a tensor has no name', null, 'invalid_body');
    if (out[wire.name]) throw badRequest(`binary tensors: "${wire.name}" appears twice`, wire.name, 'invalid_body');
    try {
      out[wire.name] = wireToOrt(wire);
    } catch (err) {
      throw badRequest(`binary tensors: ${(err as Error).message}`, wire.name, 'invalid_value');
    }
  }
  return out;
}

/** Tensors → binary frames. */
export function tensorsToFrames(tensors: TensorMap): Buffer {
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = encodeTensor(ortToWire(name, t));
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.byteLength);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}
