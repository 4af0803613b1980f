/**
 * Tokenizers text models are served with (by the gateway and by `gridpipe generate --prompt`): the byte
 * tokenizer of the synthetic models, or a Hugging Face tokenizer.json (read by @huggingface/tokenizers) shipped
 * with the model; plus the model's chat template. All are a TextTokenizer (text-tokenizer.ts).
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { Manifest } from '../../fragments/manifest.js';
import { byteTextTokenizer } from './byte.js';
import { ChatTemplate, PLAIN_CHAT_TEMPLATE, type ChatMessage } from './chat.js';
import type { TextTokenizer, TokenizerFileReader } from './text-tokenizer.js';
import { ChatEscaper, type SpecialToken } from './escape.js';
import { sharedTemplateSandbox, type TemplateSandbox } from './sandbox.js';
import { GridpipeError } from '../../errors/base.js';

export type { TextTokenizer, TokenizerFile, TokenizerFileReader } from './text-tokenizer.js';
export { byteTextTokenizer, byteTokenizer } from './byte.js';
export { ChatTemplate, PLAIN_CHAT_TEMPLATE, type ChatMessage } from './chat.js';
export { SpecialTokenInContentError } from './escape.js';
export { TemplateBudgetError, TemplateRenderError, TemplateSandbox, DEFAULT_TEMPLATE_BUDGET, type TemplateBudget } from './sandbox.js';

/** A special token as tokenizer_config.json writes it: a string or {content}. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

/**
 * A Hugging Face tokenizer from the parsed tokenizer.json and tokenizer_config.json. The model's chat template
 * runs in `sandbox` (default: the process's shared one).
 */
export function hfTextTokenizer(tokenizerJson: object, config: Record<string, unknown> = {}, sandbox: TemplateSandbox = sharedTemplateSandbox()): TextTokenizer {
  const tokenizer = new HfTokenizer(tokenizerJson, config);
  // A second tokenizer without the special added tokens encodes chat text: their text stays text there. Made on
  // the first chat request (a second copy of the vocabulary), so models only called through completions never pay.
  const added = ((tokenizerJson as { added_tokens?: (SpecialToken & { special?: boolean })[] }).added_tokens ?? []);
  const specials = added.filter((t) => t.special === true && typeof t.content === 'string' && Number.isInteger(t.id));
  let plain: HfTokenizer | undefined;
  const plainEncode = (text: string): number[] => {
    plain ??= specials.length ? new HfTokenizer({ ...tokenizerJson, added_tokens: added.filter((t) => t.special !== true) }, config) : tokenizer;
    return plain.encode(text, { add_special_tokens: false }).ids;
  };
  const escaper = new ChatEscaper(specials, plainEncode, (text) => tokenizer.encode(text, { add_special_tokens: false }).ids);
  const special: Record<string, string> = {};
  for (const name of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const text = tokenText(config[name]);
    if (text !== undefined) special[name] = text;
  }
  const stopIds = [special.eos_token].filter((t): t is string => t !== undefined).map((t) => tokenizer.token_to_id(t)).filter((id): id is number => id !== undefined);
  // A list of named templates ([{name, template}]) is allowed by transformers; the "default" one is used.
  let source = config.chat_template;
  if (Array.isArray(source)) source = (source as { name?: string; template?: string }[]).find((t) => t.name === 'default')?.template;
  const template = typeof source === 'string' ? new ChatTemplate(source, special, sandbox) : new ChatTemplate(PLAIN_CHAT_TEMPLATE, special);
  const render = (messages: ChatMessage[]): Promise<string> => template.render(messages);
  return {
    kind: 'hf', stopIds,
    encode: (text, withSpecial = true) => tokenizer.encode(text, { add_special_tokens: withSpecial }).ids,
    // The library refuses an empty list; no ids is simply no text.
    decode: (ids) => (ids.length ? tokenizer.decode(ids, { skip_special_tokens: true }) : ''),
    chat: render,
    encodeChat: (messages) => escaper.encode(messages, render),
  };
}

/** Raised when a model's tokenizer cannot be loaded (its text endpoints answer 503 with this message). */
export class TokenizerUnavailableError extends GridpipeError<'TOKENIZER_UNAVAILABLE'> {
  override name = 'TokenizerUnavailableError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('TOKENIZER_UNAVAILABLE', message, options);
  }
}

/** The tokenizer a manifest names; undefined for models without one (tensor models: /v1/infer only). */
export async function loadTokenizer(manifest: Manifest, read: TokenizerFileReader): Promise<TextTokenizer | undefined> {
  const t = manifest.tokenizer;
  if (t.kind === 'byte') return byteTextTokenizer();
  if (t.kind !== 'hf') return undefined;
  if (!t.file || !t.cid) throw new TokenizerUnavailableError(`${manifest.name}: the manifest names a Hugging Face tokenizer but no content-addressed file`);
  const parse = async (f: { file: string; cid: string }): Promise<Record<string, unknown>> => {
    const bytes = await read(f);
    try {
      return JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new TokenizerUnavailableError(`${manifest.name}: ${f.file} is not valid JSON (${(err as Error).message})`);
    }
  };
  const json = await parse({ file: t.file, cid: t.cid });
  const config = t.config ? await parse(t.config) : {};
  return hfTextTokenizer(json, config);
}

/**
 * Decodes a growing list of ids into text pieces: each call returns only the new text, holding back an
 * incomplete character (a multi-byte UTF-8 sequence split over tokens) until it is whole.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  // Only a short window is decoded per token (not the whole text so far): [prefix, read) was emitted last,
  // [read, end) is new. Decoding the window with its emitted prefix keeps context-dependent decoders
  // (leading spaces, byte fallbacks) right, as text-generation servers do.
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** Adds one id; returns the text that became final. */
  push(id: number): string {
    this.ids.push(id);
    const { prefix, text } = this.window();
    if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }

  /** Whatever is still held back (a character that never completed). */
  flush(): string {
    const { prefix, text } = this.window();
    this.prefixOffset = this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }

  private window(): { prefix: string; text: string } {
    return {
      prefix: this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset)),
      text: this.tokenizer.decode(this.ids.slice(this.prefixOffset)),
    };
  }
}
