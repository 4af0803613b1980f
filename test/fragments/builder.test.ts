/**
 * The synthetic model builder (fragments/builder/): every architecture builds and runs on onnxruntime, with and
 * without a KV cache; seeds are deterministic; external data reads back the same; MoE and tied-head metadata.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { AttributeType, onnx } from '../../proto/onnx.js';
import {
  attr, buildModel, EXPERTS_METADATA_KEY, fillFloat32, generatedFloat32, GPT_EMBEDDING, GraphBuilder, makeTensor, parameterCount,
  Rng, type Arch, type BuildOptions, type ExpertGroup,
} from '../../fragments/builder/index.js';
import type { ModelDoc } from '../../fragments/onnx/model-doc.js';
import { writeModel, type WriteOptions } from '../../fragments/onnx/write.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'gridpipe-builder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
async function write(doc: ModelDoc, options?: WriteOptions): Promise<string> {
  const file = path.join(dir, `m${fileNo++}.onnx`);
  await writeModel(doc, file, options);
  return file;
}
async function session(options: BuildOptions): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(await write(buildModel(options)));
}

const LMS = ['gpt', 'llama', 'gpt-moe'] as const;
const B = 2;

function int64(rows: number[][]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (v) => BigInt(v)), [rows.length, rows[0].length]);
}

/** Feeds of one decoder step: tokens [B][S], the mask over past + S, positions from `past`. */
function lmFeeds(tokens: number[][], past: number, mask?: number[][]): Record<string, ort.Tensor> {
  const s = tokens[0].length;
  return {
    input_ids: int64(tokens),
    attention_mask: int64(mask ?? tokens.map(() => new Array<number>(past + s).fill(1))),
    position_ids: int64(tokens.map(() => Array.from({ length: s }, (_, t) => past + t))),
  };
}

function emptyPast(o: { layers: number; kvHeads: number; headDim: number }): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let i = 0; i < o.layers; i++) {
    for (const kv of ['key', 'value']) feeds[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [B, o.kvHeads, 0, o.headDim]);
  }
  return feeds;
}

/** Logits [B, S, V] as rows: out[b][t] is the V logits of batch b at position t. */
function rows(t: ort.Tensor): Float32Array[][] {
  const [b, s, v] = t.dims;
  const data = t.data as Float32Array;
  return Array.from({ length: b }, (_, i) => Array.from({ length: s }, (_, j) => data.subarray((i * s + j) * v, (i * s + j + 1) * v)));
}
function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function randomTokens(seed: number, s: number, vocab = 256): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: B }, () => Array.from({ length: s }, () => rng.int(vocab)));
}
function metadata(doc: ModelDoc): Record<string, string> {
  return Object.fromEntries((doc.model.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? '']));
}
const HEAD = { gpt: 4, llama: 2, 'gpt-moe': 4 } as const; // default kv heads
const base = { layers: 2, headDim: 16 };

