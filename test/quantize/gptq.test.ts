/**
 * GPTQ (fragments/quantize/gptq.ts) against plain rounding on a layer with correlated inputs: the same bytes and
 * layout, a smaller error in the layer's output on those inputs; with a cross moment, a smaller error against the
 * full-precision output when its inputs carry earlier layers' error; and its linear algebra checked on its own.
 */
import { describe, expect, it } from 'vitest';
import { cholesky, gptqQuantizeRows, inverseCholeskyFactor, type InputMoment } from '../../fragments/quantize/gptq.js';
import { dequantizeRows, quantizeRows } from '../../fragments/quantize/blockwise.js';
import { seededRandom } from '../../fragments/seeded-random.js';

/** Inputs whose features are mixtures of a few shared factors (as activations are), and their moment Σ xxᵀ. */
function correlatedInputs(positions: number, k: number, seed: number): { x: Float64Array; moment: InputMoment } {
  const random = seededRandom(seed);
  const gauss = (): number => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const factors = 8;
  const mix = Float64Array.from({ length: factors * k }, gauss);
  const x = new Float64Array(positions * k);
  for (let p = 0; p < positions; p++) {
    const f = Array.from({ length: factors }, gauss);
    for (let i = 0; i < k; i++) {
      let v = 0.1 * gauss();
      for (let j = 0; j < factors; j++) v += f[j] * mix[j * k + i];
      x[p * k + i] = v;
    }
  }
  const sum = new Float64Array(k * k);
  for (let p = 0; p < positions; p++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) sum[i * k + j] += x[p * k + i] * x[p * k + j];
  return { x, moment: { k, sum, positions } };
}

/** Σ over positions and rows of (x·w − x·q)², the layer output's squared error. */
function outputError(x: Float64Array, positions: number, w: Float32Array, q: Float32Array, rows: number, k: number): number {
  let total = 0;
  for (let p = 0; p < positions; p++) {
    for (let r = 0; r < rows; r++) {
      let d = 0;
      for (let i = 0; i < k; i++) d += x[p * k + i] * (w[r * k + i] - q[r * k + i]);
      total += d * d;
    }
  }
  return total;
}

describe('GPTQ', () => {
  // With zero points (asymmetric), each block's scale and zero point come from the row as GPTQ has updated it so far.
  it.each([[4, 32, false], [4, 64, false], [8, 64, false], [4, 32, true], [4, 64, true]] as const)('int%i block %i (zero points: %s): less layer output error than rounding, same layout', (bits, block, asymmetric) => {
    const k = 128;
    const rows = 24;
    const random = seededRandom(9);
    const w = Float32Array.from({ length: rows * k }, () => random() * 2 - 1);
    const { x, moment } = correlatedInputs(512, k, 3);
    const rounded = quantizeRows(w, rows, k, bits, block, asymmetric);
    const gptq = gptqQuantizeRows(w, rows, k, bits, block, moment, asymmetric);
    expect(gptq.data.length).toBe(rounded.data.length);
    expect(gptq.scales.length).toBe(rounded.scales.length);
    expect(gptq.zeroPoints?.length).toBe(rounded.zeroPoints?.length);
    const back = (q: typeof rounded): Float32Array => dequantizeRows(q, rows, k, bits, block);
    const gptqError = outputError(x, 512, w, back(gptq), rows, k);
    const roundedError = outputError(x, 512, w, back(rounded), rows, k);
    expect(gptqError).toBeLessThan(roundedError * 0.8);
    // The error it records is the weights' own, as rounding records it (GPTQ's weights stray further, on purpose).
    const weightError = (q: Float32Array): number => w.reduce((s, v, i) => s + (v - q[i]) ** 2, 0);
    expect(gptq.error.sumSquaredError).toBeCloseTo(weightError(back(gptq)), 3);
    expect(gptq.error.sumSquaredError).toBeGreaterThan(rounded.error.sumSquaredError);
  });

  it('factors: L Lᵀ = A, and Uᵀ U = (H + λI)⁻¹', () => {
    const k = 6;
    const { moment } = correlatedInputs(40, k, 1);
    const l = cholesky(moment.sum, k);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += l[i * k + p] * l[j * k + p];
        expect(s).toBeCloseTo(moment.sum[i * k + j], 6);
      }
    }
    const { upper } = inverseCholeskyFactor(moment, k);
    const mean = Array.from({ length: k }, (_, i) => moment.sum[i * k + i]).reduce((a, b) => a + b) / k;
    // (Uᵀ U)(H + λI) = I
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let m = 0; m < k; m++) {
          let inv = 0;
          for (let p = 0; p < k; p++) inv += upper[p * k + i] * upper[p * k + m];
          s += inv * (moment.sum[m * k + j] + (m === j ? 0.01 * mean : 0));
        }
        expect(s).toBeCloseTo(i === j ? 1 : 0, 6);
      }
    }
  });

  it('with a cross moment (inputs from a partly quantized model) it fits the full-precision output, not its own', () => {
    const k = 64;
    const rows = 16;
    const positions = 512;
    const random = seededRandom(4);
    const w = Float32Array.from({ length: rows * k }, () => random() * 2 - 1);
    const { x } = correlatedInputs(positions, k, 5);
    // x̃: what a partly quantized model feeds this layer instead of x (x with an error correlated with x itself).
    const mix = Float64Array.from({ length: k * k }, () => (random() - 0.5) * 0.05);
    const noisy = new Float64Array(positions * k);
    for (let p = 0; p < positions; p++) {
      for (let i = 0; i < k; i++) {
        let v = x[p * k + i];
        for (let j = 0; j < k; j++) v += mix[i * k + j] * x[p * k + j];
        noisy[p * k + i] = v;
      }
    }
    const sum = new Float64Array(k * k);
    const cross = new Float64Array(k * k);
    for (let p = 0; p < positions; p++) {
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) {
          sum[i * k + j] += noisy[p * k + i] * noisy[p * k + j];
          cross[i * k + j] += noisy[p * k + i] * x[p * k + j];
        }
      }
    }
    /** Σ (x·w − x̃·q)²: the error against the full-precision layer output. */
    const errorAgainstExact = (q: Float32Array): number => {
      let total = 0;
      for (let p = 0; p < positions; p++) {
        for (let r = 0; r < rows; r++) {
          let d = 0;
          for (let i = 0; i < k; i++) d += x[p * k + i] * w[r * k + i] - noisy[p * k + i] * q[r * k + i];
          total += d * d;
        }
      }
      return total;
    };
    const own = gptqQuantizeRows(w, rows, k, 4, 32, { k, sum, positions });
    const corrected = gptqQuantizeRows(w, rows, k, 4, 32, { k, sum, positions, cross });
    expect(corrected.data.length).toBe(own.data.length);
    const back = (q: typeof own): Float32Array => dequantizeRows(q, rows, k, 4, 32);
    expect(errorAgainstExact(back(corrected))).toBeLessThan(errorAgainstExact(back(own)) * 0.7);
  });

  it('refuses a moment of another width', () => {
    const { moment } = correlatedInputs(10, 8, 2);
    expect(() => gptqQuantizeRows(new Float32Array(32), 2, 16, 4, 16, moment)).toThrow(/8 wide/);
  });
});
