/**
 * Measures what quantization did to a model's outputs: the whole full-precision model against the chain of
 * quantized fragments, on seeded sample inputs (max / mean / relative error per output) and, for a language model,
 * over a seeded set of token sequences (how often the greedy next token agrees, and the perplexity each gives).
 * The fragmenter records these figures in the manifest; `model verify` measures them again and compares.
 */
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Manifest } from '../manifest.js';
import { vocabSize } from '../manifest.js';
import { readModel } from '../onnx/read.js';
import { indexGraph } from '../analysis/graph.js';
import { inferTensorInfo } from '../analysis/infer.js';
import { integerInputBounds, sampleInputs } from '../sample-inputs.js';
import { seededRandom } from '../seeded-random.js';
import { FragmentError } from '../onnx/errors.js';

export interface OutputError { name: string; maxAbs: number; meanAbs: number; maxRel: number }
export interface LanguageModelError {
  /** What the prompt set was: seeded random ids, or windows of a text (named by its CID). */
  source: string;
  sequences: number;
  /** Positions compared (every position of every sequence). */
  positions: number;
  /** Fraction of positions where the quantized chain's greedy (argmax) next token equals the whole model's. */
  tokenAgreement: number;
  perplexity: number;
  quantizedPerplexity: number;
  /** quantizedPerplexity − perplexity. */
  perplexityDelta: number;
}
export interface QuantizationFigures {
  seed: number;
  dims: Record<string, number>;
  outputs: OutputError[];
  languageModel?: LanguageModelError;
}

export interface MeasureOptions {
  seed?: number;
  dims?: Record<string, number>;
  shapes?: Record<string, number[]>;
  /** Token sequences for the language-model figures; default: seeded random ids (see SEQUENCES, SEQUENCE_LENGTH). */
  sequences?: number[][];
  /** What `sequences` are, recorded with the figures (e.g. "text bafk… seed 7"). */
  sequenceSource?: string;
}

const SEQUENCES = 8;
const SEQUENCE_LENGTH = 32;
export const DEFAULT_MEASURE_SEED = 1234;

/** Runs the whole model at `modelPath` and the fragment chain in `dir` and measures the difference. */
export async function measureQuantization(manifest: Manifest, dir: string, modelPath: string, options: MeasureOptions = {}): Promise<QuantizationFigures> {
  const seed = options.seed ?? DEFAULT_MEASURE_SEED;
  const doc = readModel(modelPath);
  const bounds = integerInputBounds(indexGraph(doc), inferTensorInfo(doc));
  const { feeds, dims } = sampleInputs(manifest.model.inputs, { dims: options.dims, shapes: options.shapes, seed, bounds });
  const whole = await ort.InferenceSession.create(modelPath, { logSeverityLevel: 4 });
  const chain = await FragmentChain.open(manifest, dir);
  try {
    const expected = await whole.run(feeds);
    const actual = await chain.run(feeds);
    const outputs = manifest.model.outputs.map((o) => outputError(o.name, expected[o.name], actual[o.name]));
    const source = options.sequences ? options.sequenceSource ?? 'given token sequences' : `seeded random ids (seed ${seed}, ${SEQUENCES}×${SEQUENCE_LENGTH})`;
    const languageModel = await measureLanguageModel(manifest, whole, chain, options.sequences ?? randomSequences(manifest, seed), source);
    return { seed, dims, outputs, ...(languageModel ? { languageModel } : {}) };
  } finally {
    await whole.release();
    await chain.release();
  }
}

/** The fragments of a manifest as onnxruntime sessions, run one after another as the grid would. */
export class FragmentChain {
  private constructor(private readonly manifest: Manifest, private readonly sessions: ort.InferenceSession[]) {}

  /** Opens one session per fragment file. */
  static async open(manifest: Manifest, dir: string): Promise<FragmentChain> {
    const sessions: ort.InferenceSession[] = [];
    for (const f of manifest.fragments) sessions.push(await ort.InferenceSession.create(path.join(dir, f.file), { logSeverityLevel: 4 }));
    return new FragmentChain(manifest, sessions);
  }

  /** Feeds the model's inputs through every fragment; returns every tensor produced. */
  async run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    const env: Record<string, ort.Tensor> = { ...feeds };
    for (const [i, f] of this.manifest.fragments.entries()) {
      const inputs: Record<string, ort.Tensor> = {};
      for (const input of f.inputs) {
        const t = env[input.name];
        if (!t) throw new FragmentError('VERIFY_FAILED', `fragment ${f.index} needs "${input.name}", which nothing before it produced`);
        inputs[input.name] = t;
      }
      Object.assign(env, await this.sessions[i].run(inputs));
    }
    return env;
  }

  async release(): Promise<void> {
    for (const s of this.sessions) await s.release();
  }
}

