/**
 * Choosing from a server's top entries gives the same token as choosing from the whole row: greedy and
 * top-k sampling over random logits (with ties), and the server's ranking (node/exec topEntries).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ort from 'onnxruntime-node';
import { entriesNeeded, sampleFromRanked, sampleToken, uniformAt, type SamplingOptions } from '../../policy/sampling.js';
import { lastRow, topEntries } from '../../node/exec/reply.js';

/** Logits with many ties: small integers scaled, so equal values are common. */
const logitsArb = fc.array(fc.integer({ min: -20, max: 20 }), { minLength: 2, maxLength: 300 }).map((v) => Float32Array.from(v, (x) => x / 4));
const optionsArb: fc.Arbitrary<SamplingOptions> = fc.oneof(
  fc.constant({}),
  fc.record({ temperature: fc.double({ min: 0.05, max: 2, noNaN: true }), topK: fc.integer({ min: 1, max: 40 }), seed: fc.integer({ min: 0, max: 1000 }) }),
);

/**
 * The textbook sampler: rank the whole row, cut to top-k, then to top-p, draw walking the ranked list; with
 * temperature alone, walk the row in index order (inverse CDF). sampleToken must choose the same.
 */
function referenceSample(logits: Float32Array, position: number, options: SamplingOptions): number {
  const t = options.temperature ?? 0;
  let order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  if (!(t > 0)) return order[0];
  const topK = options.topK && options.topK > 0 ? options.topK : undefined;
  const topP = options.topP !== undefined && options.topP > 0 && options.topP < 1 ? options.topP : undefined;
  if (topK === undefined && topP === undefined) order = Array.from(logits.keys());
  if (topK) order = order.slice(0, topK);
  const max = Math.max(...order.map((i) => logits[i]));
  let weights = order.map((i) => Math.exp((logits[i] - max) / t));
  const total = weights.reduce((a, b) => a + b, 0);
  if (options.topP !== undefined && options.topP > 0 && options.topP < 1) {
    let cumulative = 0;
    let keep = 0;
    while (keep < weights.length && cumulative < options.topP * total) cumulative += weights[keep++];
    order = order.slice(0, Math.max(1, keep));
    weights = weights.slice(0, order.length);
  }
  let r = uniformAt(options.seed ?? 0, position) * weights.reduce((a, b) => a + b, 0);
  for (let n = 0; n < order.length; n++) if ((r -= weights[n]) < 0) return order[n];
  return order[order.length - 1];
}

describe('sampling from top entries', () => {
  it('sampleToken (threshold head, partial top-k) chooses what ranking the whole row would', () => {
    const spreadArb = fc.array(fc.double({ min: -30, max: 30, noNaN: true }), { minLength: 2, maxLength: 3000 }).map((v) => Float32Array.from(v));
    const anyOptions: fc.Arbitrary<SamplingOptions> = fc.record({
      temperature: fc.oneof(fc.constant(0), fc.double({ min: 0.05, max: 3, noNaN: true })),
      topK: fc.oneof(fc.constant(undefined), fc.integer({ min: 1, max: 60 }), fc.constant(5000)),
      topP: fc.oneof(fc.constant(undefined), fc.constant(1), fc.double({ min: 0.05, max: 0.99, noNaN: true })),
      seed: fc.integer({ min: 0, max: 10_000 }),
    }, { requiredKeys: ['temperature', 'seed'] });
    fc.assert(fc.property(fc.oneof(logitsArb, spreadArb), anyOptions, fc.integer({ min: 0, max: 500 }), (logits, options, position) => {
      expect(sampleToken(logits, position, options)).toBe(referenceSample(logits, position, options));
    }), { numRuns: 1500 });
  });

  it('equals sampling from the whole row whenever entriesNeeded says it is enough', () => {
    fc.assert(fc.property(logitsArb, optionsArb, fc.integer({ min: 0, max: 500 }), (logits, options, position) => {
      const k = entriesNeeded(options);
      expect(k).toBeDefined();
      const row = new ort.Tensor('float32', logits, [1, 1, logits.length]);
      const top = topEntries(row, k!, 'logits');
      const ids = Array.from(top.indices.data as BigInt64Array, Number);
      expect(sampleFromRanked(top.values.data as Float32Array, ids, position, options)).toBe(sampleToken(logits, position, options));
    }), { numRuns: 300 });
  });

  it('top-p needs the whole row', () => {
    expect(entriesNeeded({ temperature: 0.8, topK: 40, topP: 0.9 })).toBeUndefined();
    expect(entriesNeeded({ temperature: 0.8 })).toBeUndefined();
    expect(entriesNeeded({ temperature: 0 })).toBe(1);
  });

  it('ranks by value, then by the lower index, for every row of a batch', () => {
    const data = Float32Array.from([1, 3, 3, 2, /* row 2 */ 5, 5, 0, 5]);
    const rows = new ort.Tensor('float32', data, [2, 1, 4]);
    const top = topEntries(rows, 3, 'x');
    expect(top.values.dims).toEqual([2, 1, 3]);
    expect(Array.from(top.indices.data as BigInt64Array, Number)).toEqual([1, 2, 3, 0, 1, 3]);
    expect(Array.from(top.values.data as Float32Array)).toEqual([3, 3, 2, 5, 5, 5]);
  });

  it('lastRow keeps the newest position of each batch entry', () => {
    const t = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), [2, 3, 2]);
    const r = lastRow(t, 'x');
    expect(r.dims).toEqual([2, 1, 2]);
    expect(Array.from(r.data as Float32Array)).toEqual([5, 6, 11, 12]);
  });
});
