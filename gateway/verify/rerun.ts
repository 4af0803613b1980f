/**
 * One re-run of a link's chunks on another host of the same span (issue 21), shared by the verifier (which
 * checks a sampled link) and the arbiter (which re-runs a dispute's evidence): every chunk in one call, the
 * earlier ones as the replay a fresh host is sent, prefill-style. The server draws sampled tokens at the
 * step's sampler position, which a replayed chunk does not carry, so a sampled reduction is asked as top-1
 * instead; `comparableDigest` leaves both out of a comparison.
 */
import type { ExecClient, TensorMap } from '../../net/exec/client.js';
import type { WireSampling } from '../../net/exec/codec.js';
import type { OpenModel } from '../../scheduler/client.js';
import type { HostedSpan } from '../../scheduler/discovery.js';
import { dialTargetOf } from '../../scheduler/dial-target.js';
import { isPaidSpan, type StepPayer } from '../../scheduler/payment.js';
import { parseBaseUnits, stepCharge } from '../../policy/pricing.js';
import { outputDigest, type StepDigest } from '../../policy/verification.js';

/** What to re-run: a span of a model, its chunks from position 0, the outputs and reductions asked for. */
export interface RerunRequest {
  model: Pick<OpenModel, 'manifest' | 'manifestCid'>;
  start: number;
  end: number;
  maxLength: number;
  /** Each chunk's inputs from position 0; `tokens`: the positions it adds (what a paid host charges by). */
  chunks: readonly { position: number; inputs: TensorMap; tokens?: number }[];
  want: readonly string[];
  reduction: { lastRowOnly?: string[]; topK?: number; sample?: WireSampling };
  timeoutMs: number;
  /** Pays a host that charges, with vouchers priced like a session's (stepCharge); without it only free hosts answer. */
  payer?: StepPayer;
}

/** Runs `req`'s chunks on `host` in one call; the outputs of each chunk, in order. */
export async function rerunOnHost(exec: ExecClient, node: Parameters<ExecClient['openSession']>[0], host: HostedSpan, req: RerunRequest): Promise<TensorMap[]> {
  return (await rerunCall(exec, node, host, req)).outputs;
}

/** What a re-run returned: each chunk's outputs, in order, and the host's signed receipt of the call, if it signs them. */
export interface RerunResult {
  outputs: TensorMap[];
  receipt?: Uint8Array;
}

/** Runs `req`'s chunks on `host` in one call, keeping the receipt it signed (a checker's own evidence against it). */
export async function rerunCall(exec: ExecClient, node: Parameters<ExecClient['openSession']>[0], host: HostedSpan, req: RerunRequest): Promise<RerunResult> {
  const manifest = req.model.manifest;
  const payer = req.payer && isPaidSpan(host) ? req.payer : undefined;
  const session = await exec.openSession(node, dialTargetOf(host), {
    fragments: Array.from({ length: req.end - req.start }, (_, n) => ({ cid: manifest.fragments[req.start + n].cid, manifestCid: req.model.manifestCid, index: req.start + n })),
    maxLength: req.maxLength,
    ...(payer ? { voucher: await payer.voucherFor(host, 0n) } : {}),
  });
  try {
    const last = req.chunks[req.chunks.length - 1];
    const { sample, ...reduction } = req.reduction;
    const payment = payer ? await checkPayment(payer, host, req) : {};
    const res = await session.step(last.inputs, {
      ...payment,
      position: last.position, replay: req.chunks.slice(0, -1).map((c) => ({ position: c.position, inputs: c.inputs })),
      want: [...req.want], ...reduction, ...(sample ? { topK: 1 } : {}), timeoutMs: req.timeoutMs,
    });
    return { outputs: [...res.replayOutputs.map((r) => r.outputs), res.outputs], ...(res.receipt ? { receipt: res.receipt } : {}) };
  } finally {
    await session.close().catch(() => undefined);
  }
}

/** The voucher for re-running every chunk of `req` on paid `host`, priced as a session's step (policy/pricing.ts). */
async function checkPayment(payer: StepPayer, host: HostedSpan, req: RerunRequest): Promise<{ voucher: Awaited<ReturnType<StepPayer['voucherFor']>>; chunkTokens: number[] }> {
  const chunkTokens = req.chunks.map((c) => c.tokens ?? 0);
  if (chunkTokens.some((t) => !(t > 0))) throw new RangeError('a paid re-run needs the positions each chunk adds (tokens)');
  const charge = stepCharge(req.model.manifest, parseBaseUnits(host.pricePerGflop, 'the host\'s price per GFLOP'), { start: req.start, end: req.end, chunkTokens });
  return { voucher: await payer.voucherFor(host, charge), chunkTokens };
}

/**
 * A chunk's outputs as compared. Sampled tokens are left out (a replay draws them at another sampler position),
 * and so is the re-run's stand-in for them (`sampled`: the original drew tokens, the re-run returned top-1).
 */
export function comparableDigest(outputs: TensorMap, sampled: boolean): StepDigest {
  const kept: TensorMap = {};
  for (const [name, t] of Object.entries(outputs)) {
    if (isIncomparable(name, sampled)) continue;
    kept[name] = t;
  }
  return outputDigest(kept);
}

/** Whether an output of this name is left out of a comparison (see comparableDigest). */
export function isIncomparable(name: string, sampled: boolean): boolean {
  return name.endsWith('.sampled') || (sampled && (name.endsWith('.top_values') || name.endsWith('.top_indices')));
}
