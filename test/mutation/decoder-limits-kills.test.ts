/**
 * The exec decoders' limits (net/exec/scan.ts, net/exec/decode.ts) at each bound, written so that a changed line
 * is seen (issue 21, mutation testing): frames written byte by byte with small limits, each one at its limit
 * (accepted) and one past it (refused with the exact code and message), every wire type in every place, and
 * prefixes of frames still arriving. The fuzzers (test/fuzz/decoders.test.ts) show no input escapes as a
 * crash; this file shows each check refuses what it should and nothing else.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_SCAN_LIMITS, MAX_TENSOR_RANK, scanRequest, scanRequestPrefix, scanResponse, scanResponsePrefix, type ScanLimits } from '../../net/exec/scan.js';
import { decodeRequestFrame, decodeScannedResponse } from '../../net/exec/decode.js';
import { ExecError } from '../../net/exec/errors.js';

// ------------------------------------------------------------------ protobuf by hand

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80); }
  out.push(n);
  return out;
}
const key = (field: number, wire: number): number[] => varint(field * 8 + wire);
const len = (field: number, body: number[]): number[] => [...key(field, LEN), ...varint(body.length), ...body];
const num = (field: number, value: number): number[] => [...key(field, VARINT), ...varint(value)];
const text = (field: number, s: string): number[] => len(field, [...Buffer.from(s)]);
const frame = (...parts: number[][]): Uint8Array => Uint8Array.from(parts.flat());

/** A Tensor message: name, dtype, dims (packed unless `unpacked`), data of `dataBytes` bytes, wire encoding. */
function tensor(o: { name?: string; dtype?: number; dims?: number[]; unpacked?: boolean; dataBytes?: number; encoding?: number; extra?: number[] }): number[] {
  const dims = o.dims ?? [];
  return [
    ...(o.name !== undefined ? text(1, o.name) : []),
    ...(o.dtype !== undefined ? num(2, o.dtype) : []),
    ...(o.unpacked ? dims.flatMap((d) => num(3, d)) : dims.length ? len(3, dims.flatMap(varint)) : []),
    ...(o.dataBytes !== undefined ? len(4, new Array<number>(o.dataBytes).fill(0)) : []),
    ...(o.encoding !== undefined ? num(40, o.encoding) : []),
    ...(o.extra ?? []),
  ];
}
const FLOAT = 1;
/** A float32 tensor of `dims` with the right data length. */
const floats = (dims: number[], name = 'x'): number[] => tensor({ name, dtype: FLOAT, dims, dataBytes: 4 * dims.reduce((a, b) => a * b, 1) });

/** ExecRequest{step: Step{...fields}}. */
const step = (...fields: number[][]): Uint8Array => frame(len(2, fields.flat()));
/** ExecResponse{step: StepReply{...fields}}. */
const reply = (...fields: number[][]): Uint8Array => frame(len(2, fields.flat()));

const small: ScanLimits = { maxTensors: 3, maxChunks: 2, maxRank: 2, maxStringBytes: 4, maxSmallBytes: 6, maxListEntries: 2 };

/** The ExecError a call throws (fails the test when it throws nothing or something else). */
function refusal(run: () => unknown): ExecError {
  try { run(); } catch (err) {
    expect(err).toBeInstanceOf(ExecError);
    return err as ExecError;
  }
  throw new Error('expected a refusal');
}
const refuses = (run: () => unknown, code: string, message: string): void => {
  const err = refusal(run);
  expect({ code: err.code, message: err.message }).toEqual({ code, message });
};