describe('synthetic model builder', () => {
  it('builds every arch, with and without KV cache, and onnxruntime runs it', async () => {
    for (const arch of ['gpt', 'llama', 'gpt-moe', 'cnn'] as Arch[]) {
      for (const kvCache of [false, true]) {
        const doc = buildModel({ arch, kvCache });
        const md = metadata(doc);
        expect(md['gridpipe.arch']).toBe(arch);
        expect(md['gridpipe.synthetic']).toBe('true');
        expect(md['gridpipe.tokenizer']).toBe(arch === 'cnn' ? 'none' : 'byte');
        expect(md['gridpipe.seed']).toBe('0');
        expect(doc.model.irVersion).toBe(8);
        expect(doc.model.opsetImport).toEqual([{ domain: '', version: 17 }]);
        const names = doc.graph.node.map((n) => n.name ?? '');
        expect(new Set(names).size).toBe(names.length);
        for (const n of names) expect(n).toMatch(/^\/(model|lm_head|classifier)\//);

        const s = await ort.InferenceSession.create(await write(doc));
        if (arch === 'cnn') {
          expect(s.inputNames).toEqual(['pixel_values']);
          expect(s.outputNames).toEqual(['logits']);
          const rng = new Rng(3);
          const px = new ort.Tensor('float32', Float32Array.from({ length: B * 3 * 32 * 32 }, () => rng.normal()), [B, 3, 32, 32]);
          const out = await s.run({ pixel_values: px });
          expect(out.logits.dims).toEqual([B, 10]);
          expect((out.logits.data as Float32Array).every(Number.isFinite)).toBe(true);
          // A deep stack keeps its pooling and channel growth bounded.
          const deep = await session({ arch, layers: 8, channels: 4, classes: 3 });
          expect((await deep.run({ pixel_values: px })).logits.dims).toEqual([B, 3]);
          continue;
        }
        const kvHeads = HEAD[arch as keyof typeof HEAD];
        const dims = (name: string) => doc.graph[name.startsWith('present') || name === 'logits' ? 'output' : 'input']
          .find((v) => v.name === name)?.type?.tensorType?.shape?.dim?.map((d) => d.dimParam || d.dimValue);
        expect(dims('input_ids')).toEqual(['batch_size', 'sequence_length']);
        expect(dims('position_ids')).toEqual(['batch_size', 'sequence_length']);
        expect(dims('logits')).toEqual(['batch_size', 'sequence_length', 256]);
        const past = kvCache ? ['past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value'] : [];
        expect(s.inputNames).toEqual(['input_ids', 'attention_mask', 'position_ids', ...past]);
        expect(s.outputNames).toEqual(['logits', ...(kvCache ? ['present.0.key', 'present.0.value', 'present.1.key', 'present.1.value'] : [])]);
        if (kvCache) {
          expect(dims('attention_mask')).toEqual(['batch_size', 'past_sequence_length + sequence_length']);
          expect(dims('past_key_values.1.value')).toEqual(['batch_size', kvHeads, 'past_sequence_length', 16]);
          expect(dims('present.0.key')).toEqual(['batch_size', kvHeads, 'past_sequence_length + sequence_length', 16]);
        } else {
          expect(dims('attention_mask')).toEqual(['batch_size', 'sequence_length']);
        }
        const feeds = { ...lmFeeds(randomTokens(1, 5), 0), ...(kvCache ? emptyPast({ ...base, kvHeads }) : {}) };
        const out = await s.run(feeds);
        expect(out.logits.dims).toEqual([B, 5, 256]);
        expect((out.logits.data as Float32Array).every(Number.isFinite)).toBe(true);
        if (kvCache) expect(out['present.1.value'].dims).toEqual([B, kvHeads, 5, 16]);
      }
    }
  });

  for (const arch of LMS) {
    it(`${arch}: KV-cache decoding step by step matches the full-sequence model`, async () => {
      const full = await session({ arch, kvCache: false, seed: 7 });
      const cached = await session({ arch, kvCache: true, seed: 7 });
      const tokens = randomTokens(11, 8);
      const want = rows((await full.run(lmFeeds(tokens, 0))).logits);

      let out = await cached.run({ ...lmFeeds(tokens.map((r) => r.slice(0, 5)), 0), ...emptyPast({ ...base, kvHeads: HEAD[arch] }) });
      const got = rows(out.logits).map((r) => [...r]);
      for (let step = 5; step < 8; step++) {
        const feeds = lmFeeds(tokens.map((r) => r.slice(step, step + 1)), step);
        for (let i = 0; i < 2; i++) {
          expect(out[`present.${i}.key`].dims).toEqual([B, HEAD[arch], step, 16]);
          feeds[`past_key_values.${i}.key`] = out[`present.${i}.key`];
          feeds[`past_key_values.${i}.value`] = out[`present.${i}.value`];
        }
        out = await cached.run(feeds);
        expect(out.logits.dims).toEqual([B, 1, 256]);
        rows(out.logits).forEach((r, b) => got[b].push(r[0]));
      }
      for (let b = 0; b < B; b++) for (let t = 0; t < 8; t++) expect(maxDiff(got[b][t], want[b][t])).toBeLessThan(1e-4);
    });

    it(`${arch}: attention is causal and honours attention_mask`, async () => {
      const s = await session({ arch, kvCache: false, seed: 3 });
      const tokens = randomTokens(5, 8);
      const ref = rows((await s.run(lmFeeds(tokens, 0))).logits);
      // Changing the last two tokens leaves earlier positions untouched, and does change position 6.
      const later = tokens.map((r) => [...r.slice(0, 6), (r[6] + 1) % 256, (r[7] + 7) % 256]);
      const changed = rows((await s.run(lmFeeds(later, 0))).logits);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < 6; t++) expect(maxDiff(changed[b][t], ref[b][t])).toBeLessThan(1e-6);
        expect(maxDiff(changed[b][6], ref[b][6])).toBeGreaterThan(1e-3);
      }
      // A token masked out by attention_mask (position 2) influences no other position.
      const mask = tokens.map((r) => r.map((_, t) => (t === 2 ? 0 : 1)));
      const masked = rows((await s.run(lmFeeds(tokens, 0, mask))).logits);
      const other = tokens.map((r) => r.map((v, t) => (t === 2 ? (v + 13) % 256 : v)));
      const masked2 = rows((await s.run(lmFeeds(other, 0, mask))).logits);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < 8; t++) if (t !== 2) expect(maxDiff(masked2[b][t], masked[b][t])).toBeLessThan(1e-6);
        expect(maxDiff(masked[b][5], ref[b][5])).toBeGreaterThan(1e-3);
      }
    });
  }

  it('same seed gives byte-identical files, another seed different ones', async () => {
    for (const arch of ['gpt', 'llama', 'gpt-moe', 'cnn'] as Arch[]) {
      const [a, b, c] = [await write(buildModel({ arch, seed: 42 })), await write(buildModel({ arch, seed: 42 })), await write(buildModel({ arch, seed: 43 }))];
      const [ba, bb, bc] = [readFileSync(a), readFileSync(b), readFileSync(c)];
      expect(ba.equals(bb)).toBe(true);
      expect(ba.equals(bc)).toBe(false);
    }
  });

  it('writes with external data and onnxruntime reads it back to the same outputs', async () => {
    const doc = buildModel({ arch: 'llama', kvCache: false, seed: 5 });
    const embedded = await ort.InferenceSession.create(await write(doc));
    const external = await ort.InferenceSession.create(await write(doc, { externalData: 'always' }));
    const feeds = lmFeeds(randomTokens(2, 6), 0);
    const [x, y] = [await embedded.run(feeds), await external.run(feeds)];
    expect(maxDiff(x.logits.data as Float32Array, y.logits.data as Float32Array)).toBe(0);
  });

  it('gpt-moe records its expert groups in metadata', () => {
    const doc = buildModel({ arch: 'gpt-moe', layers: 3, experts: 5, topK: 2 });
    const groups = JSON.parse(metadata(doc)[EXPERTS_METADATA_KEY]) as ExpertGroup[];
    expect(groups.map((g) => g.layer)).toEqual([0, 1, 2]);
    const producers = new Map(doc.graph.node.flatMap((n) => (n.output ?? []).map((o) => [o, n] as const)));
    const names = new Set(doc.graph.node.map((n) => n.name));
    for (const g of groups) {
      expect(g.topK).toBe(2);
      expect(producers.get(g.router)?.name).toBe(`/model/layers.${g.layer}/moe/router/MatMul`);
      expect(g.experts.map((e) => e.index)).toEqual([0, 1, 2, 3, 4]);
      for (const e of g.experts) {
        expect(e.nodes.length).toBeGreaterThan(4);
        for (const n of e.nodes) {
          expect(names.has(n)).toBe(true);
          expect(n.startsWith(`/model/layers.${g.layer}/moe/experts.${e.index}/`)).toBe(true);
        }
      }
    }
    // Every node under an expert prefix is listed.
    const listed = new Set(groups.flatMap((g) => g.experts.flatMap((e) => e.nodes)));
    for (const n of doc.graph.node) if (/\/experts\.\d+\//.test(n.name ?? '')) expect(listed.has(n.name ?? '')).toBe(true);
    expect(metadata(buildModel({ arch: 'gpt' }))[EXPERTS_METADATA_KEY]).toBeUndefined();
  });

  it('gpt ties its LM head to the token embedding; llama does not', () => {
    const consumers = (doc: ModelDoc, name: string) => doc.graph.node.filter((n) => n.input?.includes(name)).map((n) => `${n.opType} ${n.name}`);
    const gpt = buildModel({ arch: 'gpt' });
    expect(consumers(gpt, GPT_EMBEDDING).sort()).toEqual(['Gather /model/embed_tokens/Gather', 'Transpose /lm_head/Transpose']);
    const llama = buildModel({ arch: 'llama' });
    expect(consumers(llama, 'model.embed_tokens.weight')).toEqual(['Gather /model/embed_tokens/Gather']);
    expect(consumers(llama, 'lm_head.weight')).toEqual(['MatMul /lm_head/MatMul']);
  });

  it('counts parameters, and a 24 x 2048 model is over a billion', () => {
    const [d, v, p, f, l] = [64, 256, 128, 256, 2];
    expect(parameterCount({ arch: 'gpt' })).toBe(v * d + p * d + l * (4 * d + 4 * (d * d + d) + d * f + f + f * d + d) + 2 * d);
    const big = { layers: 24, dModel: 2048, heads: 16, vocab: 32000 };
    for (const arch of ['gpt', 'llama'] as const) {
      const n = parameterCount({ arch, ...big });
      expect(n).toBeGreaterThanOrEqual(1e9);
      expect(Number(metadata(buildModel({ arch, ...big }))['gridpipe.parameters'])).toBe(n);
    }
    // The big doc holds no weight bytes: everything of size is generated on demand.
    const doc = buildModel({ arch: 'gpt', ...big });
    const held = doc.graph.initializer.reduce((s, w) => s + (w.bytes?.kind === 'inline' ? w.bytes.bytes.byteLength : 0), 0);
    expect(held).toBeLessThan(1 << 20);
  });

  it('rejects bad options', () => {
    expect(() => buildModel({ arch: 'gpt', dModel: 60, heads: 8 })).toThrow(/multiple of heads/);
    expect(() => buildModel({ arch: 'llama', heads: 4, kvHeads: 3 })).toThrow(/kvHeads/);
    expect(() => buildModel({ arch: 'gpt-moe', experts: 2, topK: 3 })).toThrow(/topK/);
    expect(() => buildModel({ arch: 'nope' as Arch })).toThrow(/unknown arch/);
  });
});

