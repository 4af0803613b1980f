/**
 * The signed receipt as it travels (StepReply.receipt, SignedReceipt in proto/exec.proto) decoded back into
 * DisputeManager's EIP-712 Receipt and its signature. One decoder for every reader: the payer checking a reply,
 * the gateway filing a dispute, tests; the receipt comes from a peer, so every field's size is checked.
 */
import { getAddress, hexlify, isAddress } from 'ethers';
import { GridpipeError } from '../../errors/base.js';
import type { Receipt } from '../../contracts/eip712.js';
import { SignedReceiptType } from './codec.js';

/** A receipt that does not decode, or whose fields have the wrong sizes. */
export class MalformedReceiptError extends GridpipeError<'MALFORMED_RECEIPT'> {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MALFORMED_RECEIPT', message, options);
  }
}

/**
 * Decodes StepReply.receipt into the Receipt (supplier checksummed, hashes as 0x hex) and its signature;
 * MalformedReceiptError when the bytes do not decode, a hash is not 32 bytes, the signature not 65 or the
 * supplier not an address.
 */
export function decodeSignedReceipt(bytes: Uint8Array): { receipt: Receipt; signature: string } {
  let m: ReturnType<typeof SignedReceiptType.decode>;
  try {
    m = SignedReceiptType.decode(bytes);
  } catch (err) {
    throw new MalformedReceiptError(`the receipt does not decode: ${(err as Error).message}`, { cause: err });
  }
  for (const [name, b] of [['fragment_cid', m.fragmentCid], ['input_hash', m.inputHash], ['output_hash', m.outputHash], ['session_id', m.sessionId]] as const) {
    if (b.byteLength !== 32) throw new MalformedReceiptError(`the receipt's ${name} is ${b.byteLength} bytes, not 32`);
  }
  if (m.signature.byteLength !== 65) throw new MalformedReceiptError(`the receipt's signature is ${m.signature.byteLength} bytes, not 65`);
  if (!isAddress(m.supplier)) throw new MalformedReceiptError('the receipt\'s supplier is not an address');
  return {
    receipt: {
      supplier: getAddress(m.supplier), fragmentCid: hexlify(m.fragmentCid), inputHash: hexlify(m.inputHash), outputHash: hexlify(m.outputHash),
      sessionId: hexlify(m.sessionId), step: BigInt(m.step.toString()), issuedAt: BigInt(m.issuedAt.toString()),
    },
    signature: hexlify(m.signature),
  };
}
