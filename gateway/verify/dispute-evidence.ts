/**
 * The evidence of a dispute (issue 21), built from a condemning verdict: the cheater's latest signed receipt
 * of the checked link, the session's input stream and the supplier's digest stream that hash to that receipt
 * (policy/receipt-commitment.ts), the checker's re-run digests, and what to re-run (context). DisputeManager's
 * fileDispute checks both hashes on chain; the arbiter (arbiter.ts) re-runs from this alone. Also its JSON
 * form, which the dispute filer persists before filing so a gateway restart loses nothing.
 */
import { createHash } from 'node:crypto';
import { hexlify, getBytes } from 'ethers';
import type { Receipt } from '../../contracts/eip712.js';
import { decodeSignedReceipt } from '../../net/exec/receipt-wire.js';
import { ortToWire } from '../../net/exec/tensors.js';
import type { TensorMap } from '../../net/exec/client.js';
import { ByteCollector, committedDigests, writeDigestStream, writeTensorStream } from '../../policy/receipt-commitment.js';
import { firstMismatch, type DigestTolerance } from '../../policy/verification.js';
import { GridpipeError } from '../../errors/base.js';
import type { CheckedLink, Verdict, VerdictEvidence } from './verifier.js';
import { comparableDigest } from './rerun.js';

/** What the arbiter re-runs (DisputeManager's DisputeEvidence.context, JSON). Not hash-bound: see arbiter.ts. */
export interface DisputeContext {
  manifestCid: string;
  start: number;
  end: number;
  maxLength: number;
  /**
   * Each chunk's KV position and how many input tensors and output digests of the streams it takes; `tokens`:
   * the positions it adds (what a host that charges prices the arbiter's re-run by; absent in older evidence).
   */
  chunks: { position: number; tensors: number; outputs: number; tokens?: number }[];
  want: string[];
  reduction: { lastRowOnly?: string[]; topK?: number; sampled?: boolean };
}

/** A dispute's evidence, ready for DisputeManager.fileDispute. */
export interface DisputeEvidence {
  /** The accused libp2p peer (the receipt names its chain address). */
  peerId: string;
  receipt: Receipt;
  signature: string;
  inputs: Uint8Array;
  revealedDigests: Uint8Array;
  rerunDigests: Uint8Array;
  context: DisputeContext;
}

/** A verdict whose evidence cannot be filed (no receipt, a receipt that does not cover the mismatch...). */
export class UnfileableEvidenceError extends GridpipeError<'UNFILEABLE_EVIDENCE'> {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('UNFILEABLE_EVIDENCE', message, options);
  }
}

/** The supplier's signed receipt, or why it cannot be filed. */
function receiptOf(bytes: Uint8Array): { receipt: Receipt; signature: string } {
  try {
    return decodeSignedReceipt(bytes);
  } catch (err) {
    throw new UnfileableEvidenceError(`the supplier's receipt cannot be filed: ${(err as Error).message}`, { cause: err });
  }
}

const sha256 = (b: Uint8Array): string => `0x${createHash('sha256').update(b).digest('hex')}`;

function tensorStream(maps: readonly TensorMap[]): Uint8Array {
  const out = new ByteCollector();
  for (const m of maps) writeTensorStream(out, Object.entries(m).map(([name, t]) => ortToWire(name, t)));
  return out.bytes();
}

function digestStream(maps: readonly TensorMap[]): Uint8Array {
  const out = new ByteCollector();
  for (const m of maps) writeDigestStream(out, committedDigests(Object.entries(m).map(([name, t]) => ortToWire(name, t))));
  return out.bytes();
}

/**
 * The evidence against the checked supplier of `e`: its latest receipt that covers the first mismatching chunk
 * (a receipt signs the session from its first step to the step that returned it). UnfileableEvidenceError when
 * the supplier signed no receipt, none covers a mismatch, or the streams do not hash to what it signed.
 */
