/**
 * The verification rules (policy/verification.ts): the output digest keeps each position's largest entries,
 * agrees across honest numeric noise and disagrees with a cheat's; the referee's majority; the detection and
 * stake formulas docs/verification.md quotes; and a condemned peer stays excluded (policy/estimates.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  checksToDetect, compareDigests, firstMismatch, type StepDigest, detectionProbability, expectedChecksToDetect, majorityVerdict, minimumDeterrentStake, outputDigest, type DigestableTensor,
} from '../../policy/verification.js';
import { Estimates } from '../../policy/estimates.js';
import { seededRandom } from '../../fragments/seeded-random.js';

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** A float32 hidden state [1, rows, cols] of seeded Gaussian values. */
function hidden(rows: number, cols: number, seed: number): DigestableTensor & { data: Float32Array } {
  const r = seededRandom(seed);
  return { type: 'float32', dims: [1, rows, cols], data: Float32Array.from({ length: rows * cols }, () => gaussian(r)) };
}

/** `t` with Gaussian noise of `share` of each row's RMS. */
function perturbed(t: { dims: readonly number[]; data: Float32Array }, share: number, seed: number): DigestableTensor {
  const r = seededRandom(seed);
  const cols = t.dims[t.dims.length - 1];
  const out = new Float32Array(t.data.length);
  for (let row = 0; row < t.data.length; row += cols) {
    let sq = 0;
    for (let c = 0; c < cols; c++) sq += t.data[row + c] ** 2;
    const rms = Math.sqrt(sq / cols);
    for (let c = 0; c < cols; c++) out[row + c] = t.data[row + c] + share * rms * gaussian(r);
  }
  return { type: 'float32', dims: t.dims, data: out };
}

describe('output digest', () => {
  it('keeps, per position, the k entries of largest magnitude with their indices', () => {
    const t: DigestableTensor = { type: 'float32', dims: [2, 5], data: Float32Array.from([0.1, -3, 2, 0.5, -0.2, 4, 0, 0, -5, 1]) };
    const [d] = outputDigest({ h: t }, 2);
    expect(d).toMatchObject({ name: 'h', kind: 'top', rows: 2, k: 2 });
    expect([...d.indices]).toEqual([1, 2, 3, 0]);
    expect([...d.values]).toEqual([-3, 2, -5, 4]);
  });

  it('keeps integer outputs whole and compares them exactly', () => {
    const tokens = (v: number[]): DigestableTensor => ({ type: 'int64', dims: [1, v.length], data: BigInt64Array.from(v.map(BigInt)) });
    expect(compareDigests(outputDigest({ t: tokens([1, 2, 3]) }), outputDigest({ t: tokens([1, 2, 3]) }))).toBeUndefined();
    expect(compareDigests(outputDigest({ t: tokens([1, 2, 3]) }), outputDigest({ t: tokens([1, 2, 4]) }))?.reason).toBe('exact');
  });

  it('agrees across honest numeric differences (1e-6 and 1e-4 of the RMS) and differs from 1 % noise, step by step for prefill steps', () => {
    for (const rows of [10, 128]) {
      for (let seed = 1; seed <= 20; seed++) {
        const t = hidden(rows, 64, seed);
        const d = outputDigest({ h: t });
        expect(compareDigests(d, outputDigest({ h: perturbed(t, 1e-6, seed + 100) }))).toBeUndefined();
        expect(compareDigests(d, outputDigest({ h: perturbed(t, 1e-4, seed + 200) }))).toBeUndefined();
        expect(compareDigests(d, outputDigest({ h: perturbed(t, 0.01, seed + 300) }))?.reason).toMatch(/mean-error|overlap|max-error/);
      }
    }
  });

  it('pools the mean error of one-position decode steps over the session: 1 % noise is caught, honest noise is not', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const steps = Array.from({ length: 9 }, (_, i) => hidden(i === 0 ? 10 : 1, 64, seed * 100 + i));
      const original = steps.map((t) => outputDigest({ h: t }));
      const rerun = (share: number): StepDigest[] => steps.map((t, i) => outputDigest({ h: perturbed(t, share, seed * 1000 + i) }));
      expect(firstMismatch(original, rerun(1e-4))).toBeUndefined();
      expect(firstMismatch(original, rerun(0.01))?.mismatch.reason).toMatch(/mean-error|overlap|max-error/);
    }
    expect(firstMismatch([outputDigest({ h: hidden(1, 64, 1) })], [])?.mismatch.reason).toBe('outputs');
  });

  it('differs when outputs are another tensor of the same shape, or named or shaped otherwise', () => {
    const a = outputDigest({ h: hidden(4, 64, 1) });
    expect(compareDigests(a, outputDigest({ h: hidden(4, 64, 2) }))?.reason).toBe('overlap');
    expect(compareDigests(a, outputDigest({ g: hidden(4, 64, 1) }))?.reason).toBe('outputs');
    expect(compareDigests(a, outputDigest({ h: hidden(5, 64, 1) }))?.reason).toBe('shape');
  });

  it('is compact: 8 entries (64 bytes) a position whatever the hidden size', () => {
    const [d] = outputDigest({ h: hidden(32, 1024, 3) });
    expect(d.indices.byteLength + d.values.byteLength).toBe(32 * 64);
  });
});

describe('majority after a referee', () => {
  it('condemns whoever the referee disagrees with, and nobody when it agrees with neither or both', () => {
    expect(majorityVerdict(false, true)).toBe('supplier');
    expect(majorityVerdict(true, false)).toBe('checker');
    expect(majorityVerdict(false, false)).toBe('undecided');
    expect(majorityVerdict(true, true)).toBe('undecided');
  });
});

describe('detection and stake', () => {
  it('detection per request: 1 − (1 − c·q)^n', () => {
    expect(detectionProbability(0.04, 1, 1)).toBeCloseTo(0.04, 12);
    expect(detectionProbability(0.04, 1, 32)).toBeCloseTo(1 - 0.96 ** 32, 12);
    expect(detectionProbability(0.04, 0.1, 32)).toBeCloseTo(1 - (1 - 0.004) ** 32, 12);
    expect(detectionProbability(0, 1, 1000)).toBe(0);
    expect(expectedChecksToDetect(0.25)).toBe(4);
    expect(checksToDetect(1)).toBe(1);
    expect(checksToDetect(0.1, 0.99)).toBe(44);
  });

  it('the smallest deterrent slash S is the least with S · c > gain', () => {
    const gain = 1_000_000n;
    for (const rate of [0.01, 0.04, 0.5]) {
      const s = minimumDeterrentStake(gain, rate);
      expect(Number(s) * rate).toBeGreaterThan(Number(gain));
      expect(Number(s - 2n) * rate).toBeLessThanOrEqual(Number(gain));
    }
    expect(minimumDeterrentStake(100n, 0.5, 0.5)).toBe(401n);
    expect(() => minimumDeterrentStake(1n, 0)).toThrow(RangeError);
  });
});

describe('condemned peers', () => {
  it('stay excluded through later replies, and a timed exclusion ends', () => {
    let now = 1000;
    const e = new Estimates({ now: () => now });
    e.condemn('cheat');
    e.condemn('flood', 60_000);
    e.recordReply('cheat', 10, 0, 5, 1e6);
    expect(e.isBanned('cheat')).toBe(true);
    expect([...e.banned()].sort()).toEqual(['cheat', 'flood']);
    now += 60_001;
    expect(e.isBanned('flood')).toBe(false);
    expect(e.isBanned('cheat')).toBe(true);
  });
});
