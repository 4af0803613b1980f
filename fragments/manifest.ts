/**
 * The manifest (JSON, versioned): what a model's fragments are, in order, with their content IDs and the
 * tensors each consumes and produces. Peers verify fragments against it; the scheduler routes with it.
 */
import { FragmentError } from './onnx/errors.js';
import type { FragmentInput, FragmentOutput, BoundaryTensor } from './partition.js';
import type { StatefulPair } from './stateful.js';
import type { QuantizationFigures } from './quantize/measure.js';
import type { QuantSchemeName, WeightPrecision, WeightRole } from './quantize/scheme.js';

export const MANIFEST_SCHEMA = 'gridpipe.manifest/1';
export const MANIFEST_FILE = 'manifest.json';

export interface ManifestFile { file: string; cid: string; bytes: number }

export interface ManifestFragment {
  index: number;
  /** The fragment's .onnx file and the CID of its bytes: the fragment's identity. */
  file: string;
  cid: string;
  bytes: number;
  /** Its external weights, when it has them (also content addressed). */
  data?: ManifestFile;
  inputs: FragmentInput[];
  outputs: FragmentOutput[];
  /** FLOPs at the manifest's costDims. */
  flops: number;
  weightBytes: number;
  nodeCount: number;
  ops: Record<string, number>;
  /** KV-cache pairs held by this fragment: the input is fed from the output of the previous step, on the peer. */
  stateful: StatefulPair[];
  /**
   * Set on the fragments of a mixture-of-experts layer cut for selective activation (docs/moe.md): the
   * layer's router, or the experts it computes. They are called per token, not walked as a dense span.
   */
  moe?: { group: number; role: 'router' | 'experts'; experts?: number[] };
  /** Present when the fragment's weights were quantized (`model fragment --quantize`): scheme and measured weight error. */
  quantization?: FragmentQuantizationRecord;
}

/** A quantized fragment: its scheme, what was rewritten, the bytes before, and the weights' measured error. */
export interface FragmentQuantizationRecord {
  scheme: QuantSchemeName;
  bits: number;
  block: number;
  /** Each block has its own zero point (stored next to its scale); absent: the ops' default zero point. */
  asymmetric?: true;
  /** Weights of these roles (token table, position table, LM head, layers) stored at their own precision instead of bits / block. */
  roles?: Partial<Record<WeightRole, WeightPrecision>>;
  /** Source weights stored quantized, and nodes rewritten by op (MatMul, Gemm, Gather). */
  weights: number;
  replaced: Record<string, number>;
  /** Of `weights`, how many were quantized with GPTQ against calibration inputs (absent: none). */
  calibrated?: number;
  /** Precision the exporter chose and that was kept (quantized ops, fp16 weights). */
  kept: string[];
  /** Weight bytes of this fragment at full precision (`weightBytes` counts the quantized bytes). */
  sourceWeightBytes: number;
  /** Over the quantized weights: largest absolute error and root-mean-square error relative to the weights' RMS. */
  weightError: { maxAbs: number; relRms: number };
}

/** The whole model's quantization: scheme, bytes, and the output error measured against the full-precision model. */
export interface ModelQuantizationRecord {
  scheme: QuantSchemeName;
  bits: number;
  block: number;
  /** Each block has its own zero point (stored next to its scale); absent: the ops' default zero point. */
  asymmetric?: true;
  /** Weights of these roles (token table, position table, LM head, layers) stored at their own precision instead of bits / block. */
  roles?: Partial<Record<WeightRole, WeightPrecision>>;
  /** The onnxruntime ops the quantized weights run on. */
  ops: string[];
  sourceWeightBytes: number;
  weightBytes: number;
  /** Present when weights were quantized with GPTQ: what calibrated them (text CID, windows). */
  calibration?: { method: 'gptq'; source: string; positions: number };
  /** Measured when fragmenting (absent when measuring was turned off); `model verify` measures again and compares. */
  figures?: QuantizationFigures;
}

