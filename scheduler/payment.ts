/**
 * Paying suppliers from a pipeline session: for every step of every link (replays after a failover
 * included) the session prices the step (policy/pricing.ts, the same function the supplier charges
 * with) and asks its StepPayer for the voucher to attach. gateway/payer implements it with signed
 * cumulative vouchers and a durable ledger.
 */
import type { WireVoucher } from '../net/exec/codec.js';
import type { HostedSpan } from './discovery.js';
import { isEvmAddress } from '../contracts/address.js';
import { GridpipeError } from '../errors/base.js';

export type { WireVoucher };

/** The supplier being paid: who it is, where payments go, what it asks. */
export type Payee = Pick<HostedSpan, 'peerId' | 'stakingAddress' | 'pricePerGflop'>;

export interface StepPayer {
  /**
   * The voucher that pays `charge` (base units) more to `payee`: cumulative, so it covers everything
   * signed to that payee before plus this step. Throws when it will not pay (escrow exhausted...): the
   * step then fails without trying other suppliers. A charge of 0 gives the payer's current voucher to that
   * payee (a signed amount-0 one at first contact): what a session is opened with on a paid supplier.
   * `detail.replay`: the part of `charge` that re-runs earlier steps on a replacement after a failover.
   */
  voucherFor(payee: Payee, charge: bigint, detail?: { replay: bigint }): Promise<WireVoucher>;
}


/** Raised when the route (or an expert call) reaches a supplier that charges and the session has no payer. */
export class PaymentNeededError extends GridpipeError<'PAYMENT_NEEDED'> {
  constructor(readonly peerId: string) {
    super('PAYMENT_NEEDED', `supplier ${peerId} charges for its work and this session has no payer (give GridClient.session a payer)`);
    this.name = 'PaymentNeededError';
  }
}

/** Whether a span charges: it names a staking address to pay (a free supplier names none). */
export function isPaidSpan(span: Pick<HostedSpan, 'stakingAddress'>): boolean {
  return isEvmAddress(span.stakingAddress);
}
