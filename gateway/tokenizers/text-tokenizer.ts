/**
 * The one tokenizer abstraction: what the gateway's text endpoints and `gridpipe generate --prompt` both use,
 * whatever the model ships (the byte tokenizer of the synthetic models, or a Hugging Face tokenizer.json).
 */
import type { ChatMessage } from './chat.js';

/** A model's tokenizer and chat template. */
export interface TextTokenizer {
  kind: 'byte' | 'hf';
  /** Text to ids; `special` adds the tokenizer's special tokens (BOS...) for raw prompts. */
  encode(text: string, special?: boolean): number[];
  /** Ids to text (special tokens left out). */
  decode(ids: number[]): string;
  /** Ids that end a generation (EOS and the like; not shown). */
  stopIds: number[];
  /** The chat prompt for these messages (a model's own template runs in the sandbox, within its budget). */
  chat(messages: ChatMessage[]): Promise<string>;
  /** The chat prompt's ids: special tokens come only from the template, never from message content. */
  encodeChat(messages: ChatMessage[]): Promise<number[]>;
}

/** One of the model's tokenizer files as the manifest names it (tokenizer.json, tokenizer_config.json). */
export interface TokenizerFile { file: string; cid: string; bytes?: number }

/** Reads one of the model's tokenizer files (from its folder, or fetched by CID): the bytes, verified. */
export type TokenizerFileReader = (file: TokenizerFile) => Promise<Uint8Array>;
