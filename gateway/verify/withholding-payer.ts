/**
 * Payments withheld from condemned suppliers (issue 21): a StepPayer that refuses to sign or re-send any
 * voucher to a payee the verifier condemned, whatever payer it wraps, so the gateway pays a cheater nothing
 * more from the verdict on. What the supplier holds already (its cumulative vouchers up to the verdict, at
 * most one credit window ahead of the work) it can still redeem: the slash it faces (DisputeManager
 * slashAmount, half of it to the gateway as challenger) is what pays that back. docs/verification.md.
 */
import { GridpipeError } from '../../errors/base.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import type { Payee, StepPayer } from '../../scheduler/payment.js';

/** A voucher refused because its payee was condemned by the verifier. */
export class PaymentWithheldError extends GridpipeError<'PAYMENT_WITHHELD'> {
  constructor(message: string) {
    super('PAYMENT_WITHHELD', message);
  }
}

/** The set of payees (staking addresses, lower case) the gateway pays no more. */
export class Withholding {
  private readonly payees = new Set<string>();

  /** Stops every payment to `stakingAddress` (an EVM address; anything else is ignored). */
  withhold(stakingAddress: string): void {
    if (/^0x[0-9a-fA-F]{40}$/.test(stakingAddress)) this.payees.add(stakingAddress.toLowerCase());
  }

  isWithheld(stakingAddress: string): boolean {
    return this.payees.has(stakingAddress.toLowerCase());
  }

  list(): string[] {
    return [...this.payees];
  }

  /** `payer`, refusing the payees withheld (now or later). */
  wrap(payer: StepPayer): StepPayer;
  wrap(payer: StepPayer | undefined): StepPayer | undefined;
  wrap(payer: StepPayer | undefined): StepPayer | undefined {
    if (!payer) return undefined;
    return {
      voucherFor: (payee: Payee, charge: bigint, detail?: { replay: bigint }): Promise<WireVoucher> => {
        if (this.isWithheld(payee.stakingAddress)) {
          return Promise.reject(new PaymentWithheldError(`payments to ${payee.stakingAddress} (peer ${payee.peerId}) are withheld: the verifier found its outputs wrong and a dispute is filed`));
        }
        return payer.voucherFor(payee, charge, detail);
      },
    };
  }
}