describe('graph builder', () => {
  it('makes attributes of every kind and unique node names', () => {
    const g = new GraphBuilder('t');
    const x = g.input('x', 1, ['n', 4]);
    const outs = g.node('Custom', [x], {
      name: '/a/Custom', outputs: 2, domain: 'test',
      attrs: { i: 3, f: 0.5, wholeFloat: attr.float(2), s: 'hi', is: [1, 2], fs: [0.5, 1.5], ss: ['a', 'b'], t: makeTensor([2], Float32Array.of(1, 2)), skip: undefined },
    });
    expect(outs).toEqual(['/a/Custom_output_0', '/a/Custom_output_1']);
    g.op('Relu', [outs[0]], { name: '/a/Custom' });
    const doc = g.build();
    expect(doc.node.map((n) => n.name)).toEqual(['/a/Custom', '/a/Custom_1']);
    const decoded = onnx.NodeProto.decode(onnx.NodeProto.encode(doc.node[0]));
    const byName = Object.fromEntries((decoded.attribute ?? []).map((a) => [a.name, a]));
    expect(byName.i.type).toBe(AttributeType.INT);
    expect(byName.f.type).toBe(AttributeType.FLOAT);
    expect(byName.wholeFloat.type).toBe(AttributeType.FLOAT);
    expect(byName.s.type).toBe(AttributeType.STRING);
    expect(byName.is.type).toBe(AttributeType.INTS);
    expect(byName.fs.type).toBe(AttributeType.FLOATS);
    expect(byName.ss.type).toBe(AttributeType.STRINGS);
    expect(byName.t.type).toBe(AttributeType.TENSOR);
    expect(byName.skip).toBeUndefined();
    expect(new TextDecoder().decode(byName.s.s)).toBe('hi');
    expect(doc.input[0].type?.tensorType?.shape?.dim).toEqual([{ dimParam: 'n' }, { dimValue: 4 }]);
    expect(() => g.initializer('x', [1], Float32Array.of(1))).toThrow(/used twice/);
    expect(g.int64([1, 2])).toBe(g.int64([1, 2]));
  });

  it('generates seeded weights chunk by chunk, reproducibly and independently of chunking', async () => {
    const collect = async (bytes: ReturnType<typeof generatedFloat32>) => {
      const parts: Uint8Array[] = [];
      for await (const c of bytes.chunks()) parts.push(c);
      return new Float32Array(Buffer.concat(parts).buffer.slice(0));
    };
    const init = { kind: 'normal', std: 0.5 } as const;
    const a = await collect(generatedFloat32(10_000, 9, init, 4096));
    const b = await collect(generatedFloat32(10_000, 9, init, 1000));
    expect(a.length).toBe(10_000);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    const part = new Float32Array(100);
    fillFloat32(part, 9, 5000, init);
    expect(Array.from(part)).toEqual(Array.from(a.subarray(5000, 5100)));
    const c = await collect(generatedFloat32(10_000, 10, init));
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
    const mean = a.reduce((s, x) => s + x, 0) / a.length;
    const std = Math.sqrt(a.reduce((s, x) => s + (x - mean) ** 2, 0) / a.length);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(std).toBeGreaterThan(0.47);
    expect(std).toBeLessThan(0.53);
  });
});
