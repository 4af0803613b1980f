/**
 * Block-wise symmetric quantization of fp32 rows, in the byte layout onnxruntime's com.microsoft MatMulNBits
 * (B: [N, blocks, block·bits/8]) and GatherBlockQuantized (data: [rows, cols·bits/8]) read with their default
 * zero point 2^(bits-1): int8 stores q + 128 with scale = max|x| / 127; int4 (as llama.cpp's q4_0) stores q + 8
 * in 4 bits, low nibble first, with scale = (the value of largest magnitude) / -8, so all 16 levels are used.
 * Asymmetric (`zeroPoints`): each block also gets its own zero point, so its levels span the block's own min..max
 * (searched, see blockLevels) rather than ±its largest magnitude; the ops read the zero points from an extra uint8
 * input, packed as the data (bits per zero point, low nibble first, each row's blocks padded to whole bytes).
 * Pure functions over arrays; the error of each row set is measured as it is quantized.
 */

/** Squared error, squared magnitude and largest absolute error of a quantization, summed over its values. */
export interface QuantError { count: number; sumSquaredError: number; sumSquared: number; maxAbsError: number }

export interface QuantizedRows {
  /** rows × paddedLength·bits/8 bytes. */
  data: Uint8Array;
  /** rows × blocks scales. */
  scales: Float32Array;
  /** Asymmetric only: rows × zeroPointRowBytes(blocks, bits) bytes, each block's zero point packed as the data. */
  zeroPoints?: Uint8Array;
  blocks: number;
  error: QuantError;
}

/** The largest code of `bits`-wide levels (2^bits − 1). */
export function topCode(bits: 4 | 8): number {
  return bits === 8 ? 255 : 15;
}

/** The zero point the ops assume when none is stored (2^(bits−1)): symmetric blocks use it. */
export function defaultZeroPoint(bits: 4 | 8): number {
  return bits === 8 ? 128 : 8;
}

/** One block's levels: value = (q − zero) · scale for q in 0 … 2^bits − 1. */
export interface BlockLevels { scale: number; zero: number }

/** Bytes of one row's packed zero points (bits per block, rounded up to whole bytes). */
export function zeroPointRowBytes(blocks: number, bits: 4 | 8): number {
  return Math.ceil((blocks * bits) / 8);
}

/** Writes code `q` (bits wide) as element `i` of a row of packed codes starting at byte `rowStart`, low nibble first. */
export function packCode(data: Uint8Array, rowStart: number, i: number, q: number, bits: 4 | 8): void {
  if (bits === 8) data[rowStart + i] = q;
  else {
    const at = rowStart + (i >> 1);
    data[at] = i % 2 === 0 ? (data[at] & 0xf0) | q : (data[at] & 0x0f) | (q << 4);
  }
}

/** Element `i` of a row of packed codes starting at byte `rowStart`. */
export function unpackCode(data: Uint8Array, rowStart: number, i: number, bits: 4 | 8): number {
  if (bits === 8) return data[rowStart + i];
  const byte = data[rowStart + (i >> 1)];
  return i % 2 === 0 ? byte & 0x0f : byte >> 4;
}

/** Blocks per row, and the row length padded up to whole blocks. */
export function blockLayout(rowLength: number, block: number): { blocks: number; padded: number } {
  const blocks = Math.ceil(rowLength / block);
  return { blocks, padded: blocks * block };
}

/**
 * Quantizes `rows` rows of `rowLength` values (row-major in `values`), padding each row with zeros to whole blocks;
 * with `asymmetric`, each block gets its own zero point (QuantizedRows.zeroPoints).
 */
export function quantizeRows(values: Float32Array, rows: number, rowLength: number, bits: 4 | 8, block: number, asymmetric = false): QuantizedRows {
  const { blocks, padded } = blockLayout(rowLength, block);
  const rowBytes = (padded * bits) / 8;
  const data = new Uint8Array(rows * rowBytes);
  const scales = new Float32Array(rows * blocks);
  const error: QuantError = { count: rows * rowLength, sumSquaredError: 0, sumSquared: 0, maxAbsError: 0 };
  const top = topCode(bits);
  const zeroBytes = zeroPointRowBytes(blocks, bits);
  const zeroPoints = asymmetric ? new Uint8Array(rows * zeroBytes) : undefined;
  for (let r = 0; r < rows; r++) {
    const row = r * rowLength;
    for (let b = 0; b < blocks; b++) {
      const start = b * block;
      const end = Math.min(rowLength, start + block);
      const { scale, zero } = blockLevels(values, row + start, row + end, bits, asymmetric);
      scales[r * blocks + b] = scale;
      if (zeroPoints) packCode(zeroPoints, r * zeroBytes, b, zero, bits);
      const inverse = scale === 0 ? 0 : 1 / scale;
      for (let i = start; i < start + block; i++) {
        if (i >= end) { // padding: the code that restores 0
          packCode(data, r * rowBytes, i, zero, bits);
          continue;
        }
        const v = values[row + i];
        const q = Math.min(top, Math.max(0, Math.round(v * inverse) + zero));
        const restored = (q - zero) * scale;
        const e = Math.abs(restored - v);
        error.sumSquaredError += e * e;
        error.sumSquared += v * v;
        if (e > error.maxAbsError) error.maxAbsError = e;
        packCode(data, r * rowBytes, i, q, bits);
      }
    }
  }
  return { data, scales, blocks, error, ...(zeroPoints ? { zeroPoints } : {}) };
}

/** One block's scale and zero point: symmetric (blockScale, the ops' default zero point) or asymmetric (bestAsymmetricLevels). */
export function blockLevels(values: ArrayLike<number>, start: number, end: number, bits: 4 | 8, asymmetric: boolean): BlockLevels {
  if (!asymmetric) return { scale: blockScale(values, start, end, bits), zero: defaultZeroPoint(bits) };
  return bestAsymmetricLevels(values, start, end, bits);
}

