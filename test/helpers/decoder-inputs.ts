/**
 * Inputs of the synthetic GPT decoders (Hugging Face Optimum "with past" names) for exec-level tests that drive
 * a server step by step: the token ids, their positions and the attention mask over the KV cache plus them; and
 * the reference those tests compare against (the whole model decoded greedily in one onnxruntime session).
 */
import ort from 'onnxruntime-node';
import { expect } from 'vitest';
import type { TensorMap } from '../../net/exec/index.js';

/** An int64 tensor of `values` shaped `dims`. */
export function int64(values: number[], dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
}

/** Decoder inputs for `tokens` at KV length `position`. */
export function gptInputs(tokens: number[], position: number): TensorMap {
  const n = tokens.length;
  return {
    input_ids: int64(tokens, [1, n]),
    attention_mask: int64(new Array(position + n).fill(1), [1, position + n]),
    position_ids: int64(tokens.map((_, i) => position + i), [1, n]),
  };
}

/** Greedy next token from the last row of logits [..., vocab]. */
export function argmaxLast(logits: ort.Tensor): number {
  const data = logits.data as Float32Array;
  const vocab = logits.dims[logits.dims.length - 1];
  const row = data.subarray(data.length - vocab);
  let best = 0;
  for (let i = 1; i < vocab; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The KV cache layout of a decoder: layers, KV heads and head size. */
export interface KvShape { layers: number; kvHeads: number; headDim: number }

/**
 * The whole KV model run alone in onnxruntime, greedy, step by step with its own cache: the tokens fed at each
 * step (the prompt, then one token) and the logits each step gave (the reference remote runs are checked against).
 */
export async function referenceDecode(file: string, kv: KvShape, prompt: number[], steps: number): Promise<{ tokens: number[][]; logits: ort.Tensor[] }> {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'] });
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < kv.layers; l++) {
    for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, kv.kvHeads, 0, kv.headDim]);
  }
  const tokens: number[][] = [];
  const logits: ort.Tensor[] = [];
  let position = 0;
  let next = prompt;
  for (let s = 0; s < steps; s++) {
    const out = await session.run({ ...gptInputs(next, position), ...past });
    for (let l = 0; l < kv.layers; l++) {
      for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = out[`present.${l}.${kind}`];
    }
    tokens.push(next);
    logits.push(out.logits);
    position += next.length;
    next = [argmaxLast(out.logits)];
  }
  await session.release();
  return { tokens, logits };
}

/** The largest elementwise difference of two tensors, after checking they have the same dims and type. */
export function maxAbsDiff(a: ort.Tensor, b: ort.Tensor): number {
  expect(a.dims).toEqual(b.dims);
  expect(a.type).toBe(b.type);
  const x = a.data as ArrayLike<number | bigint>;
  const y = b.data as ArrayLike<number | bigint>;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(Number(x[i]) - Number(y[i])));
  return m;
}
