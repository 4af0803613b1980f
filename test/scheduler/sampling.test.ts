/**
 * Choosing from a server's top entries gives the same token as choosing from the whole row: greedy and
 * top-k sampling over random logits (with ties), and the server's ranking (node/exec topEntries).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ort from 'onnxruntime-node';
import { entriesNeeded, sampleFromRanked, sampleToken, type SamplingOptions } from '../../scheduler/sampling.js';
import { lastRow, topEntries } from '../../node/exec/tensors.js';

/** Logits with many ties: small integers scaled, so equal values are common. */
const logitsArb = fc.array(fc.integer({ min: -20, max: 20 }), { minLength: 2, maxLength: 300 }).map((v) => Float32Array.from(v, (x) => x / 4));
const optionsArb: fc.Arbitrary<SamplingOptions> = fc.oneof(
  fc.constant({}),
  fc.record({ temperature: fc.double({ min: 0.05, max: 2, noNaN: true }), topK: fc.integer({ min: 1, max: 40 }), seed: fc.integer({ min: 0, max: 1000 }) }),
);

describe('sampling from top entries', () => {
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
