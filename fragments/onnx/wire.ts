/** Protobuf wire-format primitives for the parts of ONNX files that are streamed rather than encoded whole. */

export const WireType = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

/** Encodes an unsigned varint (up to 2^53). */
export function encodeVarint(value: number): Uint8Array {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/** Bytes a varint of this value takes. */
export function varintLength(value: number): number {
  let n = 1;
  let v = value;
  while (v >= 0x80) { v = Math.floor(v / 0x80); n++; }
  return n;
}

/** The tag + length prefix of a length-delimited field. */
export function lengthDelimitedPrefix(field: number, length: number): Uint8Array {
  const tag = encodeVarint(field * 8 + WireType.LEN);
  const len = encodeVarint(length);
  const out = new Uint8Array(tag.length + len.length);
  out.set(tag, 0);
  out.set(len, tag.length);
  return out;
}
