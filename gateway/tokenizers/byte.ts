/** Tokenizers the scheduler can apply itself. The synthetic models use bytes: token = UTF-8 byte. */

export interface Tokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
}

/** Byte-level tokenizer (vocabulary 256; ids above 255 decode to U+FFFD). */
export const byteTokenizer: Tokenizer = {
  encode: (text) => Array.from(Buffer.from(text, 'utf8')),
  decode: (ids) => Buffer.from(ids.map((id) => (id >= 0 && id < 256 ? id : 0x3f))).toString('utf8'),
};

/** The tokenizer a manifest names, when the scheduler has one for it. */
export function tokenizerFor(kind: string): Tokenizer | undefined {
  return kind === 'byte' ? byteTokenizer : undefined;
}
