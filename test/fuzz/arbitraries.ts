/**
 * Valid messages of the exec protocol as fast-check arbitraries: tensors whose dims match their bytes, step
 * requests and replies encoded by the project's own hand encoder, control frames, vouchers and sampler
 * settings (with out-of-range values mixed in). The fuzzers mutate these (harness.ts hostileBytes) so that
 * their inputs reach the checks behind the first tag; decoders.test.ts and supplier-wire.test.ts share them.
 */
import fc from 'fast-check';
import { bitsPerElement } from '../../fragments/onnx/dtype.js';
import { ExecRequestType, ExecResponseType, encodeStepReplyFrame, encodeStepRequestFrame, type WireVoucher } from '../../net/exec/codec.js';
import type { WireTensor } from '../../proto/wire.js';

/** The payload of a length-prefixed frame given as chunks. */
export function payload(chunks: Uint8Array[] | Uint8Array): Uint8Array {
  const all = Buffer.concat(Array.isArray(chunks) ? chunks : [chunks]);
  let i = 0;
  while (all[i] & 0x80) i++;
  return all.subarray(i + 1);
}

// ---------------------------------------------------------------------------------------- valid messages

export const DTYPES = [1, 2, 3, 6, 7, 9, 10, 11] as const; // float, uint8, int8, int32, int64, bool, float16, double

export const tensor: fc.Arbitrary<WireTensor> = fc.record({
  name: fc.oneof(fc.constantFrom('input_ids', 'logits', 'hidden_states', 'present.0.key'), fc.string({ maxLength: 24 })),
  dtype: fc.constantFrom(...DTYPES),
  dims: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }),
}).map(({ name, dtype, dims }) => {
  const elements = dims.reduce((a, b) => a * b, 1);
  return { name, dtype, dims, data: new Uint8Array(Math.ceil((bitsPerElement(dtype)! * elements) / 8)).fill(7) };
});

export const address = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => `0x${Buffer.from(b).toString('hex')}`);

export const wireVoucher: fc.Arbitrary<WireVoucher> = fc.record({
  payer: fc.oneof(address, fc.string({ maxLength: 44 })),
  payee: fc.oneof(address, fc.string({ maxLength: 44 })),
  cumulativeAmount: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }).map(String), fc.string({ maxLength: 90 }), fc.constantFrom('', '-1', '1e9', '0x10', ' 1', '9'.repeat(79))),
  deadline: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  signature: fc.uint8Array({ maxLength: 70 }),
});

export const sampling = fc.record({
  temperature: fc.oneof(fc.double({ noNaN: false }), fc.double({ min: 0.01, max: 4, noNaN: true })),
  topK: fc.integer({ min: 0, max: 100 }),
  topP: fc.double(),
  seed: fc.integer(),
  position: fc.nat(),
});

export const stepRequest = fc.record({
  sessionId: fc.string({ maxLength: 40 }),
  stepId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  position: fc.nat({ max: 1 << 20 }),
  inputs: fc.array(tensor, { maxLength: 4 }),
  replay: fc.array(fc.record({ position: fc.nat({ max: 4096 }), tensors: fc.array(tensor, { maxLength: 3 }) }), { maxLength: 3 }),
  draftTokens: fc.nat({ max: 16 }),
  want: fc.array(fc.string({ maxLength: 16 }), { maxLength: 3 }),
  voucher: fc.option(wireVoucher, { nil: undefined }),
  chunkTokens: fc.array(fc.nat({ max: 1 << 16 }), { maxLength: 4 }),
  lastRowOnly: fc.array(fc.string({ maxLength: 16 }), { maxLength: 2 }),
  topK: fc.nat({ max: 64 }),
  sample: fc.option(sampling, { nil: undefined }),
});

export const controlRequest = fc.oneof(
  fc.record({
    sessionId: fc.string({ maxLength: 40 }),
    fragments: fc.array(fc.record({ cid: fc.string({ maxLength: 60 }), manifestCid: fc.string({ maxLength: 60 }), index: fc.nat({ max: 64 }) }), { maxLength: 4 }),
    maxLength: fc.nat({ max: 1 << 20 }), batch: fc.nat({ max: 64 }),
  }).map((open) => ExecRequestType.encode(ExecRequestType.fromObject({ open })).finish()),
  fc.string({ maxLength: 40 }).map((sessionId) => ExecRequestType.encode(ExecRequestType.fromObject({ close: { sessionId } })).finish()),
);

export const requestFrame = fc.oneof(
  { arbitrary: stepRequest.map((s) => payload(encodeStepRequestFrame(s))), weight: 4 },
  { arbitrary: controlRequest, weight: 1 },
);

export const replyFrame = fc.oneof(
  {
    arbitrary: fc.record({
      sessionId: fc.string({ maxLength: 40 }), stepId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), outputs: fc.array(tensor, { maxLength: 4 }),
      queueMs: fc.double({ min: 0, max: 1e6, noNaN: true }), computeMs: fc.double({ min: 0, max: 1e6, noNaN: true }),
      error: fc.option(fc.record({ code: fc.nat({ max: 20 }), message: fc.string({ maxLength: 60 }) }), { nil: undefined }),
      replayOutputs: fc.array(fc.record({ position: fc.nat({ max: 4096 }), tensors: fc.array(tensor, { maxLength: 2 }) }), { maxLength: 3 }),
      receipt: fc.option(fc.uint8Array({ maxLength: 300 }), { nil: undefined }),
      charge: fc.option(fc.bigInt({ min: 0n, max: 1n << 100n }).map(String), { nil: undefined }),
      paymentMs: fc.double({ min: 0, max: 1e3, noNaN: true }),
    }).map((r) => payload(encodeStepReplyFrame(r))),
    weight: 4,
  },
  {
    arbitrary: fc.oneof(
      fc.record({ code: fc.nat({ max: 20 }), message: fc.string({ maxLength: 60 }) }).map((error) => ExecResponseType.encode(ExecResponseType.fromObject({ error })).finish()),
      fc.record({ sessionId: fc.string({ maxLength: 40 }), maxLength: fc.nat() }).map((opened) => ExecResponseType.encode(ExecResponseType.fromObject({ opened })).finish()),
    ),
    weight: 1,
  },
);
