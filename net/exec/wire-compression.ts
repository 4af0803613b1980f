/**
 * Compressed activations on the wire: a float32 tensor travels as fp16 (half the bytes) or as block-wise int8 with
 * one fp16 scale per block of 64 (0.258 of the bytes), chosen per session; the receiver decodes it back to float32
 * before onnxruntime sees it. Exact (the model's dtype, no encoding) stays the default and is the only choice when a
 * request asks for exact outputs. A float tensor made of a few distinct values (an attention mask of 0 and -3.4e38)
 * travels in a compressed session as a palette: those values exactly, and 1, 2 or 4 bits per element naming one.
 * Pure functions over bytes; the stated error bounds are in `WIRE_ERROR_BOUND`.
 */
import type { WireTensor } from '../../proto/wire.js';
import { ExecError } from './errors.js';

/** How a tensor's bytes are encoded on the wire (proto Tensor.encoding). */
export const WireEncoding = { EXACT: 0, FP16: 1, INT8_BLOCKS: 2 } as const;
export type WireEncodingCode = (typeof WireEncoding)[keyof typeof WireEncoding];
export const WIRE_ENCODING_NAMES: Record<WireEncodingCode, 'exact' | 'fp16' | 'int8'> = { 0: 'exact', 1: 'fp16', 2: 'int8' };

/**
 * A tensor-level encoding, never a session's: the tensor's distinct float32 values (at most 16, bit-exact, so
 * -3.4e38, -inf, NaN and -0 survive) then each element's index into them, packed low bits first. Lossless.
 */
export const WIRE_PALETTE = 3;
/** Most distinct values a palette holds. */
export const WIRE_PALETTE_MAX = 16;

/** Values per int8 block (one fp16 scale each). */
export const WIRE_INT8_BLOCK = 64;

/**
 * Largest error of one decoded value, relative to the largest magnitude of its block (int8) or of itself (fp16):
 * int8 half a step of 1/127 plus the fp16 rounding of the scale; fp16 its unit roundoff 2^-11 (normal range).
 */
export const WIRE_ERROR_BOUND = { fp16: 2 ** -11, int8: 0.5 / 127 + 2 ** -10 } as const;

const FLOAT_DTYPE = 1;

/** Bytes of `count` float32 values in an encoding. */
export function encodedBytes(encoding: WireEncodingCode, count: number): number {
  if (encoding === WireEncoding.FP16) return count * 2;
  if (encoding === WireEncoding.INT8_BLOCKS) return Math.ceil(count / WIRE_INT8_BLOCK) * 2 + count;
  return count * 4;
}

/** Whether a tensor of this dtype can travel encoded (only float32 activations are). */
export function encodable(dtype: number): boolean {
  return dtype === FLOAT_DTYPE;
}

/** Encodes float32 values; EXACT returns their bytes as they are. */
export function encodeFloats(values: Float32Array, encoding: WireEncodingCode): Uint8Array {
  if (encoding === WireEncoding.EXACT) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (encoding === WireEncoding.FP16) {
    const out = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = toHalf(values[i]);
    return new Uint8Array(out.buffer);
  }
  const blocks = Math.ceil(values.length / WIRE_INT8_BLOCK);
  const out = new Uint8Array(blocks * 2 + values.length);
  const scales = new DataView(out.buffer);
  const q = new Int8Array(out.buffer, blocks * 2);
  for (let b = 0; b < blocks; b++) {
    const start = b * WIRE_INT8_BLOCK;
    const end = Math.min(values.length, start + WIRE_INT8_BLOCK);
    let amax = 0;
    for (let i = start; i < end; i++) amax = Math.max(amax, Math.abs(values[i]));
    const half = toHalf(amax / 127);
    scales.setUint16(b * 2, half, true);
    const scale = fromHalf(half);
    const inverse = scale === 0 ? 0 : 1 / scale;
    for (let i = start; i < end; i++) q[i] = Math.max(-127, Math.min(127, Math.round(values[i] * inverse)));
  }
  return out;
}

/** Bits per element of a palette of `size` values. */
function paletteBits(size: number): 1 | 2 | 4 {
  return size <= 2 ? 1 : size <= 4 ? 2 : 4;
}

/** Bytes of a palette encoding of `count` values with `size` distinct ones: size byte, the values, packed indices. */
export function paletteBytes(size: number, count: number): number {
  return 1 + size * 4 + Math.ceil((count * paletteBits(size)) / 8);
}

/** Whether `bytes` is the length of a palette encoding of `count` values with some number of distinct values. */
export function paletteFits(bytes: number, count: number): boolean {
  for (let size = 1; size <= WIRE_PALETTE_MAX; size++) if (paletteBytes(size, count) === bytes) return true;
  return false;
}

