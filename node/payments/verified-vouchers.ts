/**
 * Vouchers whose signature has been checked, remembered so that the same voucher seen again (a retried
 * step, steps of two sessions racing) is not recovered again: signature recovery is the dearest part of
 * the payment check. Bounded (least recently used out); a voucher is identified by every signed field
 * and the signature itself, so no other voucher can pass for one remembered.
 */
import type { SignedVoucher } from '../../contracts/eip712.js';

/** The identity of a voucher: all it says, and its signature. */
export function voucherKey(v: SignedVoucher): string {
  return `${v.payer}|${v.payee}|${v.cumulativeAmount}|${v.deadline}|${v.signature.toLowerCase()}`;
}

/** Whether two vouchers are the same one, field for field (e.g. a voucher and the stored best). */
export function sameVoucher(a: SignedVoucher, b: SignedVoucher | undefined): boolean {
  return b !== undefined && a.payer === b.payer && a.payee === b.payee && a.cumulativeAmount === b.cumulativeAmount
    && a.deadline === b.deadline && a.signature.toLowerCase() === b.signature.toLowerCase();
}

export class VerifiedVouchers {
  private readonly keys = new Set<string>();

  constructor(private readonly capacity = 4096) {}

  has(v: SignedVoucher): boolean {
    const key = voucherKey(v);
    if (!this.keys.has(key)) return false;
    this.keys.delete(key); // refresh: most recently used last
    this.keys.add(key);
    return true;
  }

  add(v: SignedVoucher): void {
    const key = voucherKey(v);
    this.keys.delete(key);
    this.keys.add(key);
    if (this.keys.size > this.capacity) this.keys.delete(this.keys.values().next().value!);
  }
}
