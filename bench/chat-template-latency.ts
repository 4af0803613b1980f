/**
 * What running chat templates in the sandbox and escaping special tokens add to a chat request's prompt
 * preparation: the old path (compiled template rendered in-process, whole prompt encoded) against
 * `encodeChat` (render in the worker thread, markers split, content encoded without special tokens), on the
 * test ChatML tokenizer. Run: `npx tsx bench/chat-template-latency.ts` (not part of `npm run bench`).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { hfTextTokenizer, TemplateSandbox, type ChatMessage } from '../gateway/tokenizers/index.js';
import { writeTestTokenizer } from '../test/gateway/fixtures.js';

const N = 500;
const dir = mkdtempSync(path.join(os.tmpdir(), 'gridpipe-chat-latency-'));
const { tokenizerFile } = writeTestTokenizer(dir);
const json = JSON.parse(readFileSync(tokenizerFile, 'utf8')) as object;
const config = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
const messages: ChatMessage[] = [
  { role: 'system', content: 'You are a terse assistant. '.repeat(8) },
  { role: 'user', content: 'Tell me about the cat that sat on the mat, in three sentences. '.repeat(6) },
];

const quantiles = (xs: number[]): string => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): string => s[Math.min(s.length - 1, Math.floor(p * s.length))].toFixed(3);
  return `median ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms`;
};

async function time(fn: () => unknown): Promise<number[]> {
  for (let i = 0; i < 50; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

const tokenizer = new Tokenizer(json, config);
const template = new Template(config.chat_template as string);
const old = await time(() => tokenizer.encode(template.render({ messages, add_generation_prompt: true }), { add_special_tokens: false }).ids);
const sandbox = new TemplateSandbox();
const hf = hfTextTokenizer(json, config, sandbox);
const now = await time(() => hf.encodeChat(messages));
const same = JSON.stringify(await hf.encodeChat(messages)) === JSON.stringify(tokenizer.encode(template.render({ messages, add_generation_prompt: true }), { add_special_tokens: false }).ids);
await sandbox.close();
rmSync(dir, { recursive: true, force: true });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
process.stdout.write(`prompt of ${messages.reduce((n, m) => n + m.content.length, 0)} characters, ${N} requests each (same ids: ${same})\n`);
process.stdout.write(`in-process render + encode : ${quantiles(old)}\n`);
process.stdout.write(`sandboxed render + escape  : ${quantiles(now)}\n`);
process.stdout.write(`added per chat request     : ${(median(now) - median(old)).toFixed(3)} ms (median)\n`);
