/**
 * Selective activation, slice 1: a mixture-of-experts layer is recognised in the builder's gpt-moe model and in
 * a PyTorch-exported Mixtral-style block, cut into a router fragment and expert fragments, recorded as an expert
 * group, and router + chosen experts + weighted sum, run locally, compute what the whole model computes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { readModel } from '../../fragments/onnx/read.js';
import { indexGraph } from '../../fragments/analysis/graph.js';
import { analyzeModel } from '../../fragments/analysis/infer.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { verifyFragments } from '../../fragments/verify.js';
import { recogniseMoeLayers } from '../../fragments/moe/recognise.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const BUILDER = { arch: 'gpt-moe' as const, layers: 2, dModel: 32, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 5 };
const MIXTRAL = path.join(import.meta.dirname, '..', 'fixtures', 'moe', 'mixtral-block.onnx');
let builderFile: string;
beforeAll(async () => {
  builderFile = path.join(tmp.dir, 'gpt-moe.onnx');
  await writeModel(buildModel(BUILDER), builderFile);
});

function recognise(file: string): ReturnType<typeof recogniseMoeLayers> {
  const doc = readModel(file);
  const { infos, values } = analyzeModel(doc);
  return recogniseMoeLayers(indexGraph(doc), infos, values);
}

describe('recognition', () => {
  it('finds every MoE layer of the builder model: its router, top-k, experts and sum', () => {
    const { layers } = recognise(builderFile);
    expect(layers).toHaveLength(2);
    for (const [i, l] of layers.entries()) {
      expect(l.topK).toBe(2);
      expect(l.experts.map((e) => e.index)).toEqual([0, 1, 2, 3]);
      expect(l.gates).not.toBe(l.scores);
      expect(l.scoreKind).toBe('logits');
      expect(l.input).toMatch(new RegExp(`layers\\.${i}/ln_2`));
    }
  });

  it('finds the Mixtral-style block exported by PyTorch: softmax router, top-2 of 8 SwiGLU experts, renormalised gates', () => {
    const { layers } = recognise(MIXTRAL);
    expect(layers).toHaveLength(1);
    const [l] = layers;
    expect(l.topK).toBe(2);
    expect(l.experts.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(l.scoreKind).toBe('probabilities');
    // Each SwiGLU expert: three MatMuls, a Sigmoid and two Muls (silu, gating), nothing shared.
    for (const e of l.experts) expect(e.nodes).toHaveLength(6);
  });
});

describe.each([1, 2])('cut with --experts-per-fragment %i', (per) => {
  it('builder gpt-moe: router and expert fragments, an expert group each, equal to the whole model within 1e-4', async () => {
    const out = path.join(tmp.dir, `builder-${per}`);
    const { manifest } = await fragmentModel(builderFile, out, { parts: 3, expertsPerFragment: per });
    const groups = manifest.expertGroups;
    expect(groups).toHaveLength(2);
    for (const [gi, g] of groups.entries()) {
      const router = manifest.fragments[g.routerFragment!];
      expect(router.moe).toEqual({ group: gi, role: 'router' });
      expect(router.outputs.map((o) => o.name)).toEqual(expect.arrayContaining([g.gates!, g.router]));
      expect(g.experts).toHaveLength(4);
      const expertFragments = [...new Set(g.experts.map((e) => e.fragments[0]))];
      expect(expertFragments).toHaveLength(4 / per);
      for (const f of expertFragments) {
        const fragment = manifest.fragments[f];
        expect(fragment.moe?.role).toBe('experts');
        expect(fragment.moe?.experts).toHaveLength(per);
        // An expert reads the layer input only and holds no KV cache: it is stateless.
        expect(fragment.inputs.map((i) => i.name)).toEqual([g.input]);
        expect(fragment.stateful).toEqual([]);
      }
      // The next dense fragment reads the layer output, counted as the router's.
      const reader = manifest.fragments.find((f) => !f.moe && f.inputs.some((i) => i.name === g.output));
      expect(reader?.inputs.find((i) => i.name === g.output)?.from).toBe(g.routerFragment);
    }
    const dense = manifest.fragments.filter((f) => !f.moe);
    expect(dense).toHaveLength(3);
    expect(manifest.fragments.map((f) => f.index)).toEqual(manifest.fragments.map((_, i) => i));
    const report = await verifyFragments(out, { tolerance: 1e-4 });
    expect(report.outputs.map((o) => o.name)).toContain('logits');
    for (const o of report.outputs) expect(o, o.name).toMatchObject({ ok: true });
    expect(Math.max(...report.outputs.map((o) => o.maxRel))).toBeLessThan(1e-4);
  });
});

it('a model without a mixture-of-experts layer is refused, saying why', async () => {
  const file = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 1, dModel: 16, heads: 2, kvCache: false }), file);
  await expect(fragmentModel(file, path.join(tmp.dir, 'gpt-out'), { parts: 1, expertsPerFragment: 1 })).rejects.toThrow(/no mixture-of-experts layer recognised.*no TopK/);
});

it('PyTorch Mixtral-style block: cut into router + 8 expert fragments, equal to the whole model within 1e-4', async () => {
  const out = path.join(tmp.dir, 'mixtral');
  const { manifest } = await fragmentModel(MIXTRAL, out, { parts: 2, expertsPerFragment: 1 });
  expect(manifest.fragments.filter((f) => f.moe?.role === 'experts')).toHaveLength(8);
  expect(manifest.fragments.filter((f) => !f.moe)).toHaveLength(2);
  expect(manifest.expertGroups[0]).toMatchObject({ topK: 2, scoreKind: 'probabilities' });
  const report = await verifyFragments(out, { tolerance: 1e-4, dims: { sequence_length: 12 } });
  for (const o of report.outputs) expect(o, o.name).toMatchObject({ ok: true });
});
