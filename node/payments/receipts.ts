/**
 * The supplier's signed receipt of a step (StepReply.receipt): DisputeManager's EIP-712 Receipt
 * {supplier, fragmentCid, inputHash, outputHash, sessionId, step, issuedAt}, so a verifier that re-runs the
 * step and gets another output can dispute it on chain.
 *
 * Hashes (sha256, 32 bytes): over the step's tensors in the order they travelled (inputs: replay chunks
 * then the step's own; outputs: replay outputs then the step's), each tensor as
 * utf8(name) 0x00 · dtype (u32 LE) · rank (u32 LE) · each dim (u64 LE) · byte length (u64 LE) · raw bytes.
 * fragmentCid: one fragment: its CID's sha256 digest (cidToBytes32); a span of several: keccak256 of their
 * digests concatenated. sessionId: keccak256(utf8(session id)).
 */
import { createHash } from 'node:crypto';
import { concat, getBytes, keccak256, toUtf8Bytes, type Wallet } from 'ethers';
import { cidToBytes32, signReceipt, type Receipt } from '../../contracts/eip712.js';
import type { WireTensor } from '../../proto/wire.js';
import { SignedReceiptType } from '../../net/exec/codec.js';

/** sha256 over tensors as described in the module doc, 0x hex. */
export function tensorsDigest(tensors: Iterable<WireTensor>): string {
  const h = createHash('sha256');
  const head = Buffer.alloc(8);
  for (const t of tensors) {
    h.update(Buffer.from(t.name, 'utf8'));
    h.update(Buffer.of(0));
    head.writeUInt32LE(t.dtype >>> 0, 0);
    head.writeUInt32LE(t.dims.length, 4);
    h.update(head);
    for (const d of t.dims) { head.writeBigUInt64LE(BigInt(d), 0); h.update(head); }
    head.writeBigUInt64LE(BigInt(t.data.byteLength), 0);
    h.update(head);
    h.update(t.data);
  }
  return `0x${h.digest('hex')}`;
}

/** The bytes32 naming a span of fragments. */
export function spanDigest(cids: readonly string[]): string {
  if (cids.length === 1) return cidToBytes32(cids[0]);
  return keccak256(concat(cids.map((c) => cidToBytes32(c))));
}

export interface ReceiptInput {
  cids: readonly string[];
  sessionId: string;
  step: bigint;
  inputs: Iterable<WireTensor>;
  outputs: Iterable<WireTensor>;
}

/** Signs receipts as the supplier's wallet for one DisputeManager. */
export class ReceiptSigner {
  constructor(private readonly wallet: Wallet, private readonly disputeManager: string, private readonly chainId: number, private readonly nowSeconds: () => number = () => Math.floor(Date.now() / 1000)) {}

  /** The receipt and its signature, encoded as a SignedReceipt message. */
  async sign(input: ReceiptInput): Promise<{ receipt: Receipt; signature: string; encoded: Uint8Array }> {
    const receipt: Receipt = {
      supplier: this.wallet.address,
      fragmentCid: spanDigest(input.cids),
      inputHash: tensorsDigest(input.inputs),
      outputHash: tensorsDigest(input.outputs),
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

/** Decodes StepReply.receipt back into the Receipt and its signature (0x hex). */
export function decodeSignedReceipt(bytes: Uint8Array): { receipt: Receipt; signature: string } {
  const m = SignedReceiptType.decode(bytes);
  const hex = (b: Uint8Array): string => `0x${Buffer.from(b).toString('hex')}`;
  return {
    receipt: {
      supplier: m.supplier, fragmentCid: hex(m.fragmentCid), inputHash: hex(m.inputHash), outputHash: hex(m.outputHash),
      sessionId: hex(m.sessionId), step: BigInt(m.step.toString()), issuedAt: BigInt(m.issuedAt.toString()),
    },
    signature: hex(m.signature),
  };
}
