/**
 * Protobuf wire-format primitives: unsigned varints (also the length prefix of gridpipe's stream frames) and
 * field prefixes, for the parts of ONNX files that are streamed rather than encoded whole and for the frames
 * node/ code builds by hand.
 */

export const WireType = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

/** Bytes a varint of this value takes (unsigned, up to 2^53). */
export function varintLength(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  let n = 4;
  for (let v = Math.floor(value / 0x10000000); v > 0; v = Math.floor(v / 0x80)) n++;
  return n;
}

/** Writes an unsigned varint (up to 2^53) into `buf` at `pos`; returns the position after it. */
export function writeVarint(buf: Uint8Array, pos: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

/** Encodes an unsigned varint (up to 2^53). */
export function encodeVarint(value: number): Uint8Array {
  const out = new Uint8Array(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

/** The tag + length prefix of a length-delimited field. */
export function lengthDelimitedPrefix(field: number, length: number): Uint8Array {
  const tag = field * 8 + WireType.LEN;
  const out = new Uint8Array(varintLength(tag) + varintLength(length));
  writeVarint(out, writeVarint(out, 0, tag), length);
  return out;
}
