/**
 * A paid call of a mixture-of-experts router or expert fragment (docs/moe.md) is priced per token sent to it
 * (scheduler/expert-payment.ts). These fragments are stateless, so no KV cache shows what ran, as it does for a
 * dense span: the rows of the tensors sent are the tokens. A call that declares fewer tokens than it sends would
 * pay for less work than it gets, so it is refused before it runs.
 */
import type { WireTensor } from '../../proto/wire.js';
import type { Manifest } from '../../fragments/manifest.js';
import { pricedPerToken } from '../../policy/pricing.js';
import { ExecError } from '../../net/exec/errors.js';

/** Rows of a step's inputs: the second-to-last dim of the largest, as the expert router counts tokens. */
export function rowsSent(inputs: readonly WireTensor[]): number {
  return Math.max(1, ...inputs.map((t) => (t.dims.length >= 2 ? t.dims[t.dims.length - 2] : 1)));
}

/** Throws BAD_REQUEST when a call of MoE fragments (every one of `indices`) declares other tokens than the rows it sends. */
export function checkExpertCallRows(manifest: Manifest, indices: readonly (number | undefined)[], chunkTokens: readonly number[], inputs: readonly WireTensor[]): void {
  if (!pricedPerToken(manifest) || indices.length === 0) return;
  if (!indices.every((j) => j !== undefined && manifest.fragments[j]?.moe)) return;
  const declared = chunkTokens.reduce((a, t) => a + t, 0);
  const rows = rowsSent(inputs);
  if (declared !== rows) throw new ExecError('BAD_REQUEST', `the step declared ${declared} tokens (chunk_tokens) but sends ${rows} to a mixture-of-experts fragment`);
}
