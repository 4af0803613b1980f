/**
 * Server-side reply shaping: what a supplier does to a span's outputs before they travel (the last row only,
 * the top-k entries, the token drawn with the client's own sampler) and the KV-cache roll-back. Copies are
 * made only of what is kept, so the reply is as small as the request allows.
 */
import ort from 'onnxruntime-node';
import { sampleToken, topIndices } from '../../policy/sampling.js';
import { ExecError } from '../../net/exec/errors.js';
import type { WireSampling } from '../../net/exec/codec.js';
import { ARRAYS, elementCount } from '../../net/exec/tensors.js';

/** The last row of `tensor` along its second-to-last axis ([..., rows, cols] -> [..., 1, cols]; a copy). */
export function lastRow(tensor: ort.Tensor, name: string): ort.Tensor {
  const rank = tensor.dims.length;
  if (rank < 2) throw new ExecError('BAD_REQUEST', `output "${name}" has rank ${rank}; last_row_only needs rank 2 or more`);
  const rows = tensor.dims[rank - 2];
  return rows <= 1 ? tensor : sliceAxis(tensor, rank - 2, rows - 1, rows);
}

/**
 * The token drawn from each last-axis row of `row` ([..., 1, cols]) by the client's sampler (same code, same
 * settings, same position: the token the client would have drawn from the row), as int64 [..., 1, 1].
 */
export function sampledRows(row: ort.Tensor, sampling: WireSampling, name: string): ort.Tensor {
  if (row.type !== 'float32') throw new ExecError('BAD_REQUEST', `sample needs a float32 output; "${name}" is ${row.type}`);
  const cols = row.dims[row.dims.length - 1];
  const outer = elementCount(row.dims.slice(0, -1));
  const data = row.data as Float32Array;
  const ids = new BigInt64Array(outer);
  for (let o = 0; o < outer; o++) ids[o] = BigInt(sampleToken(data.subarray(o * cols, (o + 1) * cols), sampling.position, sampling));
  return new ort.Tensor('int64', ids, [...row.dims.slice(0, -1), 1]);
}

/**
 * The k largest entries of each last-axis row of `row` ([..., 1, cols]), in order (ties: the lower index
 * first, as argmax and the sampler order them): values (same dtype) and their indices (int64), [..., 1, k].
 */
export function topEntries(row: ort.Tensor, k: number, name: string): { values: ort.Tensor; indices: ort.Tensor } {
  if (row.type !== 'float32') throw new ExecError('BAD_REQUEST', `top_k needs a float32 output; "${name}" is ${row.type}`);
  const cols = row.dims[row.dims.length - 1];
  const take = Math.min(k, cols);
  const outer = elementCount(row.dims.slice(0, -1));
  const data = row.data as Float32Array;
  const values = new Float32Array(outer * take);
  const indices = new BigInt64Array(outer * take);
  for (let o = 0; o < outer; o++) {
    const base = o * cols;
    topIndices(data.subarray(base, base + cols), take).forEach((i, n) => { values[o * take + n] = data[base + i]; indices[o * take + n] = BigInt(i); });
  }
  const dims = [...row.dims.slice(0, -1), take];
  return { values: new ort.Tensor('float32', values, dims), indices: new ort.Tensor('int64', indices, dims) };
}

/** The first `length` entries of `tensor` along `axis` (a copy; used to roll a KV cache back). */
export function truncateAxis(tensor: ort.Tensor, axis: number, length: number): ort.Tensor {
  const old = tensor.dims[axis];
  if (length === old) return tensor;
  if (length > old) throw new ExecError('INTERNAL', `cannot truncate axis ${axis} of length ${old} to ${length}`);
  return sliceAxis(tensor, axis, 0, length);
}

/** Entries [from, to) of `tensor` along `axis`, as a new tensor (a copy). */
function sliceAxis(tensor: ort.Tensor, axis: number, from: number, to: number): ort.Tensor {
  const ctor = ARRAYS[tensor.type];
  if (!ctor) throw new ExecError('INTERNAL', `cannot slice a ${tensor.type} tensor`);
  const dims = tensor.dims.slice();
  const old = dims[axis];
  dims[axis] = to - from;
  const inner = elementCount(dims.slice(axis + 1));
  const outer = elementCount(dims.slice(0, axis));
  const src = tensor.data as unknown as { subarray(a: number, b: number): ArrayLike<number | bigint> };
  const out = new ctor(elementCount(dims)) as unknown as { set(a: ArrayLike<number | bigint>, offset: number): void };
  const block = (to - from) * inner;
  for (let o = 0; o < outer; o++) out.set(src.subarray((o * old + from) * inner, (o * old + from) * inner + block), o * block);
  return new ort.Tensor(tensor.type as 'float32', out as unknown as Float32Array, dims);
}
