/**
 * The edges of step pricing (issue 21's mutation testing found them untested): every bound of a span, negative
 * and zero prices, malformed chunk tokens, and the base-unit parser, each at the value where a changed
 * comparison would give another answer.
 */
import { describe, expect, it } from 'vitest';
import { parseBaseUnits, spanFlops, stepCharge } from '../../policy/pricing.js';

const model = {
  costDims: { batch_size: 1, sequence_length: 4 },
  statefulPairs: [{ input: 'past_key_values.0.key', output: 'present.0.key' }],
  fragments: [{ flops: 4e9 }, { flops: 8e9 }],
} as unknown as Parameters<typeof stepCharge>[0];

describe('pricing bounds', () => {
  it('a span is whole fragments, start ≥ 0, end > start, end ≤ the count', () => {
    expect(spanFlops(model, 0, 2)).toBe(12_000_000_000n);
    expect(spanFlops(model, 1, 2)).toBe(8_000_000_000n);
    for (const [start, end] of [[-1, 1], [0, 0], [1, 1], [1, 0], [0, 3], [0.5, 1], [0, 1.5], [Number.NaN, 1]]) {
      expect(() => spanFlops(model, start, end), `[${start}, ${end})`).toThrow(new RangeError(`span [${start}, ${end}) is not within the model's 2 fragments`));
    }
  });

  it('a negative price is refused; a zero price is free whatever the step (nothing else is checked)', () => {
    expect(() => stepCharge(model, -1n, { start: 0, end: 1, chunkTokens: [1] })).toThrow(new RangeError('pricePerGflop must not be negative'));
    expect(stepCharge(model, 0n, { start: 0, end: 1, chunkTokens: [-1] })).toBe(0n);
    expect(stepCharge(model, 0n, { start: 5, end: 9, chunkTokens: [1] })).toBe(0n);
  });

  it('chunk tokens are non-negative safe integers; zero is allowed', () => {
    expect(stepCharge(model, 1n, { start: 0, end: 1, chunkTokens: [0] })).toBe(0n);
    expect(stepCharge(model, 1n, { start: 0, end: 1, chunkTokens: [0, 4] })).toBe(4n); // 1 × 4e9 flops × 4 positions ÷ (4 × 1e9)
    for (const t of [-1, 1.5, Number.NaN, 2 ** 53]) {
      expect(() => stepCharge(model, 1n, { start: 0, end: 1, chunkTokens: [t] })).toThrow(new RangeError(`chunk tokens must be non-negative integers, got ${t}`));
    }
  });

  it('base units are digits only; empty or absent is zero; the error names the field', () => {
    expect(parseBaseUnits(undefined)).toBe(0n);
    expect(parseBaseUnits('')).toBe(0n);
    expect(parseBaseUnits('0')).toBe(0n);
    expect(parseBaseUnits('12345678901234567890')).toBe(12345678901234567890n);
    expect(() => parseBaseUnits('1a')).toThrow(new RangeError('amount must be a whole number of token base units, got "1a"'));
    expect(() => parseBaseUnits('-1', 'price')).toThrow(new RangeError('price must be a whole number of token base units, got "-1"'));
    expect(() => parseBaseUnits(' 1')).toThrow(/whole number/);
  });
});
