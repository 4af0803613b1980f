/**
 * A small but real Hugging Face tokenizer for tests: GPT-2-style byte-level BPE (every byte a token, a few
 * merges), ChatML special tokens and a ChatML chat template in tokenizer_config.json. Written as the files a
 * publisher ships, so the gateway reads them exactly as it would a downloaded model's.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** GPT-2's byte → printable character table. */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}

export const CHATML_TEMPLATE = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const MERGES: [string, string][] = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['Ġ', 'a'], ['i', 'n']];
const SPECIAL = ['<|im_start|>', '<|im_end|>', '<|endoftext|>'];

/** Writes tokenizer.json and tokenizer_config.json into `dir`; returns the vocabulary size (model vocab must match). */
export function writeTestTokenizer(dir: string): { tokenizerFile: string; vocabSize: number; eosId: number } {
  mkdirSync(dir, { recursive: true });
  const vocab: Record<string, number> = {};
  bytesToUnicode().forEach((c, i) => { vocab[c] = i; });
  let next = 256;
  const added = SPECIAL.map((content) => ({ id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  for (const [a, b] of MERGES) vocab[a + b] = next++;
  for (const t of added) vocab[t.content] = t.id;
  const tokenizer = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`) },
  };
  const config = { eos_token: '<|im_end|>', bos_token: null, chat_template: CHATML_TEMPLATE, clean_up_tokenization_spaces: false, model_max_length: 128 };
  const tokenizerFile = path.join(dir, 'tokenizer.json');
  writeFileSync(tokenizerFile, JSON.stringify(tokenizer));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return { tokenizerFile, vocabSize: next, eosId: 257 };
}
