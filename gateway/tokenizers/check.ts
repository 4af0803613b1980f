/**
 * The fragment-time check of a model's tokenizer files, by the code that will serve them: the tokenizer must
 * load and round-trip text, and the chat template must render a sample conversation. `gridpipe model fragment`
 * (and the devnet) run it so that a broken file fails there, naming the file, and never at serve time.
 */
import { GridpipeError } from '../../errors/base.js';
import { hfTextTokenizer } from './index.js';
import { TemplateSandbox } from './sandbox.js';
import type { ChatMessage } from './chat.js';
import type { TextTokenizer } from './text-tokenizer.js';

/** A tokenizer file that will not load, or a chat template that will not render: bad input (the CLI exits 2). */
export class TokenizerFileError extends GridpipeError<'BAD_MODEL_FILE'> {
  override name = 'TokenizerFileError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('BAD_MODEL_FILE', message, { ...options, badInput: true });
  }
}

const SAMPLE_TEXT = 'In the beginning, 42 words; and more.';
const SAMPLE_CHAT: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hello' },
  { role: 'assistant', content: 'Hi.' },
  { role: 'user', content: 'Say more.' },
];

export interface TokenizerFilesToCheck {
  tokenizer: { file: string; json: Record<string, unknown> };
  tokenizerConfig?: { file: string; json: Record<string, unknown> };
}

/** Loads the tokenizer and renders the chat template as the gateway will; throws a TokenizerFileError naming the file. */
export async function checkTokenizerFiles(files: TokenizerFilesToCheck): Promise<void> {
  const sandbox = new TemplateSandbox();
  const reason = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n', 1)[0];
  try {
    let tokenizer: TextTokenizer;
    try {
      tokenizer = hfTextTokenizer(files.tokenizer.json, files.tokenizerConfig?.json ?? {}, sandbox);
      const ids = tokenizer.encode(SAMPLE_TEXT, false);
      if (ids.length === 0) throw new Error('it encodes text to no tokens');
      tokenizer.decode(ids);
    } catch (err) {
      throw new TokenizerFileError(`${files.tokenizer.file}: the tokenizer does not load (${reason(err)})`, { cause: err });
    }
    try {
      await tokenizer.encodeChat(SAMPLE_CHAT);
    } catch (err) {
      throw new TokenizerFileError(`${files.tokenizerConfig?.file ?? files.tokenizer.file}: the chat template fails to render (${reason(err)})`, { cause: err });
    }
  } finally {
    await sandbox.close();
  }
}
