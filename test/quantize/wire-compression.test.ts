/**
 * Wire compression of activations (net/exec/wire-compression.ts): fp16 and int8 blocks within their bounds, exact
 * half-precision conversions, refusals of malformed bytes, and compressed tensors inside exec frames.
 */
import { describe, expect, it } from 'vitest';
import { compressWireTensor, decodeFloats, encodeFloats, encodedBytes, encodePalette, fromHalf, paletteBytes, toHalf, WIRE_ERROR_BOUND, WIRE_INT8_BLOCK, WIRE_PALETTE, WireEncoding } from '../../net/exec/wire-compression.js';
import { encodeStepRequestFrame, ExecRequestType, toWireTensor } from '../../net/exec/codec.js';
import { wireToOrt } from '../../net/exec/tensors.js';
import { scanRequest } from '../../net/exec/scan.js';
import { seededRandom } from '../../fragments/seeded-random.js';

/** Activation-like values: mostly small, some large outliers, and a block of zeros. */
function activations(count: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  const out = Float32Array.from({ length: count }, () => (random() - 0.5) * 4 + (random() < 0.01 ? (random() - 0.5) * 200 : 0));
  out.fill(0, 128, 192);
  return out;
}

describe('wire compression', () => {
  const values = activations(1000, 5); // not a multiple of the block: the last block is short

  it('fp16 halves the bytes and keeps every value within its unit roundoff', () => {
    const data = encodeFloats(values, WireEncoding.FP16);
    expect(data.byteLength).toBe(2000);
    const back = decodeFloats(data, WireEncoding.FP16, values.length, 'x');
    for (let i = 0; i < values.length; i++) expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * WIRE_ERROR_BOUND.fp16 + 1e-7);
  });

  it('int8 blocks take 0.258 of the bytes and keep every value within half a step of its block', () => {
    const data = encodeFloats(values, WireEncoding.INT8_BLOCKS);
    expect(data.byteLength).toBe(encodedBytes(WireEncoding.INT8_BLOCKS, 1000));
    expect(encodedBytes(WireEncoding.INT8_BLOCKS, 256 * 64) / (256 * 64 * 4)).toBeCloseTo(0.2578, 4);
    const back = decodeFloats(data, WireEncoding.INT8_BLOCKS, values.length, 'x');
    for (let b = 0; b * WIRE_INT8_BLOCK < values.length; b++) {
      const block = values.subarray(b * WIRE_INT8_BLOCK, (b + 1) * WIRE_INT8_BLOCK);
      const amax = block.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (let i = 0; i < block.length; i++) {
        expect(Math.abs(back[b * WIRE_INT8_BLOCK + i] - block[i])).toBeLessThanOrEqual(amax * WIRE_ERROR_BOUND.int8);
      }
    }
    expect(Array.from(back.subarray(128, 192)).every((v) => v === 0)).toBe(true);
  });

  it('rejects bytes that do not fit the count, and unknown encodings', () => {
    const data = encodeFloats(values, WireEncoding.INT8_BLOCKS);
    expect(() => decodeFloats(data.subarray(1), WireEncoding.INT8_BLOCKS, values.length, 'tensor "h"')).toThrow(/tensor "h": 1031 bytes of int8 for 1000 values \(expected 1032\)/);
    expect(() => decodeFloats(data, 7, values.length, 'tensor "h"')).toThrow(/unknown wire encoding 7/);
  });

  it('converts half precision exactly where it can', () => {
    for (const v of [0, 1, -2.5, 65504, 6.103515625e-5, 5.960464477539063e-8]) expect(fromHalf(toHalf(v))).toBe(v);
    expect(fromHalf(toHalf(1e6))).toBe(Infinity);
    expect(fromHalf(toHalf(1 + 2 ** -11))).toBe(1); // ties to even
  });
});

/** Length of a frame's varint length prefix. */
function readVarint(b: Uint8Array): { header: number } {
  let i = 0;
  while (b[i] >= 0x80) i++;
  return { header: i + 1 };
}

describe('compressed tensors in exec frames', () => {
  it('travel in Tensor.encoding (field 40) through the hand-written step codec and decode to float32 on receipt', () => {
    const hidden = activations(4 * 256, 9);
    const exact = { name: 'hidden', dtype: 1, dims: [1, 4, 256], data: new Uint8Array(hidden.buffer) };
    const ids = { name: 'input_ids', dtype: 7, dims: [1, 2], data: new Uint8Array(new BigInt64Array([5n, 6n]).buffer) };
    for (const [name, encoding] of [['fp16', WireEncoding.FP16], ['int8', WireEncoding.INT8_BLOCKS]] as const) {
      const sent = compressWireTensor(exact, encoding);
      expect(sent.encoding).toBe(encoding);
      expect(compressWireTensor(ids, encoding)).toBe(ids); // only float tensors are compressed
      const frame = Buffer.concat(encodeStepRequestFrame({ sessionId: 's', stepId: 1n, position: 0, inputs: [sent, ids] }));
      const decoded = ExecRequestType.decode(frame.subarray(readVarint(frame).header)) as unknown as { step: { inputs: Parameters<typeof toWireTensor>[0][] } };
      const received = decoded.step.inputs.map(toWireTensor);
      expect(received[0].encoding).toBe(encoding);
      expect(received[0].data.byteLength).toBe(encodedBytes(encoding, hidden.length));
      expect(received[1].encoding).toBeUndefined();
      const tensor = wireToOrt(received[0]);
      expect(tensor.type).toBe('float32');
      expect(tensor.dims).toEqual([1, 4, 256]);
      const back = tensor.data as Float32Array;
      const amax = hidden.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      let worst = 0;
      for (let i = 0; i < hidden.length; i++) worst = Math.max(worst, Math.abs(back[i] - hidden[i]));
      expect(worst, name).toBeLessThanOrEqual(amax * WIRE_ERROR_BOUND.int8);
      expect(worst, name).toBeGreaterThan(0);
      // A float tensor holding what fp16 cannot carry (a mask's -3.4e38, -inf, NaN) travels exact.
      for (const odd of [-3.4e38, -Infinity, Number.NaN]) {
        const mask = { name: 'mask', dtype: 1, dims: [2], data: new Uint8Array(new Float32Array([0, odd]).buffer) };
        expect(compressWireTensor(mask, encoding)).toBe(mask);
      }
      // An encoding on a tensor that is not float is refused.
      expect(() => wireToOrt({ ...received[1], encoding })).toThrow(/wire encoding \d on a int64 tensor/);
    }
  });
});

