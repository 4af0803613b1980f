/** Step pricing: exact bigints, rounded up, per position for KV models and per run without KV; the voucher travels on the wire. */
import { describe, expect, it } from 'vitest';
import { stepCharge, spanFlops, tokensAtCostDims, parseBaseUnits } from '../../policy/pricing.js';
import { encodeStepRequestFrame, ExecRequestType, fromDecodedVoucher, type DecodedRequest } from '../../net/exec/codec.js';

const kvModel = {
  costDims: { batch_size: 1, sequence_length: 16, past_sequence_length: 8 },
  statefulPairs: [{ input: 'past_key_values.0.key', output: 'present.0.key' }],
  fragments: [{ flops: 1_600_000 }, { flops: 3_200_001 }, { flops: 800_000.5 }],
} as unknown as Parameters<typeof stepCharge>[0];
const plainModel = { ...kvModel, statefulPairs: [] } as unknown as Parameters<typeof stepCharge>[0];

describe('step pricing', () => {
  it('divides by the largest non-batch costDim and rounds flops up', () => {
    expect(tokensAtCostDims(kvModel)).toBe(16n);
    expect(spanFlops(kvModel, 1, 3)).toBe(3_200_001n + 800_001n);
  });

  it('charges per new position (replays included) for a KV model, rounded up', () => {
    // 1e9 per GFLOP × 1.6e6 flops × 10 positions / (16 × 1e9) = 1_000_000 exactly
    expect(stepCharge(kvModel, 1_000_000_000n, { start: 0, end: 1, chunkTokens: [10] })).toBe(1_000_000n);
    expect(stepCharge(kvModel, 1_000_000_000n, { start: 0, end: 1, chunkTokens: [9, 1] })).toBe(1_000_000n);
    // 1 × 3_200_001 × 1 / 16e9 → rounds up to 1
    expect(stepCharge(kvModel, 1n, { start: 1, end: 2, chunkTokens: [1] })).toBe(1n);
    expect(stepCharge(kvModel, 0n, { start: 0, end: 3, chunkTokens: [100] })).toBe(0n);
  });

  it('charges one run at costDims per chunk without a KV cache', () => {
    expect(stepCharge(plainModel, 1_000_000_000n, { start: 0, end: 1, chunkTokens: [10] })).toBe(1_600_000n);
    expect(stepCharge(plainModel, 1_000_000_000n, { start: 0, end: 1, chunkTokens: [10, 10] })).toBe(3_200_000n);
  });

  it('refuses spans outside the model and malformed prices', () => {
    expect(() => stepCharge(kvModel, 1n, { start: 2, end: 4, chunkTokens: [1] })).toThrow(/not within/);
    expect(() => parseBaseUnits('1.5', 'price')).toThrow(/whole number/);
    expect(parseBaseUnits('', 'price')).toBe(0n);
  });

  it('a step frame carries the voucher and chunk tokens (fields 9 and 10)', () => {
    const signature = new Uint8Array(65).fill(7);
    const chunks = encodeStepRequestFrame({
      sessionId: 's', stepId: 3n, position: 4, inputs: [],
      voucher: { payer: '0x00000000000000000000000000000000000000aa', payee: '0x00000000000000000000000000000000000000bb', cumulativeAmount: '123456789012345678901234', deadline: 1_900_000_000n, signature },
      chunkTokens: [10, 1, 300],
    });
    const frame = Buffer.concat(chunks);
    // skip the varint length prefix
    let i = 0;
    while (frame[i] & 0x80) i++;
    const req = ExecRequestType.decode(frame.subarray(i + 1)) as unknown as DecodedRequest;
    expect(req.step?.chunkTokens).toEqual([10, 1, 300]);
    const v = fromDecodedVoucher(req.step!.voucher!);
    expect(v.cumulativeAmount).toBe('123456789012345678901234');
    expect(v.deadline).toBe(1_900_000_000n);
    expect(Buffer.from(v.signature)).toEqual(Buffer.from(signature));
  });
});