/** The distinct values' bit patterns, or undefined when there are more than WIRE_PALETTE_MAX (it stops early). */
function distinctBits(values: Float32Array): Uint32Array | undefined {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const seen: number[] = [];
  for (let i = 0; i < bits.length; i++) {
    const v = bits[i];
    if (seen.includes(v)) continue;
    if (seen.length === WIRE_PALETTE_MAX) return undefined;
    seen.push(v);
  }
  return Uint32Array.from(seen);
}

/** Palette-encodes float32 values (see WIRE_PALETTE); undefined when they hold too many distinct values. */
export function encodePalette(values: Float32Array): Uint8Array | undefined {
  const palette = distinctBits(values);
  if (!palette || palette.length === 0) return undefined;
  const bits = paletteBits(palette.length);
  const out = new Uint8Array(paletteBytes(palette.length, values.length));
  out[0] = palette.length;
  const view = new DataView(out.buffer);
  palette.forEach((p, i) => view.setUint32(1 + i * 4, p, true));
  const index = new Map(Array.from(palette, (p, i) => [p, i]));
  const source = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const base = 1 + palette.length * 4;
  const perByte = 8 / bits;
  for (let i = 0; i < source.length; i++) out[base + Math.floor(i / perByte)] |= index.get(source[i])! << ((i % perByte) * bits);
  return out;
}

function decodePalette(data: Uint8Array, count: number, what: string): Float32Array {
  const size = data[0] ?? 0;
  if (size < 1 || size > WIRE_PALETTE_MAX || data.byteLength !== paletteBytes(size, count)) {
    throw new ExecError('BAD_REQUEST', `${what}: ${data.byteLength} bytes of palette (${size} values) for ${count} values`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const palette = Array.from({ length: size }, (_, i) => view.getUint32(1 + i * 4, true));
  const bits = paletteBits(size);
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const base = 1 + size * 4;
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const at = (data[base + Math.floor(i / perByte)] >> ((i % perByte) * bits)) & mask;
    if (at >= size) throw new ExecError('BAD_REQUEST', `${what}: palette index ${at} of ${size} values`);
    out[i] = palette[at];
  }
  return new Float32Array(out.buffer);
}

/** Decodes `count` float32 values; throws ExecError BAD_REQUEST when the byte count does not fit. */
export function decodeFloats(data: Uint8Array, encoding: number, count: number, what: string): Float32Array {
  if (encoding === WIRE_PALETTE) return decodePalette(data, count, what);
  if (encoding !== WireEncoding.FP16 && encoding !== WireEncoding.INT8_BLOCKS) throw new ExecError('BAD_REQUEST', `${what}: unknown wire encoding ${encoding}`);
  const expected = encodedBytes(encoding, count);
  if (data.byteLength !== expected) throw new ExecError('BAD_REQUEST', `${what}: ${data.byteLength} bytes of ${WIRE_ENCODING_NAMES[encoding]} for ${count} values (expected ${expected})`);
  const out = new Float32Array(count);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (encoding === WireEncoding.FP16) {
    for (let i = 0; i < count; i++) out[i] = fromHalf(view.getUint16(i * 2, true));
    return out;
  }
  const blocks = Math.ceil(count / WIRE_INT8_BLOCK);
  for (let b = 0; b < blocks; b++) {
    const scale = fromHalf(view.getUint16(b * 2, true));
    const end = Math.min(count, (b + 1) * WIRE_INT8_BLOCK);
    for (let i = b * WIRE_INT8_BLOCK; i < end; i++) out[i] = view.getInt8(blocks * 2 + i) * scale;
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 half-precision bits of a float32, rounded to nearest even (subnormals kept, overflow to ±infinity). */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** The float value of IEEE 754 half-precision bits. */
export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? Number.NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Largest magnitude fp16 holds: a tensor with a value beyond it (or not finite) travels exact. */
export const FP16_MAX = 65504;

/**
 * A wire tensor sent in `encoding`: float32 tensors are encoded (the bytes are copied), others travel exact. A float
 * tensor of at most 16 distinct values (an attention mask) travels as a palette, exactly, when that is smaller; one
 * holding a value fp16 cannot carry (an attention mask's -3.4e38 or -inf, a NaN) otherwise travels exact: encoding
 * it would change what it means, not round it.
 */
export function compressWireTensor(t: WireTensor, encoding: WireEncodingCode): WireTensor {
  if (encoding === WireEncoding.EXACT || !encodable(t.dtype) || t.encoding) return t;
  const aligned = t.data.byteOffset % 4 === 0 ? t.data : new Uint8Array(t.data);
  const values = new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
  const palette = encodePalette(values);
  if (palette && palette.byteLength < encodedBytes(encoding, values.length)) return { ...t, data: palette, encoding: WIRE_PALETTE };
  for (let i = 0; i < values.length; i++) if (!(Math.abs(values[i]) <= FP16_MAX)) return t;
  return { ...t, data: encodeFloats(values, encoding), encoding };
}
