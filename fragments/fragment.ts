/**
 * `fragmentModel`: cut an ONNX model (a file, or an export folder with its tokenizer and generation config)
 * into verified, content-addressed fragments plus a manifest.
 */
import { copyFile, mkdir, writeFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { int64ToNumber } from '../proto/onnx.js';
import { readModel } from './onnx/read.js';
import { writeModel } from './onnx/write.js';
import { FragmentError } from './onnx/errors.js';
import { tensorBytesLength, type ModelDoc } from './onnx/model-doc.js';
import { indexGraph, subgraphsOf, type GraphIndex } from './analysis/graph.js';
import type { NodeProto } from '../proto/onnx.js';
import { inferTensorInfo } from './analysis/infer.js';
import { buildCutProblem, type PlacedGraph } from './cut-problem.js';
import { countCutPoints, planCuts, type CutPlan, type CutTarget } from './planner.js';
import { partition, type FragmentModel } from './partition.js';
import { cidFromSha256, cidOfBytes, cidOfFile } from './cid.js';
import { MANIFEST_FILE, MANIFEST_SCHEMA, type ExpertGroup, type Manifest, type ManifestFragment, type Tokenizer } from './manifest.js';
import { statefulPairs } from './stateful.js';
import { dataTypeName } from './onnx/dtype.js';
import { VERSION } from './version.js';
import { modelFileOf, readModelFolderFiles, type TokenizerCheck } from './model-folder.js';
import { cutMoeModel, type MoeCutFragment } from './moe/cut-model.js';
import { quantizeFragments, type QuantizeOptions } from './quantize/apply.js';

export interface FragmentOptions {
  parts?: number;
  maxBytes?: number;
  /** Sizes for symbolic dims when costing (defaults: batch 1, others 16). */
  dims?: Record<string, number>;
  /** Progress of writing fragment files: bytes so far and in all. */
  onProgress?: (done: number, total: number) => void;
  /**
   * A Hugging Face tokenizer.json to ship with the fragments (copied into the folder, content addressed in the
   * manifest); a tokenizer_config.json beside it (chat template, special tokens) goes along. Default: the
   * tokenizer.json beside the model file, if there is one.
   */
  tokenizer?: string;
  /** Checks the tokenizer files with the code that serves them (see TokenizerCheck), before any cutting. */
  checkTokenizer?: TokenizerCheck;
  /**
   * Cut every recognised mixture-of-experts layer into a router fragment and fragments of this many experts
   * each, for selective activation (docs/moe.md); --parts then counts the dense fragments only.
   */
  expertsPerFragment?: number;
  /** Store MatMul/Gemm/Gather weights block-quantized (see fragments/quantize/), measuring the error as `measure` says. */
  quantize?: QuantizeOptions;
}

export interface FragmentResult { manifest: Manifest; manifestCid: string; dir: string }

/** Loads and analyses a model once, for planning (used by fragment and inspect). */
export function analyseModel(modelPath: string, dims: Record<string, number> = {}): { doc: ModelDoc; index: GraphIndex; placedGraph: PlacedGraph } {
  const doc = readModel(modelPath);
  const index = indexGraph(doc);
  const infos = inferTensorInfo(doc);
  const placedGraph = buildCutProblem(index, infos, dims);
  return { doc, index, placedGraph };
}

/** Plans the cuts for a target, with errors that say why a model cannot be cut as asked. */
export function planFor(placedGraph: PlacedGraph, target: CutTarget): CutPlan {
  const { index, placed, problem } = placedGraph;
  if ('parts' in target && target.parts > 1) {
    const points = countCutPoints(problem);
    if (points < target.parts - 1) {
      const sub = placed.filter((p) => index.hasSubgraph(p)).map((p) => index.nodes[p]);
      const describeNode = (n: NodeProto): string => `${n.opType} node${n.name ? ` "${n.name}"` : ''} (${countSubgraphNodes(n)} nodes inside)`;
      const why = placed.length === 1 && sub.length === 1
        ? `the model's whole body is one ${describeNode(sub[0])}, and nodes with subgraphs (If, Loop, Scan) stay whole`
        : `the graph has only ${points} possible cut point${points === 1 ? '' : 's'}${sub.length
          ? `; ${sub.slice(0, 3).map(describeNode).join(', ')}${sub.length > 3 ? ` and ${sub.length - 3} more` : ''} stay${sub.length === 1 ? 's' : ''} whole`
          : ''} (KV-cache pairs and nodes with subgraphs are never split)`;
      throw new FragmentError('TOO_MANY_PARTS', `cannot cut into ${target.parts} parts: ${why}`);
    }
  }
  return planCuts(problem, target);
}

/** Nodes inside a node's subgraphs, counted recursively. */
function countSubgraphNodes(node: NodeProto): number {
  return subgraphsOf(node).reduce((sum, g) => sum + (g.node ?? []).reduce((s, n) => s + 1 + countSubgraphNodes(n), 0), 0);
}

/** Cuts the model into fragments in `outDir` (manifest.json + fragment-N.onnx [+ .data]). */
export async function fragmentModel(input: string, outDir: string, options: FragmentOptions): Promise<FragmentResult> {
  if ((options.parts === undefined) === (options.maxBytes === undefined)) {
    throw new FragmentError('BAD_ARGUMENT', 'give exactly one of --parts K or --max-bytes N');
  }
  const modelPath = modelFileOf(input);
  // The files that travel with the model are checked first: a broken one fails here, naming it, not at serve time.
  const shipped = readModelFolderFiles(modelPath, options.tokenizer);
  if (shipped.tokenizer && options.checkTokenizer) await options.checkTokenizer({ tokenizer: shipped.tokenizer, tokenizerConfig: shipped.tokenizerConfig });
  const { doc, placedGraph, plan, fragments: cut, moeGroups } = options.expertsPerFragment !== undefined
    ? cutMoeModel(modelPath, options.expertsPerFragment, options.parts !== undefined ? { parts: options.parts } : { maxBytes: options.maxBytes! }, options.dims)
    : cutDense(modelPath, options);

  await mkdir(outDir, { recursive: true });
  // onnxruntime loads only when calibrating (GPTQ runs the full-precision model over the calibration text).
  const moments = options.quantize?.calibration ? await (await import('./quantize/calibrate.js')).calibrationMoments(modelPath, cut, options.quantize.calibration, options.quantize) : undefined;
  const quantized = options.quantize ? quantizeFragments(cut, options.quantize, moments) : undefined;
  const fragments = quantized ? quantized.fragments : cut;
  const total = fragments.reduce((s, f) => s + f.weightBytes, 0);
  let doneBefore = 0;
  const written: ManifestFragment[] = [];
  for (const f of fragments) {
    const file = `fragment-${f.index}.onnx`;
    const out = await writeModel(f.doc, path.join(outDir, file), {
      onProgress: (w) => options.onProgress?.(Math.min(total, doneBefore + w), total),
    });
    doneBefore += f.weightBytes;
    const entry: ManifestFragment = {
      index: f.index, file, cid: cidFromSha256(out.model.sha256), bytes: out.model.bytes,
      inputs: f.inputs, outputs: f.outputs, flops: f.flops, weightBytes: f.weightBytes,
      nodeCount: f.nodeCount, ops: f.ops, stateful: f.stateful,
      ...(f.expertRole ? { moe: f.expertRole } : {}),
    };
    if (out.data) entry.data = { file: path.basename(out.data.path), cid: cidFromSha256(out.data.sha256), bytes: out.data.bytes };
    written.push(entry);
  }
  options.onProgress?.(total, total);

  const manifest = await buildManifest(modelPath, outDir, doc, placedGraph, plan, written, fragments);
  if (moeGroups) manifest.expertGroups = moeGroups;
  if (quantized) await quantized.record(manifest, outDir, modelPath);
  if (shipped.tokenizer) manifest.tokenizer = await shipTokenizer(shipped.tokenizer.file, outDir);
  if (shipped.generation) manifest.generation = shipped.generation.defaults;
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  await writeFile(path.join(outDir, MANIFEST_FILE), text);
  return { manifest, manifestCid: cidOfBytes(Buffer.from(text)), dir: outDir };
}

/** The ordinary cut: the planner over the whole graph, then the partitioner. */
function cutDense(modelPath: string, options: FragmentOptions): { doc: ModelDoc; placedGraph: PlacedGraph; plan: CutPlan; fragments: MoeCutFragment[]; moeGroups?: undefined } {
  const { doc, placedGraph } = analyseModel(modelPath, options.dims);
  if (options.parts !== undefined) {
    const plan = planFor(placedGraph, { parts: options.parts });
    return { doc, placedGraph, plan, fragments: partition(placedGraph, plan) };
  }
  // The planner counts a shared weight in every fragment that copies it, so this holds by construction.
  const plan = planFor(placedGraph, { maxBytes: options.maxBytes! });
  const fragments = partition(placedGraph, plan);
  const over = fragments.find((f) => f.weightBytes > options.maxBytes!);
  if (over) throw new Error(`internal: fragment ${over.index} holds ${over.weightBytes} bytes of weights, over --max-bytes ${options.maxBytes}`);
  return { doc, placedGraph, plan, fragments };
}

async function buildManifest(modelPath: string, outDir: string, doc: ModelDoc, placedGraph: PlacedGraph, plan: CutPlan, fragments: ManifestFragment[], models: FragmentModel[]): Promise<Manifest> {
  const { index, infos, problem } = placedGraph;
  const meta = Object.fromEntries((doc.model.metadataProps ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const opsets: Record<string, number> = {};
  for (const o of doc.model.opsetImport ?? []) opsets[o.domain || 'ai.onnx'] = int64ToNumber(o.version);
  const parameters = doc.graph.initializer.reduce((s, w) => s + (w.header.dims ?? []).reduce<number>((a, d) => a * int64ToNumber(d), 1), 0);
  const describe = (name: string, fallback?: { type?: { tensorType?: { elemType?: number } | null } | null }): { name: string; dtype: string; shape?: (number | string | null)[] } => {
    const input = [...doc.graph.input, ...doc.graph.output].find((v) => v.name === name) ?? fallback;
    const tt = input?.type?.tensorType;
    const info = infos.get(name);
    const dtype = tt?.elemType || info?.dtype || 0;
    const shapeDims = (input?.type?.tensorType as { shape?: { dim?: { dimValue?: unknown; dimParam?: string }[] } } | undefined)?.shape?.dim;
    const shape = shapeDims?.map((d) => d.dimParam || (d.dimValue !== undefined && d.dimValue !== null ? int64ToNumber(d.dimValue as number) : null)) ?? info?.shape;
    return shape ? { name, dtype: dataTypeName(dtype), shape } : { name, dtype: dataTypeName(dtype) };
  };
  const sourceAbs = path.resolve(modelPath);
  const externalFiles = [...new Set(doc.graph.initializer.map((w) => (w.bytes?.kind === 'file' && w.bytes.path !== sourceAbs ? w.bytes.path : '')).filter(Boolean))];
  const source: Manifest['source'] = {
    file: path.relative(path.resolve(outDir), sourceAbs),
    cid: await cidOfFile(sourceAbs),
    bytes: (await stat(sourceAbs)).size,
  };
  if (externalFiles.length) {
    source.data = await Promise.all(externalFiles.map(async (f) => ({ file: path.relative(path.resolve(outDir), f), bytes: (await stat(f)).size })));
  }
  const tokenizerKind = meta['gridpipe.tokenizer'];
  const tokenizer: Tokenizer = tokenizerKind === 'byte' || tokenizerKind === 'hf' ? { kind: tokenizerKind } : { kind: 'none' };
  return {
    schema: MANIFEST_SCHEMA,
    name: doc.graph.name || path.basename(modelPath, '.onnx'),
    createdBy: `gridpipe ${VERSION}`,
    source,
    model: {
      irVersion: int64ToNumber(doc.model.irVersion),
      opsets,
      inputs: index.graphInputs.map((i) => describe(i.name!)),
      outputs: index.graphOutputs.map((o) => describe(o.name!)),
      parameters,
      weightBytes: doc.graph.initializer.reduce((s, w) => s + tensorBytesLength(w.bytes), 0),
      flops: problem.flops.reduce((a, b) => a + b, 0),
      synthetic: meta['gridpipe.synthetic'] === 'true',
      ...contextLengthOf(meta),
      ...(meta['gridpipe.arch'] ? { arch: meta['gridpipe.arch'] } : {}),
    },
    costDims: placedGraph.costDims,
    plan: { parts: fragments.length, crossBytes: plan.crossBytes, balanceTolerance: plan.tolerance },
    tokenizer,
    statefulPairs: statefulPairs(index.graphInputs.map((i) => i.name!), index.graphOutputs.map((o) => o.name!)),
    expertGroups: expertGroups(meta['gridpipe.experts'], models),
    fragments,
  };
}

/** Copies a tokenizer.json (and the tokenizer_config.json beside it) into the fragment folder, content addressed. */
async function shipTokenizer(file: string, outDir: string): Promise<Tokenizer> {
  const ship = async (from: string, name: string): Promise<{ file: string; cid: string; bytes: number }> => {
    const to = path.join(outDir, name);
    if (path.resolve(from) !== path.resolve(to)) await copyFile(from, to);
    return { file: name, cid: await cidOfFile(to), bytes: (await stat(to)).size };
  };
  const main = await ship(file, 'tokenizer.json');
  const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
  return { kind: 'hf', ...main, ...(existsSync(configFile) ? { config: await ship(configFile, 'tokenizer_config.json') } : {}) };
}

/** The context length a model's metadata states (the builder's maxPositions, or max_position_embeddings). */
function contextLengthOf(meta: Record<string, string>): { contextLength?: number } {
  let n: unknown = meta.max_position_embeddings;
  try {
    n ??= (JSON.parse(meta['gridpipe.config'] ?? '{}') as { maxPositions?: unknown }).maxPositions;
  } catch {
    return {};
  }
  const value = Number(n);
  return Number.isSafeInteger(value) && value > 0 ? { contextLength: value } : {};
}

/** Maps the builder's expert metadata (node names per expert) onto the fragments that hold those nodes. */
function expertGroups(json: string | undefined, models: FragmentModel[]): ExpertGroup[] {
  if (!json) return [];
  let groups: { layer: number; topK: number; router: string; experts: { index: number; nodes: string[] }[] }[];
  try {
    groups = JSON.parse(json);
  } catch {
    return [];
  }
  const fragmentOfNodeName = new Map<string, number>();
  for (const m of models) for (const n of m.doc.graph.node) if (n.name) fragmentOfNodeName.set(n.name, m.index);
  return groups.map((g) => ({
    layer: g.layer,
    topK: g.topK,
    router: g.router,
    experts: g.experts.map((e) => ({
      index: e.index,
      fragments: [...new Set(e.nodes.map((n) => fragmentOfNodeName.get(n)).filter((x): x is number => x !== undefined))].sort((a, b) => a - b),
      nodes: e.nodes.length,
    })),
  }));
}