export interface ExpertGroup {
  layer: number;
  topK: number;
  /** The router's scores (logits, or probabilities when the model takes a softmax before top-k). */
  router: string;
  /** `fragments`: those holding the expert's nodes; when the layer was cut apart, the one expert fragment. `output`: its output then. */
  experts: { index: number; fragments: number[]; nodes: number; output?: string }[];
  /**
   * Present when the layer was cut for selective activation: the router fragment (its outputs are `gates` and
   * `router`), the layer's input (what router and experts read) and output Σ_e gates[..., e] · expert_e, made by
   * the caller; `scoreKind` says how to renormalise the weights when a chosen expert is replaced.
   */
  routerFragment?: number;
  input?: string;
  output?: string;
  gates?: string;
  scoreKind?: 'logits' | 'probabilities';
}

/**
 * The model's tokenizer. `hf`: a Hugging Face tokenizer.json shipped beside the fragments (content addressed,
 * like them), with its tokenizer_config.json (special tokens, chat template) when the publisher had one.
 */
export interface Tokenizer { kind: 'byte' | 'none' | 'hf'; file?: string; cid?: string; bytes?: number; config?: ManifestFile }

/** Defaults the model's publisher set in generation_config.json: end-of-sequence ids and sampling parameters. */
export interface GenerationDefaults { eosTokenIds?: number[]; temperature?: number; topP?: number; topK?: number }

export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  name: string;
  createdBy: string;
  /** The whole model; its external data files are listed by name and size (not hashed: they can be tens of GB). */
  source: { file: string; cid: string; bytes: number; data?: { file: string; bytes: number }[] };
  model: {
    irVersion: number;
    opsets: Record<string, number>;
    inputs: BoundaryTensor[];
    outputs: BoundaryTensor[];
    parameters: number;
    weightBytes: number;
    flops: number;
    synthetic: boolean;
    arch?: string;
    /** Longest sequence (prompt + generated) the model takes, when known (position table size). */
    contextLength?: number;
  };
  /** Sizes at which symbolic dims were costed (FLOPs, crossing bytes). */
  costDims: Record<string, number>;
  plan: { parts: number; crossBytes: number[]; balanceTolerance: number };
  tokenizer: Tokenizer;
  /** From the model folder's generation_config.json, when it had one. */
  generation?: GenerationDefaults;
  statefulPairs: StatefulPair[];
  expertGroups: ExpertGroup[];
  fragments: ManifestFragment[];
  /** Present when the fragments hold quantized weights. */
  quantization?: ModelQuantizationRecord;
}

/** How many positions the manifest's FLOPs were costed at: the largest non-batch costDim (1 when none). */
export function positionsAtCostDims(manifest: Pick<Manifest, 'costDims'>): number {
  const positions = Object.entries(manifest.costDims).filter(([k]) => !/batch/i.test(k)).map(([, v]) => v);
  return positions.length ? Math.max(...positions) : 1;
}

/** Token ids a language model takes: the last dim of its "logits" output, when the manifest knows it. */
export function vocabSize(manifest: Pick<Manifest, 'model'>): number | undefined {
  const last = manifest.model.outputs.find((o) => o.name === 'logits')?.shape?.at(-1);
  return typeof last === 'number' && last > 0 ? last : undefined;
}

