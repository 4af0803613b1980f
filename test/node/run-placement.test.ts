/**
 * Short runs leave the onnxruntime worker for the main thread (node/exec/run-placement.ts): the rule on its own,
 * then a real fragment executor whose decode steps move to its main-thread twin session while a prefill stays in
 * the worker, with results bit for bit those of the worker.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { FragmentExecutor } from '../../node/exec/executor.js';
import { RunPlacement } from '../../node/exec/run-placement.js';
import { tempDir } from '../helpers/tmp.js';
import { gptInputs, maxAbsDiff } from '../helpers/decoder-inputs.js';

const tmp = tempDir('gridpipe-run-placement-');
const GPT = { arch: 'gpt' as const, layers: 2, dModel: 32, heads: 2, vocab: 64, maxPositions: 128, seed: 11 };
let kvModel: string;

beforeAll(async () => {
  kvModel = path.join(tmp.dir, 'gpt-kv.onnx');
  await writeModel(buildModel({ ...GPT, kvCache: true }), kvModel);
});

afterAll(() => tmp.cleanup());

describe('RunPlacement', () => {
  it('moves a work class to the main thread after three runs measured below the threshold, and only that class', () => {
    const p = new RunPlacement(5);
    expect(p.inline(10)).toBe(false);
    p.record(10, 1);
    p.record(10, 1);
    expect(p.inline(10)).toBe(false);
    expect(p.wantsInline).toBe(false);
    p.record(10, 1);
    expect(p.inline(10)).toBe(true);
    expect(p.wantsInline).toBe(true);
    // 9..16 elements share the class of 10; a run 100 times bigger was never measured: worker
    expect(p.inline(16)).toBe(true);
    expect(p.inline(1000)).toBe(false);
    expect(p.inline(undefined)).toBe(false);
  });

  it('keeps a class measured long in the worker, and sends an inline class back once its runs pass 1.5 thresholds', () => {
    const p = new RunPlacement(5);
    for (let i = 0; i < 5; i++) p.record(4000, 30);
    expect(p.inline(4000)).toBe(false);
    for (let i = 0; i < 3; i++) p.record(8, 2);
    expect(p.inline(8)).toBe(true);
    p.record(8, 8); // average 3.5: still below 7.5
    expect(p.inline(8)).toBe(true);
    for (let i = 0; i < 6; i++) p.record(8, 20);
    expect(p.inline(8)).toBe(false);
  });

  it('never moves anything with a threshold of 0', () => {
    const p = new RunPlacement(0);
    for (let i = 0; i < 5; i++) p.record(8, 0.01);
    expect(p.inline(8)).toBe(false);
    expect(p.wantsInline).toBe(false);
  });
});

/** Empty KV feeds of GPT (no positions yet). */
function emptyPast(): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < GPT.layers; l++) {
    for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, GPT.heads, 0, GPT.dModel / GPT.heads]);
  }
  return past;
}

/** The next step's KV feeds from a run's present outputs. */
function nextPast(outputs: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < GPT.layers; l++) for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = outputs[`present.${l}.${kind}`];
  return past;
}

/** Elements of the feeds that are not KV cache (what span.ts passes as a run's work). */
function work(feeds: Record<string, ort.Tensor>): number {
  return Object.entries(feeds).filter(([n]) => !n.startsWith('past_key_values')).reduce((a, [, t]) => a + t.size, 0);
}

describe('FragmentExecutor with short runs on the main thread', () => {
  it('decode steps move to the main thread once measured short; their logits equal the worker\'s bit for bit; a prefill stays in the worker', async () => {
    const adaptive = await FragmentExecutor.load(kvModel, { provider: 'cpu', offThread: true, inlineBelowMs: 10_000, inlineTwinMaxLoadMs: Infinity });
    const workerOnly = await FragmentExecutor.load(kvModel, { provider: 'cpu', offThread: true, inlineBelowMs: 0 });
    try {
      const prompt = [3, 1, 4, 1, 5];
      let pastA = emptyPast();
      let pastW = emptyPast();
      let position = 0;
      let tokens = prompt;
      const placed: boolean[] = [];
      for (let step = 0; step < 40 && (placed.length < 3 || !placed.slice(-3).every(Boolean)); step++) {
        const inputs = gptInputs(tokens, position);
        const a = await adaptive.run({ ...inputs, ...pastA }, undefined, work(inputs));
        const w = await workerOnly.run({ ...gptInputs(tokens, position), ...pastW }, undefined, work(inputs));
        expect(w.inline).toBe(false);
        expect(maxAbsDiff(a.outputs.logits, w.outputs.logits)).toBe(0);
        placed.push(a.inline === true);
        pastA = nextPast(a.outputs);
        pastW = nextPast(w.outputs);
        position += tokens.length;
        tokens = [(position * 13) % GPT.vocab];
        if (!a.inline) await new Promise((r) => setTimeout(r, 20)); // the twin session loads in the background
      }
      expect(placed[0]).toBe(false); // the prefill, and the first decode steps, ran in the worker
      expect(placed.slice(1, 3)).toEqual([false, false]);
      expect(placed.slice(-3)).toEqual([true, true, true]);
      expect(adaptive.inlineRuns.inline).toBeGreaterThanOrEqual(3);
      expect(workerOnly.inlineRuns.inline).toBe(0);

      // a prefill of 64 tokens is a work class never measured: it runs in the worker, results still equal
      const long = Array.from({ length: 64 }, (_, i) => (i * 7) % GPT.vocab);
      const inputs = gptInputs(long, 0);
      const a = await adaptive.run({ ...inputs, ...emptyPast() }, undefined, work(inputs));
      const w = await workerOnly.run({ ...gptInputs(long, 0), ...emptyPast() }, undefined, work(inputs));
      expect(a.inline).toBe(false);
      expect(maxAbsDiff(a.outputs.logits, w.outputs.logits)).toBe(0);
    } finally {
      await Promise.all([adaptive.close(), workerOnly.close()]);
    }
  });

  it('a fragment whose load took longer than inlineTwinMaxLoadMs keeps every run in the worker (its twin would block the loop as long)', async () => {
    const slow = await FragmentExecutor.load(kvModel, { provider: 'cpu', offThread: true, inlineBelowMs: 10_000, inlineTwinMaxLoadMs: 0 });
    try {
      let past = emptyPast();
      let position = 0;
      for (let step = 0; step < 8; step++) {
        const inputs = gptInputs([step + 1], position);
        const r = await slow.run({ ...inputs, ...past }, undefined, work(inputs));
        expect(r.inline).toBe(false);
        past = nextPast(r.outputs);
        position++;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(slow.inlineRuns).toEqual({ inline: 0, total: 8 });
    } finally {
      await slow.close();
    }
  });
});
