/**
 * Block-wise weight quantization (fragments/quantize/blockwise.ts): zero blocks exact, the int4 scale search and
 * zero points lowering the squared error, transposition, and the scheme options.
 */
import { describe, expect, it } from 'vitest';
import { blockLayout, dequantizeRows, quantizeRows, transpose } from '../../fragments/quantize/blockwise.js';
import { resolveScheme } from '../../fragments/quantize/scheme.js';
import { seededRandom } from '../../fragments/seeded-random.js';

/** Normal-ish seeded values with a few large outliers, as trained weights have. */
function weights(count: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: count }, () => (random() - 0.5) * 0.1 + (random() < 0.01 ? (random() - 0.5) * 2 : 0));
}

describe('block-wise quantization', () => {
  // The stated bound: every value comes back within half a step of its block (int8: max|x|/254); int4 within a
  // fifth of the block's largest magnitude (its scale search clips outliers by at most that, for finer steps).
  // Asymmetric int4 (a zero point per block) keeps the same bound: its range search clips each end by at most 14 %
  // and its steps are at most 2·max|x|·0.86/15, so the worst error is under (0.14 + 0.0573)·max|x| < max|x|/5.
  it.each([
    [8, 32, false], [8, 64, false], [8, 128, false], [4, 32, false], [4, 64, false], [4, 128, false], [4, 16, true], [4, 32, true], [4, 64, true], [4, 128, true],
  ] as const)('int%i with blocks of %i (zero points: %s) round-trips within its bound', (bits, block, asymmetric) => {
    const rows = 7;
    const rowLength = 200; // not a multiple of any block: the last block of each row is padded
    const values = weights(rows * rowLength, bits * 1000 + block);
    const q = quantizeRows(values, rows, rowLength, bits, block, asymmetric);
    const { blocks, padded } = blockLayout(rowLength, block);
    expect(q.data.length).toBe((rows * padded * bits) / 8);
    expect(q.scales.length).toBe(rows * blocks);
    expect(q.zeroPoints?.length).toBe(asymmetric ? rows * Math.ceil(blocks / 2) : undefined);
    const back = dequantizeRows(q, rows, rowLength, bits, block);
    let worst = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < rowLength; i++) {
        const b = Math.floor(i / block);
        let amax = 0;
        for (let j = b * block; j < Math.min(rowLength, (b + 1) * block); j++) amax = Math.max(amax, Math.abs(values[r * rowLength + j]));
        const bound = bits === 8 ? amax / 254 : amax / 5;
        const err = Math.abs(back[r * rowLength + i] - values[r * rowLength + i]);
        expect(err).toBeLessThanOrEqual(bound * (1 + 1e-6));
        worst = Math.max(worst, err);
      }
    }
    expect(q.error.maxAbsError).toBeCloseTo(worst, 7);
    expect(q.error.count).toBe(rows * rowLength);
    const relRms = Math.sqrt(q.error.sumSquaredError / q.error.sumSquared);
    expect(relRms).toBeLessThan(bits === 8 ? 0.02 : 0.35); // 1 % outliers 20× the rest: the large int4 blocks pay for them
    expect(relRms).toBeGreaterThan(0);
  });

  it('keeps a block of zeros exact, and an int4 block of two values exact', () => {
    const values = new Float32Array(64);
    values[40] = -0.75;
    values[41] = 0.375;
    const q = quantizeRows(values, 1, 64, 4, 32);
    const back = dequantizeRows(q, 1, 64, 4, 32);
    expect(Array.from(back.subarray(0, 32)).every((v) => v === 0)).toBe(true);
    expect(back[40]).toBe(-0.75);
    expect(back[41]).toBe(0.375);
  });

  it('int4 keeps the bound when a block holds both signs of its extreme (the search would clip one by 0.3 of it)', () => {
    // +1 and -1 among multiples of 0.1: the scale 0.8/8 restores those exactly (less squared error than 1/8), but on
    // the extreme/-8 side it clips -1 to 7 steps, 1 - 0.875 f away: over the bound for f below ~0.91 (0.3 here).
    const block = 128;
    const values = new Float32Array(block);
    for (let i = 0; i < block; i++) values[i] = (((i * 5) % 15) - 7) / 10; // multiples of 0.1: exact on a 0.1 step, not on 0.125
    values[3] = 1;
    values[40] = -1;
    const back = dequantizeRows(quantizeRows(values, 1, block, 4, block), 1, block, 4, block);
    for (let i = 0; i < block; i++) expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(1 / 5);
  });

  it('searches int4 scales: less squared error than the plain max/-8 scale on outlier-heavy weights', () => {
    const values = weights(64 * 256, 77);
    const q = quantizeRows(values, 64, 256, 4, 64);
    let plain = 0;
    for (let s = 0; s < values.length; s += 64) {
      let extreme = 0;
      for (let i = s; i < s + 64; i++) if (Math.abs(values[i]) > Math.abs(extreme)) extreme = values[i];
      const scale = Math.fround(extreme / -8);
      for (let i = s; i < s + 64; i++) plain += ((Math.min(7, Math.max(-8, Math.round(values[i] / scale))) * scale) - values[i]) ** 2;
    }
    expect(q.error.sumSquaredError).toBeLessThan(plain);
  });

  it('with zero points: less squared error than symmetric on one-signed blocks, and zeros still restore exactly', () => {
    const random = seededRandom(5);
    const values = Float32Array.from({ length: 32 * 128 }, (_, i) => (i % 5 === 0 ? 0 : random() * 0.3)); // non-negative blocks
    const symmetric = quantizeRows(values, 32, 128, 4, 32);
    const asymmetric = quantizeRows(values, 32, 128, 4, 32, true);
    // Symmetric spends the 8 negative levels on nothing here; the zero point moves them all into the block's range.
    expect(asymmetric.error.sumSquaredError).toBeLessThan(symmetric.error.sumSquaredError / 2);
    const back = dequantizeRows(asymmetric, 32, 128, 4, 32);
    for (let i = 0; i < values.length; i += 5) expect(back[i]).toBe(0);
  });

  it('transposes', () => {
    expect(Array.from(transpose(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, 3))).toEqual([1, 4, 2, 5, 3, 6]);
  });
});

describe('scheme options', () => {
  it('defaults the block per scheme and rejects what it does not write', () => {
    expect(resolveScheme('int8')).toEqual({ scheme: 'int8', bits: 8, block: 128 });
    expect(resolveScheme('int4', 32)).toEqual({ scheme: 'int4', bits: 4, block: 32 });
    expect(() => resolveScheme('int3')).toThrow(/unknown quantization scheme "int3"; choose int8 or int4/);
    expect(() => resolveScheme('int8', 48)).toThrow(/block size 48 is not supported; choose 32, 64, 128/);
  });
});
