/**
 * Generation over any step runner (a pipeline across peers, or one local onnxruntime session): prefill
 * the prompt, then one token per step, streaming tokens as an async iterator. Models with a KV cache
 * take only the new token each step; models without one take the whole sequence every step.
 */
import ort from 'onnxruntime-node';
import { entriesNeeded, sampleFromRanked, sampleToken, type SamplingOptions } from '../policy/sampling.js';
import type { StepHints } from './session.js';
import type { TensorMap } from '../net/exec/client.js';
import { GridpipeError } from '../errors/base.js';

/** Runs one step of a model: graph inputs in, graph outputs (logits...) out. */
export interface StepRunner {
  step(inputs: TensorMap, position: number, tokens: number, hints?: StepHints): Promise<{ outputs: TensorMap }>;
}

export interface GenerateOptions extends SamplingOptions {
  promptIds: number[];
  maxTokens: number;
  /** Stop after emitting any of these ids (the stop token is emitted). */
  stopTokens?: number[];
  /** Whether the model keeps a KV cache (feed only new tokens) — from the manifest's stateful pairs. */
  kvCache: boolean;
  /** The model's graph input names (input_ids, attention_mask, position_ids are understood). */
  inputNames: string[];
  /** Largest context (prompt + generated). */
  maxLength?: number;
  /** Token ids the model takes (0 … vocabSize−1), when known: an id outside is refused before any server runs it. */
  vocabSize?: number;
}

export interface GeneratedToken { id: number; position: number; step: number }

const ids = (values: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);

/** The graph inputs for new tokens `tokens` at KV length `past`. */
export function stepInputs(inputNames: string[], tokens: number[], past: number): TensorMap {
  const feeds: TensorMap = {};
  for (const name of inputNames) {
    if (name === 'input_ids') feeds[name] = ids(tokens);
    else if (name === 'attention_mask') feeds[name] = ids(Array(past + tokens.length).fill(1));
    else if (name === 'position_ids') feeds[name] = ids(tokens.map((_, i) => past + i));
    else if (!name.startsWith('past_key_values')) throw new GridpipeError('UNSUPPORTED_MODEL', `generation does not know how to fill the model input "${name}"`, { badInput: true });
  }
  return feeds;
}

/** The next token from a step's outputs: the server's draw, the row's top entries, or the full logits (any runner). */
function chooseToken(outputs: TensorMap, position: number, options: SamplingOptions): number {
  const sampled = outputs['logits.sampled'];
  if (sampled) return Number((sampled.data as BigInt64Array)[sampled.data.length - 1]);
  const topValues = outputs['logits.top_values'];
  const topIndices = outputs['logits.top_indices'];
  if (topValues && topIndices) {
    const k = topValues.dims[topValues.dims.length - 1];
    const values = (topValues.data as Float32Array).subarray(topValues.data.length - k);
    const ids = Array.from((topIndices.data as BigInt64Array).subarray(topIndices.data.length - k), Number);
    return sampleFromRanked(values, ids, position, options);
  }
  const logits = outputs.logits;
  if (!logits) throw new GridpipeError('UNSUPPORTED_MODEL', 'the model returned no "logits" output', { badInput: true });
  const vocab = logits.dims[logits.dims.length - 1];
  const rows = logits.dims[logits.dims.length - 2];
  const last = (logits.data as Float32Array).subarray((rows - 1) * vocab, rows * vocab);
  return sampleToken(last, position, options);
}

/** Streams generated tokens. */
export async function* generate(runner: StepRunner, options: GenerateOptions): AsyncGenerator<GeneratedToken> {
  if (options.promptIds.length === 0) throw new GridpipeError('BAD_PROMPT', 'the prompt is empty', { badInput: true });
  const limit = options.maxLength ?? Number.POSITIVE_INFINITY;
  if (options.promptIds.length + options.maxTokens > limit) {
    throw new GridpipeError('BAD_PROMPT', `prompt (${options.promptIds.length}) + max tokens (${options.maxTokens}) exceeds the model's context of ${limit}`, { badInput: true });
  }
  // An id outside the embedding table fails inside onnxruntime on the first server, which would look like a
  // broken server (and get it banned for everyone): refuse it here, naming it.
  const badId = options.promptIds.find((id) => !Number.isSafeInteger(id) || id < 0 || (options.vocabSize !== undefined && id >= options.vocabSize));
  if (badId !== undefined) throw new GridpipeError('BAD_PROMPT', `prompt token id ${badId} is not a token of this model${options.vocabSize !== undefined ? ` (ids are 0 to ${options.vocabSize - 1})` : ''}`, { badInput: true });
  const needed = entriesNeeded(options);
  const sequence = [...options.promptIds];
  let past = 0;
  let pending = [...options.promptIds];
  for (let step = 0; step < options.maxTokens; step++) {
    const feed = options.kvCache ? pending : sequence;
    const position = options.kvCache ? past : 0;
    const at = sequence.length;
    // Only the newest position's logits choose the next token: the last server sends the top entry (greedy),
    // or draws the token itself with this sampler (the same code, settings and position as here).
    const sample = needed === 1 ? undefined : { temperature: options.temperature!, topK: options.topK, topP: options.topP, seed: options.seed ?? 0, position: at };
    const { outputs } = await runner.step(stepInputs(options.inputNames, feed, position), position, feed.length, { lastRowOnly: ['logits'], ...(sample ? { sample } : { topK: needed }) });
    const id = chooseToken(outputs, at, options);
    if (options.kvCache) past += feed.length;
    sequence.push(id);
    pending = [id];
    yield { id, position: at, step };
    if (options.stopTokens?.includes(id)) return;
  }
}
