/**
 * What the payer may still sign for, from PaymentEscrow: its balance, a pending withdrawal, and what each
 * payee has redeemed. Read on chain and cached for a while. A stale cache is safe: a redemption lowers the
 * balance and raises `redeemed` by the same amount, so balance − Σ(signed − redeemed) does not move; only
 * deposits (more room) and withdrawals (the payer's own doing) change it.
 */
import type { PaymentEscrowContract } from '../../contracts/bindings.js';

export interface EscrowState {
  balance: bigint;
  /** Amount of a requested withdrawal (0 when none). */
  withdrawing: bigint;
  /** Redeemed so far, by payee (checksummed). */
  redeemed: Map<string, bigint>;
  /** Date.now() when read. */
  at: number;
}

export class EscrowView {
  private state?: EscrowState;

  constructor(private readonly escrow: Pick<PaymentEscrowContract, 'balanceOf' | 'redeemed' | 'withdrawalRequest'>, private readonly payer: string, private readonly ttlMs = 15_000) {}

  /** The state, re-read when older than the TTL, when `fresh`, or when a payee is not in it yet. */
  async get(payees: readonly string[], fresh = false): Promise<EscrowState> {
    const s = this.state;
    if (!fresh && s && Date.now() - s.at < this.ttlMs && payees.every((p) => s.redeemed.has(p))) return s;
    const [balance, request, redeemed] = await Promise.all([
      this.escrow.balanceOf(this.payer),
      this.escrow.withdrawalRequest(this.payer),
      Promise.all(payees.map(async (p) => [p, await this.escrow.redeemed(this.payer, p)] as const)),
    ]);
    this.state = { balance, withdrawing: request.amount, redeemed: new Map(redeemed), at: Date.now() };
    return this.state;
  }
}
