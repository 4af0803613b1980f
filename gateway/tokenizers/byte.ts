/**
 * The byte tokenizer of the synthetic models (token = UTF-8 byte, vocabulary 256, no end-of-sequence token),
 * as a TextTokenizer like any other, with the plain chat template.
 */
import { ChatTemplate, PLAIN_CHAT_TEMPLATE } from './chat.js';
import type { TextTokenizer } from './text-tokenizer.js';

const encodeBytes = (text: string): number[] => Array.from(Buffer.from(text, 'utf8'));
// Ids above 255 decode to '?' (0x3f), then invalid UTF-8 to U+FFFD.
const decodeBytes = (ids: number[]): string => Buffer.from(ids.map((id) => (id >= 0 && id < 256 ? id : 0x3f))).toString('utf8');

/** A byte tokenizer with the plain chat template. */
export function byteTextTokenizer(): TextTokenizer {
  const template = new ChatTemplate(PLAIN_CHAT_TEMPLATE);
  return {
    kind: 'byte', stopIds: [],
    encode: encodeBytes,
    decode: decodeBytes,
    chat: (messages) => template.render(messages),
    encodeChat: async (messages) => encodeBytes(await template.render(messages)),
  };
}

/** One shared byte tokenizer (tests, tools). */
export const byteTokenizer: TextTokenizer = byteTextTokenizer();
