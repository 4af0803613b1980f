/**
 * The prompt set for `model fragment --quantize … --text FILE` and `model verify --text FILE`: the text, tokenized by
 * the model's own tokenizer.json (the gateway's tokenizer code), cut into seeded windows. It lives here because the
 * fragments floor cannot tokenize; it loads its modules only when a command runs.
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from './errors.js';

/** Windows of the text's tokens, and a description of them recorded with the figures (text CID and seed). */
export async function promptSetFromText(textFile: string, tokenizerFile: string | undefined, seed: number, flag = '--text', count?: number): Promise<{ ids: number[][]; source: string }> {
  if (!tokenizerFile || !existsSync(tokenizerFile)) throw new UsageError(`${flag} needs the model's tokenizer.json${tokenizerFile ? ` (${tokenizerFile} is missing)` : ''}`);
  if (!existsSync(textFile)) throw new UsageError(`${flag} ${textFile}: no such file`);
  const { hfTextTokenizer } = await import('../gateway/tokenizers/index.js');
  const { promptWindows } = await import('../fragments/quantize/prompts.js');
  const { cidOfFile } = await import('../fragments/cid.js');
  const configFile = path.join(path.dirname(tokenizerFile), 'tokenizer_config.json');
  const config = existsSync(configFile) ? JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown> : {};
  const tokenizer = hfTextTokenizer(JSON.parse(await readFile(tokenizerFile, 'utf8')) as object, config);
  const tokens = tokenizer.encode(await readFile(textFile, 'utf8'));
  const ids = promptWindows(tokens, { seed, count });
  return { ids, source: `text ${await cidOfFile(textFile)} (seed ${seed}, ${ids.length}×${ids[0].length} tokens)` };
}