/** Validates the shape of a parsed manifest; throws BAD_MANIFEST naming the first problem. */
export function checkManifest(value: unknown, where = 'manifest'): Manifest {
  const fail = (what: string): never => { throw new FragmentError('BAD_MANIFEST', `${where}: ${what}`); };
  if (!isObject(value)) return fail('not a JSON object');
  if (value.schema !== MANIFEST_SCHEMA) fail(`schema is ${JSON.stringify(value.schema)}, expected "${MANIFEST_SCHEMA}"`);
  if (typeof value.name !== 'string') fail('"name" must be a string');
  if (!Array.isArray(value.fragments) || value.fragments.length === 0) fail('"fragments" must be a non-empty array');
  (value.fragments as unknown[]).forEach((f, i) => {
    if (!isObject(f)) return fail(`fragments[${i}] is not an object`);
    if (f.index !== i) fail(`fragments[${i}].index is ${JSON.stringify(f.index)}, expected ${i}`);
    for (const key of ['file', 'cid'] as const) if (typeof f[key] !== 'string' || !f[key]) fail(`fragments[${i}].${key} must be a non-empty string`);
    if (typeof f.file === 'string' && (isAbsolutePath(f.file) || f.file.includes('..'))) fail(`fragments[${i}].file must be a plain relative name`);
    for (const key of ['inputs', 'outputs', 'stateful'] as const) if (!Array.isArray(f[key])) fail(`fragments[${i}].${key} must be an array`);
    return undefined;
  });
  const clash = fileClash(value as unknown as Pick<Manifest, 'fragments' | 'tokenizer'>);
  if (clash) fail(clash);
  if (!isObject(value.model) || !Array.isArray(value.model.inputs) || !Array.isArray(value.model.outputs)) fail('"model" must describe inputs and outputs');
  if (!isObject(value.source) || typeof value.source.file !== 'string') fail('"source.file" must be a string');
  if (value.generation !== undefined) checkGeneration(value.generation, fail);
  return value as unknown as Manifest;
}

/** `generation`: eos ids and sampling defaults of the right types (a manifest from the grid is not trusted). */
function checkGeneration(g: unknown, fail: (what: string) => never): void {
  if (!isObject(g)) fail('"generation" must be an object');
  const v = g as Record<string, unknown>;
  if (v.eosTokenIds !== undefined && !(Array.isArray(v.eosTokenIds) && v.eosTokenIds.every((id) => Number.isSafeInteger(id) && (id as number) >= 0))) fail('"generation.eosTokenIds" must be a list of token ids');
  const inRange = (key: string, ok: (n: number) => boolean): void => {
    if (v[key] !== undefined && !(typeof v[key] === 'number' && Number.isFinite(v[key]) && ok(v[key] as number))) fail(`"generation.${key}" is out of range`);
  };
  inRange('temperature', (n) => n >= 0 && n <= 2);
  inRange('topP', (n) => n > 0 && n <= 1);
  inRange('topK', (n) => Number.isSafeInteger(n) && n >= 0);
}

/**
 * Two entries of one manifest naming the same file for different bytes (two fragments, a fragment and a data file, a tokenizer
 * file): a host links every file of a model into one folder by these names, so the second would replace the
 * first (CID A's path then holding B's bytes). Returns the problem, naming both entries, or undefined.
 */
export function fileClash(manifest: Pick<Manifest, 'fragments' | 'tokenizer'>): string | undefined {
  const seen = new Map<string, { where: string; cid: unknown }>();
  const entries: [string, unknown, unknown][] = [];
  for (const [i, f] of (Array.isArray(manifest.fragments) ? manifest.fragments : []).entries()) {
    if (!isObject(f)) continue;
    entries.push([`fragments[${i}].file`, f.file, f.cid]);
    if (isObject(f.data)) entries.push([`fragments[${i}].data.file`, f.data.file, f.data.cid]);
  }
  const t = manifest.tokenizer as unknown;
  if (isObject(t)) {
    entries.push(['tokenizer.file', t.file, t.cid]);
    if (isObject(t.config)) entries.push(['tokenizer.config.file', t.config.file, t.config.cid]);
  }
  for (const [where, file, cid] of entries) {
    if (typeof file !== 'string' || !file) continue;
    // Case-folded: on case-insensitive file systems "A.onnx" and "a.onnx" are one file.
    const key = file.split('/').filter((part) => part !== '' && part !== '.').join('/').toLowerCase();
    const first = seen.get(key);
    // The same bytes under the same name (a shared file) are harmless; different CIDs are not.
    if (first && first.cid !== cid) return `${where} and ${first.where} both name the file ${JSON.stringify(file)} with different CIDs: each file of a manifest needs its own name`;
    if (!first) seen.set(key, { where, cid });
  }
  return undefined;
}

/** Absolute on POSIX or Windows (the manifest may have been written on either; no node:path, so this file runs anywhere). */
function isAbsolutePath(file: string): boolean {
  return /^([/\\]|[A-Za-z]:)/.test(file);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
