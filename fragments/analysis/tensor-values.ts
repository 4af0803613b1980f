/**
 * Values of small constant tensors (initializers, Constant nodes), read for shape inference: numbers of
 * the numeric and boolean types, from typed fields, inline bytes or a short synchronous file read.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { int64ToNumber, type Int64, type TensorProto } from '../../proto/onnx.js';
import type { TensorBytes } from '../onnx/model-doc.js';
import { DataType } from '../onnx/dtype.js';
import type { Dim } from './symbolic.js';

/** A small tensor's value: numeric shape and row-major elements (a symbolic dim, or null when unknown). */
export interface TensorValue {
  shape: number[];
  data: (Dim | null)[];
}

/** Largest element count whose values are tracked. */
export const MAX_VALUE_ELEMENTS = 64;
/** Largest file range read to get a constant's value. */
const MAX_FILE_READ = 64 * 1024;

const INTEGER_TYPES = new Set<number>([
  DataType.UINT8, DataType.INT8, DataType.UINT16, DataType.INT16, DataType.INT32, DataType.INT64,
  DataType.UINT32, DataType.UINT64, DataType.BOOL,
]);
const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);

export function isIntegerType(dtype: number | undefined): boolean { return dtype !== undefined && INTEGER_TYPES.has(dtype); }
export function isFloatType(dtype: number | undefined): boolean { return dtype !== undefined && FLOAT_TYPES.has(dtype); }
/** Types whose values are tracked. */
export function isTrackedType(dtype: number | undefined): boolean { return isIntegerType(dtype) || isFloatType(dtype); }

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The value of a tensor given by its header and, optionally, its raw bytes held elsewhere; undefined
 * when it is too large, of an untracked type, or its data cannot be read here.
 */
export function readTensorValue(header: TensorProto, bytes?: TensorBytes): TensorValue | undefined {
  const dtype = header.dataType ?? 0;
  if (!isTrackedType(dtype)) return undefined;
  const shape = (header.dims ?? []).map((d) => int64ToNumber(d));
  if (shape.some((d) => !Number.isFinite(d) || d < 0)) return undefined;
  const count = elementCount(shape);
  if (count > MAX_VALUE_ELEMENTS) return undefined;
  if (count === 0) return { shape, data: [] };

  let raw: Uint8Array | undefined;
  if (bytes) {
    if (bytes.kind === 'inline') raw = bytes.bytes;
    else if (bytes.kind === 'file') raw = readRange(bytes.path, bytes.offset, bytes.length);
    else return undefined;
    if (!raw) return undefined;
  } else if (header.rawData && header.rawData.length > 0) {
    raw = header.rawData;
  } else if (header.dataLocation === 1) {
    return undefined; // external data that nobody resolved for us
  }

  const data = raw ? decodeRaw(dtype, raw, count) : decodeTyped(dtype, header, count);
  return data ? { shape, data } : undefined;
}

function readRange(path: string, offset: number, length: number): Uint8Array | undefined {
  if (length > MAX_FILE_READ || length < 0) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const buffer = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buffer, done, length - done, offset + done);
      if (n <= 0) return undefined;
      done += n;
    }
    return buffer;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function decodeRaw(dtype: number, raw: Uint8Array, count: number): number[] | undefined {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const size = ({ 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 } as Record<number, number>)[dtype];
  if (!size || raw.byteLength < size * count) return undefined;
  const out: number[] = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const o = i * size;
    switch (dtype) {
      case DataType.FLOAT: out[i] = view.getFloat32(o, true); break;
      case DataType.DOUBLE: out[i] = view.getFloat64(o, true); break;
      case DataType.FLOAT16: out[i] = halfToNumber(view.getUint16(o, true)); break;
      case DataType.BFLOAT16: out[i] = bfloat16ToNumber(view.getUint16(o, true)); break;
      case DataType.UINT8: out[i] = view.getUint8(o); break;
      case DataType.INT8: out[i] = view.getInt8(o); break;
      case DataType.BOOL: out[i] = view.getUint8(o) ? 1 : 0; break;
      case DataType.UINT16: out[i] = view.getUint16(o, true); break;
      case DataType.INT16: out[i] = view.getInt16(o, true); break;
      case DataType.INT32: out[i] = view.getInt32(o, true); break;
      case DataType.UINT32: out[i] = view.getUint32(o, true); break;
      case DataType.INT64: out[i] = Number(view.getBigInt64(o, true)); break;
      case DataType.UINT64: out[i] = Number(view.getBigUint64(o, true)); break;
      default: return undefined;
    }
  }
  return out;
}

function decodeTyped(dtype: number, t: TensorProto, count: number): number[] | undefined {
  let src: ArrayLike<number | Int64> | undefined;
  switch (dtype) {
    case DataType.FLOAT: case DataType.FLOAT16: case DataType.BFLOAT16:
      src = dtype === DataType.FLOAT ? t.floatData : t.int32Data;
      if (src && dtype !== DataType.FLOAT) {
        const conv = dtype === DataType.FLOAT16 ? halfToNumber : bfloat16ToNumber;
        return take(src, count)?.map((v) => conv(v & 0xffff));
      }
      break;
    case DataType.DOUBLE: src = t.doubleData; break;
    case DataType.INT64: src = t.int64Data; break;
    case DataType.UINT32: case DataType.UINT64: src = t.uint64Data; break;
    default: src = t.int32Data; break; // int32, int16, int8, uint16, uint8, bool
  }
  const values = src ? take(src, count) : undefined;
  if (values && dtype === DataType.BOOL) return values.map((v) => (v ? 1 : 0));
  return values;
}

function take(src: ArrayLike<number | Int64>, count: number): number[] | undefined {
  if (src.length < count) return undefined;
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(int64ToNumber(src[i]));
  return out;
}

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function bfloat16ToNumber(b: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, b << 16);
  return view.getFloat32(0);
}