/**
 * Asymmetric levels for one block: scale = (max − min)·f / (2^bits − 1) and zero = round(−min·f / scale), with the
 * range taken from the block's own min and max (0 kept inside, so a block of one sign still restores 0 exactly) and
 * shrunk by f from 1 down to ASYMMETRIC_SHRINK_FLOOR where that lowers the block's squared error, as GPTQ's
 * reference implementation searches its min/max.
 */
function bestAsymmetricLevels(values: ArrayLike<number>, start: number, end: number, bits: 4 | 8): BlockLevels {
  const top = topCode(bits);
  let min = 0;
  let max = 0;
  for (let i = start; i < end; i++) {
    if (values[i] < min) min = values[i];
    if (values[i] > max) max = values[i];
  }
  if (max === min) return { scale: 0, zero: 0 };
  let best: BlockLevels = { scale: 0, zero: 0 };
  let bestError = Infinity;
  for (let step = 0; step <= ASYMMETRIC_SHRINK_STEPS; step++) {
    const f = 1 - ((1 - ASYMMETRIC_SHRINK_FLOOR) * step) / ASYMMETRIC_SHRINK_STEPS;
    const scale = Math.fround(((max - min) * f) / top);
    const zero = Math.min(top, Math.max(0, Math.round((-min * f) / scale)));
    const inverse = 1 / scale;
    let error = 0;
    for (let i = start; i < end && error < bestError; i++) {
      const v = values[i];
      const q = Math.min(top, Math.max(0, Math.round(v * inverse) + zero));
      const e = (q - zero) * scale - v;
      error += e * e;
    }
    if (error < bestError) {
      bestError = error;
      best = { scale, zero };
    }
  }
  return best;
}
/** The asymmetric range search: f from 1 down to this, in this many steps (each end may clip by this share at most). */
export const ASYMMETRIC_SHRINK_FLOOR = 0.86;
const ASYMMETRIC_SHRINK_STEPS = 14;

/** The scale of one block `values[start..end)`: int8 max|x| / 127; int4 searched (bestInt4Scale). */
export function blockScale(values: ArrayLike<number>, start: number, end: number, bits: 4 | 8): number {
  let extreme = 0;
  for (let i = start; i < end; i++) if (Math.abs(values[i]) > Math.abs(extreme)) extreme = values[i];
  return bits === 8 ? Math.fround(Math.abs(extreme) / 127) : bestInt4Scale(values, start, end, extreme);
}

/**
 * int4's scale for one block: of the candidates extreme/-8 · f and extreme/7 · f (f from 1 down to 0.8), the one with
 * the least squared error among those that restore every value of the block within a fifth of its largest magnitude
 * (the stated bound). Clipping a few outliers buys finer steps for the rest of the block; llama.cpp searches its
 * 4-bit scales the same way. The bound must be checked, not assumed: on the extreme/-8 side a value of the other
 * sign as large as the extreme clips to 7 steps, M·(1 − 0.875 f) away, more than M/5 below f ≈ 0.91.
 */
function bestInt4Scale(values: ArrayLike<number>, start: number, end: number, extreme: number): number {
  let best = Math.fround(extreme / -8); // within the bound: the extreme exact, an opposite one M/8 off, the rest half a step
  let bestError = Infinity;
  if (extreme === 0) return 0;
  const limit = Math.abs(extreme) / 5;
  for (const base of [extreme / -8, extreme / 7]) {
    for (const f of INT4_SCALE_FACTORS) {
      const scale = Math.fround(base * f);
      const inverse = 1 / scale;
      let error = 0;
      let within = true;
      for (let i = start; i < end && error < bestError; i++) {
        const v = values[i];
        const q = Math.min(7, Math.max(-8, Math.round(v * inverse)));
        const e = q * scale - v;
        if (Math.abs(e) > limit) {
          within = false;
          break;
        }
        error += e * e;
      }
      if (within && error < bestError) {
        bestError = error;
        best = scale;
      }
    }
  }
  return best;
}
const INT4_SCALE_FACTORS = [1, 0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8];

/** The inverse: fp32 rows from quantized bytes, scales and (asymmetric) zero points (for tests and error checks). */
export function dequantizeRows(q: Pick<QuantizedRows, 'data' | 'scales' | 'blocks' | 'zeroPoints'>, rows: number, rowLength: number, bits: 4 | 8, block: number): Float32Array {
  const { padded } = blockLayout(rowLength, block);
  const rowBytes = (padded * bits) / 8;
  const zeroBytes = zeroPointRowBytes(q.blocks, bits);
  const out = new Float32Array(rows * rowLength);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < rowLength; i++) {
      const b = Math.floor(i / block);
      const zero = q.zeroPoints ? unpackCode(q.zeroPoints, r * zeroBytes, b, bits) : defaultZeroPoint(bits);
      out[r * rowLength + i] = (unpackCode(q.data, r * rowBytes, i, bits) - zero) * q.scales[r * q.blocks + b];
    }
  }
  return out;
}

/** Transposes a row-major rows × cols matrix. */
export function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  return out;
}

/** Adds one quantization's error into a running total. */
export function addError(total: QuantError, e: QuantError): void {
  total.count += e.count;
  total.sumSquaredError += e.sumSquaredError;
  total.sumSquared += e.sumSquared;
  total.maxAbsError = Math.max(total.maxAbsError, e.maxAbsError);
}

/** An empty running total. */
export function noError(): QuantError {
  return { count: 0, sumSquaredError: 0, sumSquared: 0, maxAbsError: 0 };
}
