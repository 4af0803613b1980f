/**
 * The one converter between a signed voucher (contracts/eip712.ts SignedVoucher: the canonical type) and its
 * exec-wire form (WireVoucher: the cumulative amount as decimal text, since a uint256 fits no protobuf
 * integer, and the signature as raw bytes). The gateway's payer converts to the wire here; the supplier's
 * payment gate converts back here, refusing a malformed voucher.
 */
import { getAddress, getBytes } from 'ethers';
import type { SignedVoucher } from '../../contracts/eip712.js';
import type { WireVoucher } from './codec.js';
import { ExecError } from './errors.js';

/** A signed voucher as it travels in Open/Step. */
export function voucherToWire(v: SignedVoucher): WireVoucher {
  return { payer: v.payer, payee: v.payee, cumulativeAmount: v.cumulativeAmount.toString(), deadline: v.deadline, signature: getBytes(v.signature) };
}

/**
 * A voucher from the wire as a SignedVoucher: addresses checksummed, the amount parsed (at most 78 digits:
 * a uint256), the signature as 0x hex. BAD_REQUEST when an address or the amount is malformed. The signature
 * itself is not checked here (see contracts/eip712.ts verifyVoucher).
 */
export function voucherFromWire(w: WireVoucher): SignedVoucher {
  let payer: string;
  let payee: string;
  try {
    payer = getAddress(w.payer);
    payee = getAddress(w.payee);
  } catch (err) {
    throw new ExecError('BAD_REQUEST', 'the voucher names a malformed payer or payee address', { cause: err });
  }
  if (!/^\d{1,78}$/.test(w.cumulativeAmount)) throw new ExecError('BAD_REQUEST', 'the voucher\'s cumulative amount is not a whole number');
  return { payer, payee, cumulativeAmount: BigInt(w.cumulativeAmount), deadline: w.deadline, signature: `0x${Buffer.from(w.signature).toString('hex')}` };
}
