/** ONNX tensor element types: codes, names, sizes and their onnxruntime-node names. */
import { FragmentError } from './errors.js';

export const DataType = {
  UNDEFINED: 0, FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9,
  FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13, COMPLEX64: 14, COMPLEX128: 15, BFLOAT16: 16,
  FLOAT8E4M3FN: 17, FLOAT8E4M3FNUZ: 18, FLOAT8E5M2: 19, FLOAT8E5M2FNUZ: 20, UINT4: 21, INT4: 22,
  FLOAT4E2M1: 23, FLOAT8E8M0: 24, UINT2: 25, INT2: 26,
} as const;
export type DataTypeCode = number;

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(DataType).map(([k, v]) => [v, k.toLowerCase()]));

/** Bits per element; 0 for variable-size (string) or unknown. */
const BITS: Record<number, number> = {
  1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128, 16: 16,
  17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
};

/** onnxruntime-node tensor type names, for the element types it can feed and fetch. */
const ORT_NAMES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string', 9: 'bool',
  10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64',
};

/** Lower-case ONNX name of an element type ("float", "int64", ...). */
export function dataTypeName(code: DataTypeCode): string {
  return NAMES[code] ?? `dtype(${code})`;
}

/** Parses a name as written in manifests and CLI flags back to its code. */
export function dataTypeFromName(name: string): DataTypeCode {
  const found = Object.entries(NAMES).find(([, n]) => n === name.toLowerCase());
  if (!found) throw new FragmentError('UNSUPPORTED', `unknown ONNX data type "${name}"`);
  return Number(found[0]);
}

/** Bytes taken by `count` elements (packed sub-byte types round up); NaN for strings. */
export function byteSizeOf(code: DataTypeCode, count: number): number {
  const bits = BITS[code];
  if (!bits) return Number.NaN;
  return Math.ceil((bits * count) / 8);
}

/** Bits per element, 0 when unknown or variable. */
export function bitsPerElement(code: DataTypeCode): number {
  return BITS[code] ?? 0;
}

/** onnxruntime-node's name for the type, or undefined when onnxruntime-node cannot carry it. */
export function ortTypeName(code: DataTypeCode): string | undefined {
  return ORT_NAMES[code];
}

/** Inverse of ortTypeName. */
export function dataTypeFromOrt(name: string): DataTypeCode {
  const found = Object.entries(ORT_NAMES).find(([, n]) => n === name);
  if (!found) throw new FragmentError('UNSUPPORTED', `onnxruntime type "${name}" has no ONNX equivalent here`);
  return Number(found[0]);
}