describe('palette: tensors of a few distinct values (attention masks)', () => {
  /** A causal mask as the demo model's cut carries it: 0 where a position may attend, -3.4e38 where not. */
  function causalMask(t: number): Float32Array {
    const out = new Float32Array(t * t);
    for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) out[i * t + j] = j <= i ? 0 : -3.4028234663852886e38;
    return out;
  }

  it('sends a mask exactly in 1 bit per value in fp16 and int8 sessions, through the step codec', () => {
    const mask = causalMask(64);
    const exact = { name: 'mask', dtype: 1, dims: [1, 1, 64, 64], data: new Uint8Array(mask.buffer) };
    for (const encoding of [WireEncoding.FP16, WireEncoding.INT8_BLOCKS]) {
      const sent = compressWireTensor(exact, encoding);
      expect(sent.encoding).toBe(WIRE_PALETTE);
      expect(sent.data.byteLength).toBe(paletteBytes(2, 4096));
      expect(sent.data.byteLength).toBe(1 + 8 + 512);
      const frame = Buffer.concat(encodeStepRequestFrame({ sessionId: 's', stepId: 1n, position: 0, inputs: [sent] }));
      // The frame scanner every node runs before decoding accepts it, and refuses a palette of the wrong length.
      const body = frame.subarray(readVarint(frame).header);
      expect(() => scanRequest(body)).not.toThrow();
      const cut = Buffer.concat(encodeStepRequestFrame({ sessionId: 's', stepId: 1n, position: 0, inputs: [{ ...sent, data: sent.data.subarray(0, 300) }] }));
      expect(() => scanRequest(cut.subarray(readVarint(cut).header))).toThrow(/300 bytes of palette data, which fits no palette of 4096 elements/);
      const decoded = ExecRequestType.decode(body) as unknown as { step: { inputs: Parameters<typeof toWireTensor>[0][] } };
      const back = wireToOrt(toWireTensor(decoded.step.inputs[0]));
      expect(back.dims).toEqual([1, 1, 64, 64]);
      expect(Buffer.from((back.data as Float32Array).buffer).equals(Buffer.from(mask.buffer))).toBe(true);
    }
    expect(compressWireTensor(exact, WireEncoding.EXACT)).toBe(exact);
  });

  it('keeps every bit of its values (-inf, NaN, -0) with 2 and 4 bits per index, and gives up past 16 values', () => {
    const odd = [0, -0, -Infinity, Number.NaN, 1.5];
    const values = Float32Array.from({ length: 301 }, (_, i) => odd[(i * 7) % odd.length]);
    const data = encodePalette(values)!;
    expect(data.byteLength).toBe(paletteBytes(5, 301));
    expect(data[0]).toBe(5);
    const back = decodeFloats(data, WIRE_PALETTE, 301, 'x');
    expect(Buffer.from(back.buffer).equals(Buffer.from(values.buffer))).toBe(true);
    const four = Float32Array.from({ length: 9 }, (_, i) => i % 3);
    expect(decodeFloats(encodePalette(four)!, WIRE_PALETTE, 9, 'x')).toEqual(four);
    expect(encodePalette(Float32Array.from({ length: 17 }, (_, i) => i))).toBeUndefined();
    // A hidden state is not a palette: it travels int8 as before.
    expect(compressWireTensor({ name: 'h', dtype: 1, dims: [1000], data: new Uint8Array(activations(1000, 3).buffer) }, WireEncoding.INT8_BLOCKS).encoding).toBe(WireEncoding.INT8_BLOCKS);
  });

  it('rejects palette bytes that do not fit', () => {
    const data = encodePalette(causalMask(8))!;
    expect(() => decodeFloats(data.subarray(1), WIRE_PALETTE, 64, 'tensor "m"')).toThrow(/tensor "m": \d+ bytes of palette/);
    expect(() => decodeFloats(data, WIRE_PALETTE, 65, 'tensor "m"')).toThrow(/bytes of palette \(2 values\) for 65 values/);
    const bad = Uint8Array.from(encodePalette(Float32Array.from([0, 1, 2, 0]))!);
    bad[bad.length - 1] = 0xff; // index 3 of a 3-value palette
    expect(() => decodeFloats(bad, WIRE_PALETTE, 4, 'tensor "m"')).toThrow(/palette index 3 of 3 values/);
  });
});
