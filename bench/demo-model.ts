/**
 * `npm run bench -- demo-model`: the quality and speed of the trained demo models (models/demo): held-out
 * perplexity of the target and the draft (onnxruntime, on the KJV chapters held out from training), how often
 * the draft's greedy tokens agree with the target's k = 1..4 tokens ahead (what speculative decoding would
 * accept), and greedy decode tokens/s of the target on the devnet grid (through its gateway, paid) and as one
 * onnxruntime session here, in the same run.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { statefulPairs } from '../fragments/stateful.js';
import { hfTextTokenizer } from '../gateway/tokenizers/index.js';
import { generate } from '../scheduler/generate.js';
import { LocalModelRunner } from '../scheduler/local-runner.js';
import { reportResult } from './report.js';
import { runDevnet } from './devnet.js';
import { median } from './stats.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).includes(`${path.sep}dist${path.sep}`) ? '../..' : '..');
const DEMO = path.join(ROOT, 'models', 'demo');
/** The held-out text is scored in consecutive windows of WINDOW tokens, all of them, as train.py's evaluation. */
const WINDOW = 256;
/** Held-out prefixes the draft/target agreement is measured from, and their length. */
const PREFIXES = 64;
const PREFIX = 48;
const AHEAD = 4;
const DECODE = 32;
const PROMPT = 'And God said,';

const INPUTS = ['input_ids', 'attention_mask', 'position_ids'];
const ids = (values: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);

async function openRunner(name: string): Promise<LocalModelRunner> {
  const file = path.join(DEMO, name, 'model.onnx');
  const probe = await ort.InferenceSession.create(file);
  const pairs = statefulPairs([...probe.inputNames], [...probe.outputNames]);
  await probe.release();
  return LocalModelRunner.open(file, pairs);
}

/** exp(mean next-token loss) over consecutive windows of the held-out ids. */
async function perplexity(runner: LocalModelRunner, heldOut: number[]): Promise<number> {
  let loss = 0;
  let count = 0;
  for (let w = 0; (w + 1) * WINDOW + 1 <= heldOut.length; w++) {
    const x = heldOut.slice(w * WINDOW, (w + 1) * WINDOW);
    const { outputs } = await runner.step({ input_ids: ids(x), attention_mask: ids(x.map(() => 1)), position_ids: ids(x.map((_, i) => i)) }, 0);
    const logits = outputs.logits.data as Float32Array;
    const vocab = outputs.logits.dims[2];
    for (let t = 0; t < WINDOW; t++) {
      const row = logits.subarray(t * vocab, (t + 1) * vocab);
      let max = -Infinity;
      for (const v of row) if (v > max) max = v;
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      loss += Math.log(sum) + max - row[heldOut[w * WINDOW + t + 1]];
      count++;
    }
  }
  return Math.exp(loss / count);
}

async function greedy(runner: LocalModelRunner, promptIds: number[], maxTokens: number): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(runner, { promptIds, maxTokens, kvCache: true, inputNames: INPUTS, temperature: 0 })) out.push(t.id);
  return out;
}

/** Fraction of prefixes where the draft's first k greedy tokens equal the target's, for k = 1..AHEAD. */
async function agreement(target: LocalModelRunner, draft: LocalModelRunner, heldOut: number[]): Promise<number[]> {
  const agreeing = Array<number>(AHEAD).fill(0);
  const stride = Math.floor((heldOut.length - PREFIX - 1) / PREFIXES);
  for (let p = 0; p < PREFIXES; p++) {
    const prefix = heldOut.slice(p * stride, p * stride + PREFIX);
    const [t, d] = [await greedy(target, prefix, AHEAD), await greedy(draft, prefix, AHEAD)];
    for (let k = 1; k <= AHEAD; k++) if (t.slice(0, k).every((id, i) => id === d[i])) agreeing[k - 1]++;
  }
  return agreeing.map((n) => n / PREFIXES);
}

