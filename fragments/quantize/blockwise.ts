/**
 * Block-wise symmetric quantization of fp32 rows, in the byte layout onnxruntime's com.microsoft MatMulNBits
 * (B: [N, blocks, block·bits/8]) and GatherBlockQuantized (data: [rows, cols·bits/8]) read with their default
 * zero point 2^(bits-1): int8 stores q + 128 with scale = max|x| / 127; int4 (as llama.cpp's q4_0) stores q + 8
 * in 4 bits, low nibble first, with scale = (the value of largest magnitude) / -8, so all 16 levels are used.
 * Pure functions over arrays; the error of each row set is measured as it is quantized.
 */

/** Squared error, squared magnitude and largest absolute error of a quantization, summed over its values. */
export interface QuantError { count: number; sumSquaredError: number; sumSquared: number; maxAbsError: number }

export interface QuantizedRows {
  /** rows × paddedLength·bits/8 bytes. */
  data: Uint8Array;
  /** rows × blocks scales. */
  scales: Float32Array;
  blocks: number;
  error: QuantError;
}

/** Blocks per row, and the row length padded up to whole blocks. */
export function blockLayout(rowLength: number, block: number): { blocks: number; padded: number } {
  const blocks = Math.ceil(rowLength / block);
  return { blocks, padded: blocks * block };
}

/** Quantizes `rows` rows of `rowLength` values (row-major in `values`), padding each row with zeros to whole blocks. */
export function quantizeRows(values: Float32Array, rows: number, rowLength: number, bits: 4 | 8, block: number): QuantizedRows {
  const { blocks, padded } = blockLayout(rowLength, block);
  const rowBytes = (padded * bits) / 8;
  const data = new Uint8Array(rows * rowBytes);
  const scales = new Float32Array(rows * blocks);
  const error: QuantError = { count: rows * rowLength, sumSquaredError: 0, sumSquared: 0, maxAbsError: 0 };
  const zero = bits === 8 ? 128 : 8;
  const top = bits === 8 ? 255 : 15;
  if (bits === 4) data.fill(0x88); // zero-valued padding
  else data.fill(128);
  for (let r = 0; r < rows; r++) {
    const row = r * rowLength;
    for (let b = 0; b < blocks; b++) {
      const start = b * block;
      const end = Math.min(rowLength, start + block);
      const scale = blockScale(values, row + start, row + end, bits);
      scales[r * blocks + b] = scale;
      const inverse = scale === 0 ? 0 : 1 / scale;
      for (let i = start; i < end; i++) {
        const v = values[row + i];
        const q = Math.min(top, Math.max(0, Math.round(v * inverse) + zero));
        const restored = (q - zero) * scale;
        const e = Math.abs(restored - v);
        error.sumSquaredError += e * e;
        error.sumSquared += v * v;
        if (e > error.maxAbsError) error.maxAbsError = e;
        const at = r * rowBytes + (bits === 8 ? i : i >> 1);
        if (bits === 8) data[at] = q;
        else data[at] = i % 2 === 0 ? (data[at] & 0xf0) | q : (data[at] & 0x0f) | (q << 4);
      }
    }
  }
  return { data, scales, blocks, error };
}

/** The scale of one block `values[start..end)`: int8 max|x| / 127; int4 searched (bestInt4Scale). */
export function blockScale(values: ArrayLike<number>, start: number, end: number, bits: 4 | 8): number {
  let extreme = 0;
  for (let i = start; i < end; i++) if (Math.abs(values[i]) > Math.abs(extreme)) extreme = values[i];
  return bits === 8 ? Math.fround(Math.abs(extreme) / 127) : bestInt4Scale(values, start, end, extreme);
}

/**
 * int4's scale for one block: of the candidates extreme/-8 · f and extreme/7 · f (f from 1 down to 0.8, so the
 * largest values may clip by up to a fifth), the one with the least squared error. Clipping a few outliers buys
 * finer steps for the rest of the block; llama.cpp searches its 4-bit scales the same way.
 */
function bestInt4Scale(values: ArrayLike<number>, start: number, end: number, extreme: number): number {
  let best = Math.fround(extreme / -8);
  let bestError = Infinity;
  if (extreme === 0) return 0;
  for (const base of [extreme / -8, extreme / 7]) {
    for (const f of INT4_SCALE_FACTORS) {
      const scale = Math.fround(base * f);
      const inverse = 1 / scale;
      let error = 0;
      for (let i = start; i < end && error < bestError; i++) {
        const v = values[i];
        const q = Math.min(7, Math.max(-8, Math.round(v * inverse)));
        const e = q * scale - v;
        error += e * e;
      }
      if (error < bestError) {
        bestError = error;
        best = scale;
      }
    }
  }
  return best;
}
const INT4_SCALE_FACTORS = [1, 0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8];

/** The inverse: fp32 rows from quantized bytes and scales (for tests and error checks). */
export function dequantizeRows(q: Pick<QuantizedRows, 'data' | 'scales' | 'blocks'>, rows: number, rowLength: number, bits: 4 | 8, block: number): Float32Array {
  const { padded } = blockLayout(rowLength, block);
  const rowBytes = (padded * bits) / 8;
  const zero = bits === 8 ? 128 : 8;
  const out = new Float32Array(rows * rowLength);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < rowLength; i++) {
      const byte = q.data[r * rowBytes + (bits === 8 ? i : i >> 1)];
      const v = bits === 8 ? byte : i % 2 === 0 ? byte & 0x0f : byte >> 4;
      out[r * rowLength + i] = (v - zero) * q.scales[r * q.blocks + Math.floor(i / block)];
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
