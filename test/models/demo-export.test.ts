/**
 * The committed demo models (models/demo/target and draft) as onnxruntime-node runs them: the ONNX export
 * gives torch's logits (within 1e-4, from reference.json written by export.py), its KV-cache path gives torch's
 * greedy continuation token for token, and the Hugging Face tokenizer the grid loads encodes the reference
 * prompt exactly as the Python trainer did.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { REPO_ROOT } from '../helpers/cli.js';
import { hfTextTokenizer } from '../../gateway/tokenizers/index.js';
import { generate } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { statefulPairs } from '../../fragments/stateful.js';

interface Reference { prompt: string; input_ids: number[]; last_logits: number[]; greedy_ids: number[] }

const json = (file: string): Record<string, unknown> => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

describe.each(['target', 'draft'])('models/demo/%s', (name) => {
  const dir = path.join(REPO_ROOT, 'models', 'demo', name);
  const reference = json(path.join(dir, 'reference.json')) as unknown as Reference;

  it('the tokenizer the grid loads encodes the reference prompt as the trainer did', () => {
    const tokenizer = hfTextTokenizer(json(path.join(dir, 'tokenizer.json')), json(path.join(dir, 'tokenizer_config.json')));
    expect(tokenizer.encode(reference.prompt, true)).toEqual(reference.input_ids);
    expect(tokenizer.decode(reference.input_ids)).toBe(reference.prompt);
    expect(tokenizer.stopIds).toEqual([0]);
  });

  it('onnxruntime gives torch\'s logits, and its KV-cache greedy run gives torch\'s tokens', async () => {
    const model = path.join(dir, 'model.onnx');
    const session = await ort.InferenceSession.create(model);
    const pairs = statefulPairs([...session.inputNames], [...session.outputNames]);
    expect(session.inputNames.slice(0, 3)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(pairs.map((p) => `${p.input}>${p.output}`)).toContain('past_key_values.0.key>present.0.key');
    await session.release();

    const runner = await LocalModelRunner.open(model, pairs);
    const inputNames = ['input_ids', 'attention_mask', 'position_ids'];
    try {
      const ids = reference.input_ids;
      const feeds = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
        attention_mask: new ort.Tensor('int64', BigInt64Array.from(ids.map(() => 1n)), [1, ids.length]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]),
      };
      const { outputs } = await runner.step(feeds, 0);
      const vocab = outputs.logits.dims[2];
      const last = (outputs.logits.data as Float32Array).subarray((ids.length - 1) * vocab);
      const diff = Math.max(...reference.last_logits.map((v, i) => Math.abs(v - last[i])));
      expect(diff).toBeLessThan(1e-4);

      const greedy: number[] = [];
      for await (const t of generate(runner, { promptIds: ids, maxTokens: reference.greedy_ids.length, kvCache: true, inputNames, temperature: 0 })) greedy.push(t.id);
      expect(greedy).toEqual(reference.greedy_ids);
    } finally {
      await runner.close();
    }
  });
});