/** Decode tokens/s through the devnet's gateway: (tokens of a 1 + DECODE request − a 1-token one) ÷ their time difference. */
async function gridDecode(dataDir: string): Promise<number> {
  const info = JSON.parse(await readFile(path.join(dataDir, 'devnet.json'), 'utf8')) as { gatewayUrl: string; apiKey: string; model: string };
  const completion = async (maxTokens: number): Promise<{ s: number; tokens: number }> => {
    const started = performance.now();
    const res = await fetch(`${info.gatewayUrl}/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${info.apiKey}` },
      body: JSON.stringify({ model: info.model, prompt: PROMPT, max_tokens: maxTokens, temperature: 0 }),
    });
    const body = (await res.json()) as { usage?: { completion_tokens: number }; error?: { message: string } };
    if (!res.ok || !body.usage) throw new Error(`devnet completion failed (${res.status}): ${body.error?.message ?? JSON.stringify(body)}`);
    return { s: (performance.now() - started) / 1000, tokens: body.usage.completion_tokens };
  };
  await completion(2);
  const rates: number[] = [];
  for (let r = 0; r < 3; r++) {
    const one = await completion(1);
    const many = await completion(DECODE + 1);
    rates.push((many.tokens - one.tokens) / (many.s - one.s));
  }
  return median(rates);
}

/** Greedy decode tokens/s of the target as one onnxruntime session (prefill excluded). */
async function monolithicDecode(runner: LocalModelRunner, promptIds: number[]): Promise<number> {
  const rates: number[] = [];
  for (let r = 0; r < 3; r++) {
    let last = 0;
    let decodeMs = 0;
    for await (const _ of generate(runner, { promptIds, maxTokens: DECODE + 1, kvCache: true, inputNames: INPUTS, temperature: 0 })) {
      const now = performance.now();
      if (last) decodeMs += now - last;
      last = now;
    }
    rates.push(DECODE / (decodeMs / 1000));
  }
  return median(rates);
}

/** The demo-model benchmark. */
export async function demoModelBench(): Promise<void> {
  const json = (file: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(DEMO, 'target', file), 'utf8')) as Record<string, unknown>;
  const tokenizer = hfTextTokenizer(json('tokenizer.json'), json('tokenizer_config.json'));
  const heldOut = tokenizer.encode(readFileSync(path.join(DEMO, 'heldout.txt'), 'utf8'), false);
  const target = await openRunner('target');
  const draft = await openRunner('draft');
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-demo-'));
  try {
    const targetPpl = await perplexity(target, heldOut);
    const draftPpl = await perplexity(draft, heldOut);
    const agree = await agreement(target, draft, heldOut);
    const mono = await monolithicDecode(target, tokenizer.encode(PROMPT, true));
    let grid = 0;
    await runDevnet(dataDir, 'kjv', async () => { grid = await gridDecode(dataDir); });
    reportResult('demo-model', {
      target_heldout_perplexity: targetPpl,
      draft_heldout_perplexity: draftPpl,
      ...Object.fromEntries(agree.map((a, i) => [`draft_agreement_k${i + 1}`, a])),
      grid_decode_tokens_per_s: grid,
      mono_decode_tokens_per_s: mono,
      grid_over_mono: grid / mono,
    }, `models/demo target and draft (onnxruntime-node, CPU). Perplexity: every consecutive ${WINDOW}-token window of models/demo/heldout.txt ` +
      `(every 20th KJV chapter, never trained on; as train.py's held-out figure). Agreement: ${PREFIXES} held-out prefixes of ${PREFIX} tokens; share where the draft's first k greedy ` +
      `tokens equal the target's. Decode: greedy, prompt ${JSON.stringify(PROMPT)}, ${DECODE} tokens; grid = gridpipe devnet (4 suppliers, paid, through its gateway), ` +
      '(tokens of a 33-token request − a 1-token one) ÷ the time difference, median of 3; mono = the target as one onnxruntime session in this process, median of 3; ' +
      'the devnet and this process share the machine\'s cores.');
  } finally {
    await target.close();
    await draft.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