export function buildEvidence(e: VerdictEvidence, tolerance?: DigestTolerance): DisputeEvidence {
  const { link } = e;
  let covered = 0;
  let signed: { bytes: Uint8Array; chunks: number } | undefined;
  for (const call of link.calls) {
    covered += call.chunks;
    if (call.receipt) signed = { bytes: call.receipt, chunks: covered };
  }
  if (!signed) throw new UnfileableEvidenceError('the supplier signed no receipt for this session (a free supplier, or a chain without a DisputeManager)');
  const n = signed.chunks;
  const sampled = !!link.reduction.sample;
  const mine = link.chunks.slice(0, n).map((c) => comparableDigest(c.outputs, sampled));
  const checker = e.checker.slice(0, n);
  const referee = e.referee.slice(0, n);
  if (!firstMismatch(mine, checker.map((o) => comparableDigest(o, sampled)), tolerance) || !firstMismatch(mine, referee.map((o) => comparableDigest(o, sampled)), tolerance)) {
    throw new UnfileableEvidenceError(`the supplier's last receipt covers ${n} chunks, which agree with the re-runs: the mismatch came after it`);
  }
  const { receipt, signature } = receiptOf(signed.bytes);
  const chunks = link.chunks.slice(0, n);
  const inputs = tensorStream(chunks.map((c) => c.inputs));
  const revealedDigests = digestStream(chunks.map((c) => c.outputs));
  if (sha256(inputs) !== receipt.inputHash) throw new UnfileableEvidenceError('the session\'s inputs do not hash to the receipt\'s inputHash');
  if (sha256(revealedDigests) !== receipt.outputHash) throw new UnfileableEvidenceError('the outputs received do not hash to the receipt\'s outputHash');
  return {
    peerId: link.supplier.peerId, receipt, signature, inputs, revealedDigests, rerunDigests: digestStream(checker),
    context: {
      manifestCid: link.model.manifestCid, start: link.start, end: link.end, maxLength: link.maxLength,
      chunks: chunks.map((c) => ({
        position: c.position, tensors: Object.keys(c.inputs).length, outputs: committedDigests(Object.entries(c.outputs).map(([name, t]) => ortToWire(name, t))).length,
        ...(c.tokens > 0 ? { tokens: c.tokens } : {}),
      })),
      want: link.want,
      reduction: { ...(link.reduction.lastRowOnly ? { lastRowOnly: link.reduction.lastRowOnly } : {}), ...(link.reduction.topK ? { topK: link.reduction.topK } : {}), ...(sampled ? { sampled } : {}) },
    },
  };
}

/**
 * The link a condemned checker ran (issue 21): the checked link's chunks with the checker's outputs, in the one
 * call the verifier made (its receipt signs them all), asked as the verifier asked it: a sampled reduction as
 * top-1 (rerun.ts). UnfileableEvidenceError when the evidence does not name the checker's host.
 */
export function checkerLink(e: VerdictEvidence): CheckedLink {
  const { link } = e;
  if (!e.checkerHost) throw new UnfileableEvidenceError('the verdict does not name the checker\'s host');
  const { sample, ...reduction } = link.reduction;
  return {
    ...link, supplier: e.checkerHost,
    chunks: link.chunks.map((c, i) => ({ ...c, outputs: e.checker[i] })),
    calls: [{ chunks: link.chunks.length, ...(e.checkerReceipt ? { receipt: e.checkerReceipt } : {}) }],
    reduction: { ...reduction, ...(sample ? { topK: 1 } : {}) },
  };
}

/**
 * The evidence against whoever `verdict` condemned: the supplier of the checked link (buildEvidence), or the
 * checker that disagreed with the supplier and the referee, with the receipt it signed for its own re-run and
 * the referee's outputs as the re-run. UnfileableEvidenceError for any other verdict, or one without a receipt.
 */
export function evidenceOfVerdict(verdict: Verdict, e: VerdictEvidence, tolerance?: DigestTolerance): DisputeEvidence {
  if (verdict.result === 'supplier-condemned') return buildEvidence(e, tolerance);
  if (verdict.result !== 'checker-condemned') throw new UnfileableEvidenceError(`a "${verdict.result}" verdict condemns no one`);
  return buildEvidence({ link: checkerLink(e), checker: e.referee, referee: e.link.chunks.map((c) => c.outputs) }, tolerance);
}

/** Evidence as JSON (bytes as 0x hex, bigints as decimal text). */
export interface DisputeEvidenceJson {
  peerId: string;
  receipt: Record<keyof Receipt, string>;
  signature: string;
  inputs: string;
  revealedDigests: string;
  rerunDigests: string;
  context: DisputeContext;
}

export function evidenceToJson(e: DisputeEvidence): DisputeEvidenceJson {
  const r = e.receipt;
  return {
    peerId: e.peerId,
    receipt: { supplier: r.supplier, fragmentCid: r.fragmentCid, inputHash: r.inputHash, outputHash: r.outputHash, sessionId: r.sessionId, step: r.step.toString(), issuedAt: r.issuedAt.toString() },
    signature: e.signature, inputs: hexlify(e.inputs), revealedDigests: hexlify(e.revealedDigests), rerunDigests: hexlify(e.rerunDigests), context: e.context,
  };
}

export function evidenceFromJson(j: DisputeEvidenceJson): DisputeEvidence {
  const r = j.receipt;
  return {
    peerId: j.peerId,
    receipt: { supplier: r.supplier, fragmentCid: r.fragmentCid, inputHash: r.inputHash, outputHash: r.outputHash, sessionId: r.sessionId, step: BigInt(r.step), issuedAt: BigInt(r.issuedAt) },
    signature: j.signature, inputs: getBytes(j.inputs), revealedDigests: getBytes(j.revealedDigests), rerunDigests: getBytes(j.rerunDigests), context: j.context,
  };
}
