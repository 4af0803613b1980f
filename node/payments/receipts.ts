/**
 * The supplier's signed receipt (StepReply.receipt): DisputeManager's EIP-712 Receipt
 * {supplier, fragmentCid, inputHash, outputHash, sessionId, step, issuedAt}, so a verifier that re-runs the
 * steps and gets another output can dispute it on chain. Signed once per voucher, not per step (issue 15):
 * on a session's first step and on each step that brings a new voucher, over the session's running hashes
 * (RunningDigest): `step` is the last step covered, the hashes cover every step of the session up to it.
 * DisputeManager only checks the signature and that the claimed output hash differs; the arbitrator re-runs
 * the session's steps, so a receipt over many steps proves as much as one per step.
 *
 * Hashes (sha256, 32 bytes): over the session's tensors in the order they travelled (per step, inputs:
 * replay chunks then the step's own; outputs: replay outputs then the step's). inputHash takes each tensor as
 * utf8(name) 0x00 · dtype (u32 LE) · rank (u32 LE) · each dim (u64 LE) · byte length (u64 LE) · raw bytes, so it
 * also fixes the session's state before every step it covers (a referee replays from step 1). outputHash
 * (issue 21) commits to each output's compact, tolerance-aware digest (policy/verification.ts: per position the
 * top-8 entries by magnitude; integer outputs whole), not its raw bytes: evidence is the revealed digests
 * (64 bytes a position), which hash to the receipt and are compared with a re-run within a tolerance. Each
 * digest as utf8(name) 0x00 · kind (u8: 0 top, 1 exact) · rows (u32 LE) · k (u32 LE) · indices (i32 LE, or
 * f64 LE for exact) · values (f32 LE).
 * The streams' encoders live in policy/receipt-commitment.ts (the dispute filer and the arbiter decode them).
 * fragmentCid: one fragment: its CID's sha256 digest (cidToBytes32); a span of several: keccak256 of their
 * digests concatenated. sessionId: keccak256(utf8(session id)).
 */
import { createHash } from 'node:crypto';
import { getBytes, keccak256, toUtf8Bytes, type Wallet } from 'ethers';
import { spanDigest, signReceipt, type Receipt } from '../../contracts/eip712.js';
import type { WireTensor } from '../../proto/wire.js';
import { SignedReceiptType } from '../../net/exec/codec.js';
import type { TensorDigest } from '../../policy/verification.js';
import { committedDigests, writeDigestStream, writeTensorStream } from '../../policy/receipt-commitment.js';

/** sha256 over tensors as described in the module doc, 0x hex. */
export function tensorsDigest(tensors: Iterable<WireTensor>): string {
  const h = createHash('sha256');
  writeTensorStream(h, tensors);
  return `0x${h.digest('hex')}`;
}

/** The output digest of wire tensors (float32/float64 and integer dtypes; others are left out). */
export function wireOutputDigest(tensors: Iterable<WireTensor>): TensorDigest[] {
  return committedDigests(tensors);
}

/** sha256 commitment to outputs' digests (the receipt's outputHash for one step), 0x hex. */
export function outputsCommitment(tensors: Iterable<WireTensor>): string {
  const h = createHash('sha256');
  writeDigestStream(h, wireOutputDigest(tensors));
  return `0x${h.digest('hex')}`;
}

/**
 * A session's running hashes: every step's inputs and outputs are fed in as they pass (cheap: one sha256
 * update per step), and a receipt signs the hashes of everything so far. A receipt of step n thus covers
 * steps 1..n of the session: its inputHash is tensorsDigest over all their inputs in order (for one step,
 * exactly that step's digest); its outputHash is outputsCommitment over all their outputs in order.
 */
export class RunningDigest {
  private readonly inputs = createHash('sha256');
  private readonly outputs = createHash('sha256');
  /** Steps fed in so far. */
  steps = 0;

  add(inputs: Iterable<WireTensor>, outputs: Iterable<WireTensor>): void {
    writeTensorStream(this.inputs, inputs);
    writeDigestStream(this.outputs, wireOutputDigest(outputs));
    this.steps++;
  }

  /** The hashes of everything added so far (0x hex); adding goes on after. */
  current(): { inputHash: string; outputHash: string } {
    return { inputHash: `0x${this.inputs.copy().digest('hex')}`, outputHash: `0x${this.outputs.copy().digest('hex')}` };
  }
}

export interface ReceiptInput {
  cids: readonly string[];
  sessionId: string;
  step: bigint;
  /** The step's tensors, or the running hashes of a session's steps so far (RunningDigest). */
  inputs: Iterable<WireTensor> | { inputHash: string; outputHash: string };
  outputs?: Iterable<WireTensor>;
}

/** Signs receipts as the supplier's wallet for one DisputeManager. */
export class ReceiptSigner {
  constructor(private readonly wallet: Wallet, private readonly disputeManager: string, private readonly chainId: number, private readonly nowSeconds: () => number = () => Math.floor(Date.now() / 1000)) {}

  /** The receipt and its signature, encoded as a SignedReceipt message. */
  async sign(input: ReceiptInput): Promise<{ receipt: Receipt; signature: string; encoded: Uint8Array }> {
    const receipt: Receipt = {
      supplier: this.wallet.address,
      fragmentCid: spanDigest(input.cids),
      ...('inputHash' in input.inputs ? input.inputs : { inputHash: tensorsDigest(input.inputs), outputHash: outputsCommitment(input.outputs ?? []) }),
      sessionId: keccak256(toUtf8Bytes(input.sessionId)),
      step: input.step,
      issuedAt: BigInt(this.nowSeconds()),
    };
    const signature = await signReceipt(this.wallet, this.disputeManager, this.chainId, receipt);
    const encoded = SignedReceiptType.encode(SignedReceiptType.fromObject({
      supplier: receipt.supplier,
      fragmentCid: getBytes(receipt.fragmentCid),
      inputHash: getBytes(receipt.inputHash),
      outputHash: getBytes(receipt.outputHash),
      sessionId: getBytes(receipt.sessionId),
      step: receipt.step.toString(),
      issuedAt: receipt.issuedAt.toString(),
      signature: getBytes(signature),
    })).finish();
    return { receipt, signature, encoded };
  }
}

/** Readers of StepReply.receipt decode it with net/exec's one decoder (kept importable from here). */
export { MalformedReceiptError, decodeSignedReceipt } from '../../net/exec/receipt-wire.js';