describe('limits at their bound and one past', () => {
  it('defaults', () => {
    expect(DEFAULT_SCAN_LIMITS).toEqual({ maxTensors: 16_384, maxChunks: 8_192, maxRank: 8, maxStringBytes: 4_096, maxSmallBytes: 65_536, maxListEntries: 8_192 });
    expect(MAX_TENSOR_RANK).toBe(8);
    // the defaults apply when no limits are given: 9 dims
    refuses(() => scanRequest(step(len(4, tensor({ dtype: FLOAT, dims: [1, 1, 1, 1, 1, 1, 1, 1, 1], dataBytes: 4 })))), 'BAD_REQUEST', 'a tensor of request.step.inputs has more than 8 dims');
    expect(() => scanRequest(step(len(4, floats([1, 1, 1, 1, 1, 1, 1, 1]))))).not.toThrow();
    expect(() => scanResponse(reply(len(3, floats([1, 1, 1, 1, 1, 1, 1, 1]))))).not.toThrow();
    expect(scanRequestPrefix(step(len(4, floats([1, 1, 1, 1, 1, 1, 1, 1, 1]))))?.code).toBe('BAD_REQUEST');
    expect(scanResponsePrefix(reply(len(3, floats([1, 1, 1, 1, 1, 1, 1, 1, 1]))))?.code).toBe('BAD_REQUEST');
  });

  it('tensors in the whole frame, inputs and replay chunks together', () => {
    const three = step(len(4, floats([1])), len(4, floats([1])), len(5, len(2, floats([1]))));
    expect(() => scanRequest(three, small)).not.toThrow();
    refuses(() => scanRequest(step(len(4, floats([1])), len(4, floats([1])), len(5, [...len(2, floats([1])), ...len(2, floats([1]))])), small), 'TOO_LARGE', 'the frame carries more than 3 tensors');
  });

  it('replay chunks, in a request and in a reply', () => {
    expect(() => scanRequest(step(len(5, []), len(5, [])), small)).not.toThrow();
    refuses(() => scanRequest(step(len(5, []), len(5, []), len(5, [])), small), 'TOO_LARGE', 'request.step.replay has more than 2 chunks');
    refuses(() => scanResponse(reply(len(8, []), len(8, []), len(8, [])), small), 'TOO_LARGE', 'reply.step.replay_outputs has more than 2 chunks');
  });

  it('rank, packed or one dim at a time', () => {
    expect(() => scanRequest(step(len(4, floats([2, 3]))), small)).not.toThrow();
    expect(() => scanRequest(step(len(4, tensor({ dtype: FLOAT, dims: [2, 3], unpacked: true, dataBytes: 24 }))), small)).not.toThrow();
    refuses(() => scanRequest(step(len(4, floats([1, 2, 3]))), small), 'BAD_REQUEST', 'a tensor of request.step.inputs has more than 2 dims');
    refuses(() => scanRequest(step(len(4, tensor({ dtype: FLOAT, dims: [1, 2, 3], unpacked: true, dataBytes: 24 }))), small), 'BAD_REQUEST', 'a tensor of request.step.inputs has more than 2 dims');
  });

  it('string fields, bytes fields and tensor names', () => {
    expect(() => scanRequest(step(text(1, 'abcd')), small)).not.toThrow();
    refuses(() => scanRequest(step(text(1, 'abcde')), small), 'TOO_LARGE', 'request.step.session_id is 5 bytes, over the limit of 4');
    expect(() => scanRequest(step(len(9, [1, 2, 3, 4, 5, 6])), small)).not.toThrow();
    refuses(() => scanRequest(step(len(9, [1, 2, 3, 4, 5, 6, 7])), small), 'TOO_LARGE', 'request.step.voucher is 7 bytes, over the limit of 6');
    refuses(() => scanResponse(frame(len(1, [...num(1, 3), ...len(2, [1, 2, 3, 4, 5, 6, 7])])), small), 'TOO_LARGE', 'reply.error.message is 7 bytes, over the limit of 6');
    expect(() => scanRequest(step(len(4, floats([1], 'abcd'))), small)).not.toThrow();
    refuses(() => scanRequest(step(len(4, floats([1], 'abcde'))), small), 'TOO_LARGE', 'a tensor name in request.step.inputs is 5 bytes, over the limit of 4');
  });

  it('entries of each repeated field, counted per field', () => {
    expect(() => scanRequest(step(text(8, 'a'), text(8, 'b'), text(11, 'a'), text(11, 'b')), small)).not.toThrow();
    refuses(() => scanRequest(step(text(8, 'a'), text(8, 'b'), text(8, 'c')), small), 'TOO_LARGE', 'request.step.want has more than 2 entries');
    refuses(() => scanRequest(step(len(7, []), len(7, []), len(7, [])), small), 'TOO_LARGE', 'request.step.forward has more than 2 entries');
    expect(() => scanRequest(step(len(7, []), len(7, [])), small)).not.toThrow();
    // chunk_tokens packed, and the same field sent unpacked
    expect(() => scanRequest(step(len(10, [1, 2])), small)).not.toThrow();
    refuses(() => scanRequest(step(len(10, [1, 2, 3])), small), 'TOO_LARGE', 'request.step.chunk_tokens has more than 2 entries');
    expect(() => scanRequest(step(num(10, 1), num(10, 2)), small)).not.toThrow();
    refuses(() => scanRequest(step(num(10, 1), num(10, 2), num(10, 3)), small), 'TOO_LARGE', 'request.step.chunk_tokens has more than 2 entries');
    // a hop's own repeated fields, and an open session's fragments
    refuses(() => scanRequest(step(len(7, [...text(2, 'a'), ...text(2, 'b'), ...text(2, 'c')])), small), 'TOO_LARGE', 'request.step.forward.addrs has more than 2 entries');
    refuses(() => scanRequest(frame(len(1, [...len(2, []), ...len(2, []), ...len(2, [])])), small), 'TOO_LARGE', 'request.open.fragments has more than 2 entries');
  });
});