/** Largest, mean and relative (largest over the reference's largest magnitude) absolute difference. */
export function outputError(name: string, expected: ort.Tensor | undefined, actual: ort.Tensor | undefined): OutputError {
  const infinite = { name, maxAbs: Infinity, meanAbs: Infinity, maxRel: Infinity };
  if (!expected || !actual || expected.type !== actual.type || expected.dims.join() !== actual.dims.join()) return infinite;
  const a = expected.data as ArrayLike<number | bigint>;
  const b = actual.data as ArrayLike<number | bigint>;
  let maxAbs = 0;
  let sum = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]);
    const d = Math.abs(x - Number(b[i]));
    if (Number.isNaN(d)) return infinite;
    sum += d;
    if (d > maxAbs) maxAbs = d;
    if (Math.abs(x) > scale) scale = Math.abs(x);
  }
  return { name, maxAbs, meanAbs: a.length ? sum / a.length : 0, maxRel: maxAbs === 0 ? 0 : scale > 0 ? maxAbs / scale : Infinity };
}

/** Seeded token sequences over the model's vocabulary (empty when it is not a language model). */
function randomSequences(manifest: Manifest, seed: number): number[][] {
  const vocab = vocabSize(manifest);
  if (!vocab) return [];
  const random = seededRandom(seed + 1);
  return Array.from({ length: SEQUENCES }, () => Array.from({ length: SEQUENCE_LENGTH }, () => Math.floor(random() * vocab)));
}

/** Inputs for one full-sequence forward pass with an empty KV cache; undefined when the model's inputs are not a decoder's. */
export function languageModelFeeds(manifest: Manifest, ids: number[]): Record<string, ort.Tensor> | undefined {
  const int64 = (values: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
  const past = new Set(manifest.statefulPairs.map((p) => p.input));
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of manifest.model.inputs) {
    if (input.name === 'input_ids') feeds[input.name] = int64(ids);
    else if (input.name === 'attention_mask') feeds[input.name] = int64(ids.map(() => 1));
    else if (input.name === 'position_ids') feeds[input.name] = int64(ids.map((_, i) => i));
    else if (past.has(input.name) && input.dtype === 'float' && input.shape) {
      const shape = input.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 1 : 0));
      feeds[input.name] = new ort.Tensor('float32', new Float32Array(0), shape);
    } else return undefined;
  }
  return feeds.input_ids ? feeds : undefined;
}

async function measureLanguageModel(manifest: Manifest, whole: ort.InferenceSession, chain: FragmentChain, sequences: number[][], source: string): Promise<LanguageModelError | undefined> {
  if (sequences.length === 0 || !manifest.model.outputs.some((o) => o.name === 'logits')) return undefined;
  let agree = 0;
  let positions = 0;
  let loss = 0;
  let quantizedLoss = 0;
  let scored = 0;
  for (const ids of sequences) {
    const feeds = languageModelFeeds(manifest, ids);
    if (!feeds) return undefined;
    const expected = (await whole.run(feeds)).logits;
    const actual = (await chain.run(feeds)).logits;
    const vocab = expected.dims[expected.dims.length - 1];
    const e = expected.data as Float32Array;
    const a = actual.data as Float32Array;
    for (let t = 0; t < ids.length; t++) {
      const re = e.subarray(t * vocab, (t + 1) * vocab);
      const ra = a.subarray(t * vocab, (t + 1) * vocab);
      if (argmax(re) === argmax(ra)) agree++;
      positions++;
      if (t + 1 < ids.length) {
        loss += negativeLogLikelihood(re, ids[t + 1]);
        quantizedLoss += negativeLogLikelihood(ra, ids[t + 1]);
        scored++;
      }
    }
  }
  const perplexity = Math.exp(loss / scored);
  const quantizedPerplexity = Math.exp(quantizedLoss / scored);
  return { source, sequences: sequences.length, positions, tokenAgreement: agree / positions, perplexity, quantizedPerplexity, perplexityDelta: quantizedPerplexity - perplexity };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function negativeLogLikelihood(row: Float32Array, target: number): number {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return Math.log(sum) + max - row[target];
}
