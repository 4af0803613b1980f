/**
 * Error-compensating block quantization (GPTQ, Frantar et al. 2022) of fp32 rows, in the same byte layout as
 * blockwise.ts. Rounding each weight to its nearest level (what quantizeRows does) minimises the weights' own error;
 * what matters is the layer's output X·Wᵀ on real inputs. Given H = XᵀX from calibration activations, GPTQ rounds
 * the weights of a row one input column at a time and spreads each rounding error over the columns not yet rounded,
 * weighted by H's inverse, so errors along correlated inputs cancel. It needs no extra bytes and no graph change:
 * onnxruntime runs the same MatMulNBits. Each row is independent, so rows are processed one after another.
 */
import { blockLayout, blockLevels, packCode, topCode, zeroPointRowBytes, type QuantError, type QuantizedRows } from './blockwise.js';

/**
 * A layer input's second moment: Σ xxᵀ over calibration positions (k × k, row-major), and how many positions.
 * `cross`, when the inputs came from a partly quantized model (sequential calibration): Σ x̃xᵀ of those inputs x̃
 * and the full-precision model's x at the same positions.
 */
export interface InputMoment { k: number; sum: Float64Array; positions: number; cross?: Float64Array }

/** Fraction of H's mean diagonal added to its diagonal before inverting (GPTQ's default dampening). */
const DAMPENING = 0.01;

/**
 * Quantizes `rows` rows of `rowLength` values (row-major; each row runs along the layer's input axis, the axis `moment`
 * describes). The error recorded is the weights' own (against `values`), as quantizeRows records it. With `asymmetric`,
 * each block's scale and zero point are chosen from the row as it stands when GPTQ reaches the block (earlier
 * columns' errors already spread into it), as AutoGPTQ does with sym=False and static groups.
 */
export function gptqQuantizeRows(values: Float32Array, rows: number, rowLength: number, bits: 4 | 8, block: number, moment: InputMoment, asymmetric = false): QuantizedRows {
  if (moment.k !== rowLength) throw new RangeError(`input moment is ${moment.k} wide, rows are ${rowLength}`);
  const { blocks, padded } = blockLayout(rowLength, block);
  const rowBytes = (padded * bits) / 8;
  const data = new Uint8Array(rows * rowBytes).fill(bits === 4 ? 0x88 : 128);
  const scales = new Float32Array(rows * blocks);
  const zeroBytes = zeroPointRowBytes(blocks, bits);
  const zeroPoints = asymmetric ? new Uint8Array(rows * zeroBytes) : undefined;
  const error: QuantError = { count: rows * rowLength, sumSquaredError: 0, sumSquared: 0, maxAbsError: 0 };
  const top = topCode(bits);
  const { upper, dead, lower } = inverseCholeskyFactor(moment, rowLength);
  const w = new Float64Array(rowLength);
  for (let r = 0; r < rows; r++) {
    const row = r * rowLength;
    if (moment.cross) correctedRow(values, row, moment, lower, w);
    else for (let i = 0; i < rowLength; i++) w[i] = values[row + i];
    for (let i = 0; i < rowLength; i++) if (dead[i]) w[i] = 0;
    let scale = 0;
    let zero = 0;
    let inverse = 0;
    for (let i = 0; i < rowLength; i++) {
      if (i % block === 0) {
        ({ scale, zero } = blockLevels(w, i, Math.min(rowLength, i + block), bits, asymmetric));
        scales[r * blocks + i / block] = scale;
        if (zeroPoints) {
          packCode(zeroPoints, r * zeroBytes, i / block, zero, bits);
          for (let p = rowLength; p < Math.min(padded, i + block); p++) packCode(data, r * rowBytes, p, zero, bits); // padding restores 0
        }
        inverse = scale === 0 ? 0 : 1 / scale;
      }
      const q = Math.min(top, Math.max(0, Math.round(w[i] * inverse) + zero));
      const restored = (q - zero) * scale;
      const spread = (w[i] - restored) / upper[i * rowLength + i];
      const u = i * rowLength;
      for (let j = i + 1; j < rowLength; j++) w[j] -= spread * upper[u + j];
      packCode(data, r * rowBytes, i, q, bits);
      const v = values[row + i];
      const e = Math.abs(Math.fround(restored) - v);
      error.sumSquaredError += e * e;
      error.sumSquared += v * v;
      if (e > error.maxAbsError) error.maxAbsError = e;
    }
  }
  return { data, scales, blocks, error, ...(zeroPoints ? { zeroPoints } : {}) };
}

