/** The demo model's held-out text (and its GPTQ calibration text) as seeded windows, tokenized by its own tokenizer (for the compression benchmark). */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hfTextTokenizer } from '../gateway/tokenizers/index.js';
import { promptWindows } from '../fragments/quantize/prompts.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).includes(`${path.sep}dist${path.sep}`) ? '../..' : '..');
export const DEMO_TARGET = path.join(ROOT, 'models', 'demo', 'target');

/** `count` windows of `length` held-out tokens at offsets drawn from `seed`. */
export function demoPrompts(seed: number, count: number, length: number): number[][] {
  const tokenizer = hfTextTokenizer(JSON.parse(readFileSync(path.join(DEMO_TARGET, 'tokenizer.json'), 'utf8')) as object);
  const ids = tokenizer.encode(readFileSync(path.join(ROOT, 'models', 'demo', 'heldout.txt'), 'utf8'));
  return promptWindows(ids, { seed, count, length });
}

/** `count` windows of GPTQ calibration text (models/demo/calibration.txt: training chapters, none held out). */
export function demoCalibrationWindows(seed: number, count: number, length: number): number[][] {
  const tokenizer = hfTextTokenizer(JSON.parse(readFileSync(path.join(DEMO_TARGET, 'tokenizer.json'), 'utf8')) as object);
  const ids = tokenizer.encode(readFileSync(path.join(ROOT, 'models', 'demo', 'calibration.txt'), 'utf8'));
  return promptWindows(ids, { seed, count, length });
}
