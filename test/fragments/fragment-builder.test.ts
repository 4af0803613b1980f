/**
 * Fragmenting built models: KV-cache pairs stay in one fragment, the manifest records experts, the tokenizer and
 * copies of shared weights, and verify catches a fragment that computes something else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel, GPT_EMBEDDING, type BuildOptions } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { readModel } from '../../fragments/onnx/read.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { verifyFragments } from '../../fragments/verify.js';
import { cidOfFile } from '../../fragments/cid.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadTensorBytes } from '../../fragments/onnx/tensor-bytes.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const MODELS: Record<string, BuildOptions> = {
  'gpt': { arch: 'gpt', layers: 3, dModel: 32, heads: 4, kvCache: false, seed: 1 },
  'gpt+kv': { arch: 'gpt', layers: 3, dModel: 32, heads: 4, kvCache: true, seed: 1 },
  'llama': { arch: 'llama', layers: 3, dModel: 32, heads: 4, kvHeads: 2, kvCache: false, seed: 2 },
  'llama+kv': { arch: 'llama', layers: 3, dModel: 32, heads: 4, kvHeads: 2, kvCache: true, seed: 2 },
  'gpt-moe': { arch: 'gpt-moe', layers: 3, dModel: 32, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 3 },
  'cnn': { arch: 'cnn', layers: 3, seed: 4 },
};

const files: Record<string, string> = {};
beforeAll(async () => {
  for (const [name, options] of Object.entries(MODELS)) {
    files[name] = path.join(tmp.dir, `${name}.onnx`);
    await writeModel(buildModel(options), files[name]);
  }
});

describe.each(Object.keys(MODELS))('%s', (name) => {
  it.each([2, 3, 4])('cut into %i fragments computes what the whole model computes (within 1e-5)', async (parts) => {
    const out = path.join(tmp.dir, `${name}-${parts}`);
    const { manifest } = await fragmentModel(files[name], out, { parts });
    expect(manifest.fragments).toHaveLength(parts);

    // Every fragment is a standalone model whose identity is the CID of its bytes.
    for (const f of manifest.fragments) {
      expect(await cidOfFile(path.join(out, f.file))).toBe(f.cid);
      expect(readModel(path.join(out, f.file)).graph.node.length).toBe(f.nodeCount);
    }
    // Each fragment's inputs come from the graph or from an earlier fragment.
    for (const f of manifest.fragments) {
      for (const input of f.inputs) {
        if (input.from === 'graph') continue;
        expect(input.from).toBeLessThan(f.index);
        expect(manifest.fragments[input.from].outputs.map((o) => o.name)).toContain(input.name);
      }
    }

    const report = await verifyFragments(out, { tolerance: 1e-5 });
    expect(report.outputs.length).toBeGreaterThan(0);
    for (const o of report.outputs) expect(o.maxRel, o.name).toBeLessThanOrEqual(1e-5);
    expect(report.ok).toBe(true);

    // A second shape, with a longer KV cache where there is one.
    const again = await verifyFragments(out, { tolerance: 1e-5, dims: { past_sequence_length: 6, sequence_length: 3 }, seed: 99 });
    expect(again.ok).toBe(true);
  });

  it('keeps every KV-cache pair inside one fragment', async () => {
    const out = path.join(tmp.dir, `${name}-pairs`);
    const { manifest } = await fragmentModel(files[name], out, { parts: 4 });
    const expected = MODELS[name].arch === 'cnn' || !MODELS[name].kvCache ? 0 : 2 * (MODELS[name].layers ?? 0);
    expect(manifest.statefulPairs).toHaveLength(expected);
    for (const pair of manifest.statefulPairs) {
      const readers = manifest.fragments.filter((f) => f.inputs.some((i) => i.name === pair.input));
      const writers = manifest.fragments.filter((f) => f.outputs.some((o) => o.name === pair.output));
      expect(readers).toHaveLength(1);
      expect(writers).toHaveLength(1);
      expect(readers[0].index).toBe(writers[0].index);
      expect(readers[0].stateful).toContainEqual(pair);
    }
  });
});

describe('manifest', () => {
  it('records the experts of a mixture-of-experts model and the tokenizer', async () => {
    const out = path.join(tmp.dir, 'moe-manifest');
    const { manifest } = await fragmentModel(files['gpt-moe'], out, { parts: 3 });
    expect(manifest.expertGroups).toHaveLength(3);
    for (const g of manifest.expertGroups) {
      expect(g.topK).toBe(2);
      expect(g.experts).toHaveLength(4);
      for (const e of g.experts) expect(e.fragments.length).toBeGreaterThan(0);
    }
    expect(manifest.tokenizer.kind).toBe('byte');
    expect(manifest.model.synthetic).toBe(true);
  });

  it('copies a weight shared by two distant nodes (tied embedding) into each fragment that uses it', async () => {
    const out = path.join(tmp.dir, 'gpt-tied');
    const { manifest } = await fragmentModel(files.gpt, out, { parts: 3 });
    const holders = manifest.fragments.filter((f) => readModel(path.join(out, f.file)).graph.initializer.some((w) => w.header.name === GPT_EMBEDDING));
    expect(holders.map((f) => f.index)).toEqual([0, 2]);
  });
});

describe('verify', () => {
  it('fails when a fragment computes something else, even with a matching CID', async () => {
    const out = path.join(tmp.dir, 'llama-wrong');
    await fragmentModel(files['llama+kv'], out, { parts: 3 });
    const doc = readModel(path.join(out, 'fragment-1.onnx'));
    const weight = doc.graph.initializer.find((w) => /q_proj/.test(w.header.name ?? ''))!;
    const values = new Float32Array(Uint8Array.from(await loadTensorBytes(weight.bytes!)).buffer);
    values[0] += 0.5;
    weight.bytes = { kind: 'inline', bytes: new Uint8Array(values.buffer) };
    await writeModel(doc, path.join(out, 'fragment-1-wrong.onnx'));
    const manifestPath = path.join(out, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    manifest.fragments[1].file = 'fragment-1-wrong.onnx';
    manifest.fragments[1].cid = await cidOfFile(path.join(out, 'fragment-1-wrong.onnx'));
    writeFileSync(manifestPath, JSON.stringify(manifest));

    const report = await verifyFragments(out, { tolerance: 1e-5 });
    expect(report.ok).toBe(false);
    expect(report.outputs.find((o) => o.name === 'logits')!.maxRel).toBeGreaterThan(1e-3);
    // Outputs computed before the changed fragment still match.
    expect(report.outputs.find((o) => o.name === 'present.0.key')!.ok).toBe(true);
  });
});