/**
 * U, the upper Cholesky factor of (H + λI)⁻¹ (Uᵀ U = H⁻¹), as GPTQ uses it; inputs that were always zero ("dead")
 * get a unit diagonal and their weights are quantized as zero.
 */
export function inverseCholeskyFactor(moment: InputMoment, k: number): { upper: Float64Array; dead: boolean[]; lower: Float64Array } {
  const h = Float64Array.from(moment.sum);
  const dead: boolean[] = [];
  let meanDiagonal = 0;
  for (let i = 0; i < k; i++) {
    dead.push(h[i * k + i] === 0);
    if (dead[i]) h[i * k + i] = 1;
    meanDiagonal += h[i * k + i] / k;
  }
  for (let i = 0; i < k; i++) h[i * k + i] += DAMPENING * meanDiagonal;
  const lower = cholesky(h, k); // H = L Lᵀ
  const inverse = inverseFromCholesky(lower, k); // H⁻¹ = L⁻ᵀ L⁻¹
  const l2 = cholesky(inverse, k); // H⁻¹ = L₂ L₂ᵀ, so U = L₂ᵀ
  const upper = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = i; j < k; j++) upper[i * k + j] = l2[j * k + i];
  return { upper, dead, lower };
}

/**
 * The row GPTQ should round when its inputs x̃ come from a partly quantized model: w* = w + (H̃ + λI)⁻¹ (Σx̃xᵀ − H̃) w,
 * the damped least squares fit of x̃·w* to the full-precision x·w, pulled towards w (not towards 0) where the
 * calibration says little, so the layer also undoes the error of the layers before it (asymmetric calibration).
 * `lower` is the Cholesky factor of the damped H̃; the result goes into `out`.
 */
function correctedRow(values: Float32Array, row: number, moment: InputMoment, lower: Float64Array, out: Float64Array): void {
  const { k, sum } = moment;
  const cross = moment.cross!;
  const b = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    let s = 0;
    const at = i * k;
    for (let j = 0; j < k; j++) s += (cross[at + j] - sum[at + j]) * values[row + j];
    b[i] = s;
  }
  // Solve L y = b, then Lᵀ d = y; w* = w + d.
  for (let i = 0; i < k; i++) {
    let s = b[i];
    const at = i * k;
    for (let p = 0; p < i; p++) s -= lower[at + p] * b[p];
    b[i] = s / lower[at + i];
  }
  for (let i = k - 1; i >= 0; i--) {
    let s = b[i];
    for (let p = i + 1; p < k; p++) s -= lower[p * k + i] * out[p];
    out[i] = s / lower[i * k + i];
  }
  for (let i = 0; i < k; i++) out[i] += values[row + i];
}

/** Lower-triangular L with A = L Lᵀ (A symmetric positive definite, k × k row-major). */
export function cholesky(a: Float64Array, k: number): Float64Array {
  const l = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    let d = a[j * k + j];
    const lj = j * k;
    for (let p = 0; p < j; p++) d -= l[lj + p] * l[lj + p];
    if (!(d > 0)) throw new RangeError('calibration moment is not positive definite');
    const root = Math.sqrt(d);
    l[lj + j] = root;
    for (let i = j + 1; i < k; i++) {
      const li = i * k;
      let s = a[li + j];
      for (let p = 0; p < j; p++) s -= l[li + p] * l[lj + p];
      l[li + j] = s / root;
    }
  }
  return l;
}

/** A⁻¹ from A's Cholesky factor L: A⁻¹ = L⁻ᵀ L⁻¹. */
function inverseFromCholesky(l: Float64Array, k: number): Float64Array {
  // M = L⁻¹ (lower triangular), by forward substitution column by column.
  const m = new Float64Array(k * k);
  for (let c = 0; c < k; c++) {
    m[c * k + c] = 1 / l[c * k + c];
    for (let i = c + 1; i < k; i++) {
      let s = 0;
      for (let p = c; p < i; p++) s += l[i * k + p] * m[p * k + c];
      m[i * k + c] = -s / l[i * k + i];
    }
  }
  // A⁻¹[i][j] = Σ_p M[p][i] M[p][j], p ≥ max(i, j).
  const out = new Float64Array(k * k);
  for (let p = 0; p < k; p++) {
    const mp = p * k;
    for (let i = 0; i <= p; i++) {
      const a = m[mp + i];
      if (a === 0) continue;
      const oi = i * k;
      for (let j = 0; j <= p; j++) out[oi + j] += a * m[mp + j];
    }
  }
  return out;
}

