/**
 * Inputs of the synthetic GPT decoders (Hugging Face Optimum "with past" names) for exec-level tests that drive
 * a server step by step: the token ids, their positions and the attention mask over the KV cache plus them.
 */
import ort from 'onnxruntime-node';
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