describe('structure', () => {
  it('field 0, unknown wire types, wrong wire types', () => {
    refuses(() => scanRequest(frame([0x02, 0x00])), 'BAD_REQUEST', 'malformed frame: field 0 in request');
    refuses(() => scanRequest(step([0x03])), 'BAD_REQUEST', 'malformed frame: field 0 in request.step');
    refuses(() => scanRequest(step(key(20, 3))), 'BAD_REQUEST', 'malformed frame: wire type 3 in request.step');
    refuses(() => scanRequest(step(key(20, 4))), 'BAD_REQUEST', 'malformed frame: wire type 4 in request.step');
    refuses(() => scanRequest(step(key(20, 7))), 'BAD_REQUEST', 'malformed frame: wire type 7 in request.step');
    refuses(() => scanRequest(step(num(1, 5))), 'BAD_REQUEST', 'malformed frame: request.step.session_id has the wrong wire type');
    refuses(() => scanRequest(step([...key(1, I32), 0, 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: request.step.session_id has the wrong wire type');
    refuses(() => scanRequest(step(len(2, [1]))), 'BAD_REQUEST', 'malformed frame: request.step.step_id has the wrong wire type');
    refuses(() => scanRequest(step([...key(4, VARINT), 1])), 'BAD_REQUEST', 'malformed frame: request.step.inputs has the wrong wire type');
  });

  it('fixed-size fields: 8 or 4 bytes, and a cut one', () => {
    expect(() => scanResponse(reply([...key(4, I64), 0, 0, 0, 0, 0, 0, 0, 0], text(1, 's')))).not.toThrow();
    expect(() => scanResponse(reply([...key(4, I32), 0, 0, 0, 0], text(1, 's')))).not.toThrow();
    refuses(() => scanResponse(reply([...key(1, I64), 0, 0, 0, 0, 0, 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: reply.step.session_id has the wrong wire type');
    refuses(() => scanResponse(reply([...key(4, I64), 0, 0, 0, 0, 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: reply.step ends inside a fixed-size field');
    refuses(() => scanResponse(reply([...key(4, I32), 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: reply.step ends inside a fixed-size field');
    expect(() => scanResponse(reply([...key(99, I32), 0, 0, 0, 0]))).not.toThrow(); // unknown fixed32: skipped
  });

  it('unknown fields are skipped by their wire type; known varints pass', () => {
    expect(() => scanRequest(step(num(99, 300), len(98, [1, 2, 3]), num(2, 7), num(3, 1), text(1, 'ok')))).not.toThrow();
    refuses(() => scanRequest(step(len(98, [1, 2, 3]), text(1, 'too long for the limit')), small), 'TOO_LARGE', 'request.step.session_id is 22 bytes, over the limit of 4');
  });

  it('varints: up to 10 bytes, cut ones, and lengths that overrun', () => {
    const tenByteFive = [0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
    expect(() => scanRequest(frame([...key(2, LEN), ...tenByteFive, ...text(1, 'abc')]))).not.toThrow();
    refuses(() => scanRequest(frame([...key(2, LEN), 0x85, ...tenByteFive, ...text(1, 'abc')])), 'BAD_REQUEST', 'malformed frame: request has a varint longer than 10 bytes');
    refuses(() => scanRequest(frame([0x92])), 'BAD_REQUEST', 'malformed frame: request ends inside a varint');
    refuses(() => scanRequest(frame([...key(2, LEN)])), 'BAD_REQUEST', 'malformed frame: request ends inside a varint');
    refuses(() => scanRequest(frame([...key(2, LEN), 10, 1, 2])), 'BAD_REQUEST', 'malformed frame: a field of 10 bytes overruns request');
    expect(() => scanRequest(frame(len(2, [])))).not.toThrow();
    expect(() => scanRequest(new Uint8Array(0))).not.toThrow();
    // a length of 2^14 + 3 read whole (both bytes count): it overruns
    refuses(() => scanRequest(frame([...key(2, LEN), 0x83, 0x80, 0x01, 1, 2, 3])), 'BAD_REQUEST', 'malformed frame: a field of 16387 bytes overruns request');
  });
});

describe('tensors', () => {
  const input = (t: number[]): Uint8Array => step(len(4, t));
  it('dims × element size must equal the data length, by dtype', () => {
    expect(() => scanRequest(input(floats([2, 3])))).not.toThrow();
    refuses(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [2, 3], dataBytes: 20 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dims holding 6 elements (24 bytes) but 20 bytes of data');
    expect(() => scanRequest(input(tensor({ dtype: 7, dims: [3], dataBytes: 24 })))).not.toThrow(); // int64
    expect(() => scanRequest(input(tensor({ dtype: 22, dims: [3], dataBytes: 2 })))).not.toThrow(); // int4: 12 bits round up to 2 bytes
    refuses(() => scanRequest(input(tensor({ dtype: 22, dims: [3], dataBytes: 1 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dims holding 3 elements (2 bytes) but 1 bytes of data');
    expect(() => scanRequest(input(tensor({ dtype: FLOAT, dataBytes: 4 })))).not.toThrow(); // a scalar
    expect(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [0] })))).not.toThrow(); // no elements, no data
    refuses(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [0], dataBytes: 1 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dims holding 0 elements (0 bytes) but 1 bytes of data');
  });

  it('a dtype that cannot travel, and wire encodings', () => {
    refuses(() => scanRequest(input(tensor({ dims: [1], dataBytes: 4 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dtype 0, which cannot travel');
    refuses(() => scanRequest(input(tensor({ dtype: 8, dims: [1], dataBytes: 4 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dtype 8, which cannot travel');
    expect(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 6, encoding: 1 })))).not.toThrow(); // fp16
    expect(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 5, encoding: 2 })))).not.toThrow(); // int8 blocks: 2 + 3
    refuses(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 12, encoding: 1 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has dims holding 3 elements (6 bytes) but 12 bytes of data');
    refuses(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 12, encoding: 4 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has wire encoding 4 on dtype 1, which is not one this node decodes');
    // encoding 3, a palette (quant18): its length must fit some palette of the tensor's elements
    refuses(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 2, encoding: 3 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has 2 bytes of palette data, which fits no palette of 3 elements');
    refuses(() => scanRequest(input(tensor({ dtype: 7, dims: [3], dataBytes: 6, encoding: 1 }))), 'BAD_REQUEST', 'a tensor of request.step.inputs has wire encoding 1 on dtype 7, which is not one this node decodes');
    expect(() => scanRequest(input(tensor({ dtype: FLOAT, dims: [3], dataBytes: 12, encoding: 0 })))).not.toThrow();
  });

  it('fields of a tensor that overrun it, unknown ones skipped, bad wire types refused', () => {
    const extra = (bytes: number[]): Uint8Array => input(tensor({ dtype: FLOAT, dims: [1], dataBytes: 4, extra: bytes }));
    expect(() => scanRequest(extra([...num(9, 5), ...key(10, I64), 0, 0, 0, 0, 0, 0, 0, 0, ...key(11, I32), 0, 0, 0, 0, ...len(12, [1, 2])]))).not.toThrow();
    refuses(() => scanRequest(extra([...key(10, I64), 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: a field overruns request.step.inputs');
    refuses(() => scanRequest(extra([...key(11, I32), 0, 0, 0])), 'BAD_REQUEST', 'malformed frame: a field overruns request.step.inputs');
    refuses(() => scanRequest(extra([...key(12, LEN), 5, 1])), 'BAD_REQUEST', 'malformed frame: a field overruns request.step.inputs');
    refuses(() => scanRequest(extra([...key(12, 3)])), 'BAD_REQUEST', 'malformed frame: wire type 3 in request.step.inputs');
    refuses(() => scanRequest(input([...num(2, FLOAT), ...len(4, [0, 0, 0, 0]).slice(0, 2), 9, 9])), 'BAD_REQUEST', 'malformed frame: a field overruns a tensor of request.step.inputs');
    refuses(() => scanRequest(input([...num(2, FLOAT), ...key(1, LEN), 9, 1])), 'BAD_REQUEST', 'malformed frame: a field overruns a tensor of request.step.inputs');
    // a dims field longer than the tensor is not read past it
    refuses(() => scanRequest(input([...num(2, FLOAT), ...key(3, LEN), 9, 1])), 'BAD_REQUEST', 'a tensor of request.step.inputs has dims holding 1 elements (4 bytes) but 0 bytes of data');
  });

  it('replay chunks: tensors inside, positions and unknown fields skipped, overruns refused', () => {
    const chunk = (body: number[]): Uint8Array => step(len(5, body));
    expect(() => scanRequest(chunk([...num(1, 4), ...len(2, floats([2])), ...len(3, [1]), ...key(4, I32), 0, 0, 0, 0]))).not.toThrow();
    refuses(() => scanRequest(chunk(len(2, tensor({ dtype: FLOAT, dims: [2], dataBytes: 4 })))), 'BAD_REQUEST', 'a tensor of request.step.replay has dims holding 2 elements (8 bytes) but 4 bytes of data');
    refuses(() => scanRequest(chunk([...key(2, LEN), 50, 1, 2])), 'BAD_REQUEST', 'malformed frame: a tensor of 50 bytes overruns request.step.replay');
    refuses(() => scanRequest(chunk([...key(3, LEN), 50, 1, 2])), 'BAD_REQUEST', 'malformed frame: a field overruns request.step.replay');
    refuses(() => scanRequest(chunk([...key(2, VARINT), 0x80])), 'BAD_REQUEST', 'malformed frame: request.step.replay ends inside a varint');
    refuses(() => scanResponse(reply(len(8, len(2, tensor({ dtype: FLOAT, dims: [1, 1, 1], dataBytes: 4 })))), small), 'BAD_REQUEST', 'a tensor of reply.step.replay_outputs has more than 2 dims');
  });
});

describe('prefixes of frames still arriving', () => {
  const big = step(text(1, 'sess'), len(4, floats([4, 4])), len(5, len(2, floats([2, 2]))));
  it('every prefix of a valid frame passes', () => {
    for (let n = 0; n <= big.length; n++) expect(scanRequestPrefix(big.subarray(0, n))).toBeUndefined();
    const r = reply(text(1, 'sess'), len(3, floats([2, 2])), len(8, len(2, floats([2]))));
    for (let n = 0; n <= r.length; n++) expect(scanResponsePrefix(r.subarray(0, n))).toBeUndefined();
  });

  it('a limit already broken in the bytes seen is reported, a cut field is not an error', () => {
    const tooLong = step(text(1, 'abcdefgh'));
    expect(scanRequestPrefix(tooLong.subarray(0, 5), small)).toMatchObject({ code: 'TOO_LARGE', message: 'request.step.session_id is 8 bytes, over the limit of 4' });
    // a tensor cut after its third dim: the rank is already over
    const deep = step(len(4, tensor({ dtype: FLOAT, dims: [1, 1, 1], unpacked: true, dataBytes: 400 })));
    expect(scanRequestPrefix(deep.subarray(0, 14), small)).toMatchObject({ code: 'BAD_REQUEST', message: 'a tensor of request.step.inputs has more than 2 dims' });
    // the same inside a replay chunk still arriving
    const deepChunk = step(len(5, len(2, tensor({ dtype: FLOAT, dims: [1, 1, 1], unpacked: true, dataBytes: 400 }))));
    expect(scanRequestPrefix(deepChunk.subarray(0, 18), small)).toMatchObject({ code: 'BAD_REQUEST', message: 'a tensor of request.step.replay has more than 2 dims' });
    // a tensor cut inside its data: nothing wrong yet; too many chunks already
    expect(scanRequestPrefix(step(len(4, floats([100]))).subarray(0, 20), small)).toBeUndefined();
    expect(scanRequestPrefix(step(len(5, []), len(5, []), len(5, []), text(1, 'x')).subarray(0, 9), small)).toMatchObject({ code: 'TOO_LARGE' });
    // malformed already: field 0
    expect(scanRequestPrefix(frame([0x02, 0x00]))).toMatchObject({ code: 'BAD_REQUEST', message: 'malformed frame: field 0 in request' });
    // cut in a fixed-size field or a varint: not an error yet
    expect(scanResponsePrefix(reply([...key(4, I64), 0, 0, 0, 0, 0, 0, 0, 0]).subarray(0, 5))).toBeUndefined();
    expect(scanRequestPrefix(frame([0x92]))).toBeUndefined();
    // the whole frame seen and valid: undefined; whole and broken: the error
    expect(scanRequestPrefix(step(text(1, 'ok')))).toBeUndefined();
    expect(scanRequestPrefix(step(len(4, tensor({ dtype: FLOAT, dims: [2], dataBytes: 4 }))))).toMatchObject({ code: 'BAD_REQUEST' });
  });
});

describe('decode after the scan', () => {
  it('decodes a frame that passes, and turns protobufjs\'s refusal into BAD_REQUEST naming the message', () => {
    const ok = decodeRequestFrame(step(text(1, 'sess'), num(2, 7), len(4, floats([2]))));
    expect(ok.step?.sessionId).toBe('sess');
    expect(ok.step?.inputs?.[0].dims?.map(Number)).toEqual([2]);
    // the voucher passes the scan as opaque bytes; inside it a field of wire type 7 protobufjs cannot skip
    const err = refusal(() => decodeRequestFrame(step(len(9, key(100, 7)))));
    expect(err.code).toBe('BAD_REQUEST');
    expect(err.message).toMatch(/^malformed frame: the request does not decode \(.+\)$/);
    expect(err.cause).toBeInstanceOf(Error);
    // the scan runs first and its limits apply
    refuses(() => decodeRequestFrame(step(text(1, 'abcde')), small), 'TOO_LARGE', 'request.step.session_id is 5 bytes, over the limit of 4');
    refuses(() => decodeRequestFrame(step(len(4, floats(new Array<number>(9).fill(1))))), 'BAD_REQUEST', 'a tensor of request.step.inputs has more than 8 dims');
    const r = decodeScannedResponse(reply(text(1, 'sess'), len(3, floats([1]))));
    expect(r.step?.sessionId).toBe('sess');
    const bad = refusal(() => decodeScannedResponse(frame(len(1, key(100, 7)))));
    expect(bad.message).toMatch(/^malformed frame: the reply does not decode \(.+\)$/);
  });
});
