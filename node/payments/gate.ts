/**
 * The supplier's check of a step's payment (before the step runs) and of a session's opening:
 * - a voucher is required; its payee must be this supplier's staking address, its deadline far enough
 *   ahead to redeem it, its EIP-712 signature the payer's for this chain and escrow. The signature is
 *   checked for every voucher the first time it is seen, whatever its amount (a voucher identical to the
 *   stored best or to one checked recently is not recovered again);
 * - vouchers are cumulative and only the highest counts: a lower or equal one than the best stored is
 *   superseded (not an error: steps of several sessions race), once its signature checked out;
 * - a new best must be covered by the payer's escrow balance (amount − already redeemed);
 * - credit (work delivered but not paid: charged − best voucher, this step included) is extended only to a
 *   payer whose escrow covers all it owes, and is bounded per payer (`creditLimit`), per remote peer over
 *   all payers and in total (credit.ts): UNPAID otherwise;
 * - a new best voucher is written durably (fsync, grouped with others arriving together) before the step
 *   runs, so work is only ever counted as paid once its voucher is on disk; a step re-sending the voucher
 *   already held (the gateway pays a credit window ahead) costs no recovery and no write: its charge is
 *   counted in memory against the credit limit;
 * - opening a session needs a valid voucher of a payer whose escrow is not empty (amount 0 will do).
 */
import type { Logger } from 'pino';
import { verifyVoucher, type SignedVoucher } from '../../contracts/eip712.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import { voucherFromWire } from '../../net/exec/voucher-wire.js';
import { ExecError } from '../../net/exec/errors.js';
import type { CachedBalances } from './balances.js';
import { CreditLimits } from './credit.js';
import type { PaymentMetrics } from './metrics.js';
import { sameVoucher, VerifiedVouchers } from './verified-vouchers.js';
import type { VoucherBook } from './voucher-book.js';

export interface PaymentGateInit {
  book: VoucherBook;
  balances: CachedBalances;
  /** This supplier's staking address (checksummed): the payee every voucher must name. */
  payee: string;
  escrowAddress: string;
  chainId: number;
  /** Unpaid work allowed per payer, base units. */
  creditLimit: bigint;
  /** Unpaid work allowed over all payers of one remote peer, base units (default: creditLimit). */
  creditPerPeer?: bigint;
  /** Unpaid work allowed over all payers, base units (default: 16 × creditLimit). */
  creditTotal?: bigint;
  /** A voucher must stay redeemable at least this long (seconds). */
  minDeadlineSeconds: number;
  metrics?: PaymentMetrics;
  logger?: Logger;
  /** Unix seconds now (tests). */
  nowSeconds?: () => number;
}

/** A step admitted for payment: settle it when the reply goes out, cancel it when the step failed. */
export interface AdmittedStep {
  payer: string;
  charge: bigint;
  /** The step brought a new best voucher (checked and made durable by this admission). */
  newVoucher: boolean;
}

function refuse(outcome: string, metrics: PaymentMetrics | undefined, message: string, code: 'PAYMENT_REQUIRED' | 'UNPAID' = 'PAYMENT_REQUIRED'): never {
  metrics?.vouchers.inc({ outcome });
  throw new ExecError(code, message);
}

export class PaymentGate {
  private readonly nowSeconds: () => number;
  private readonly verified = new VerifiedVouchers();
  readonly credit: CreditLimits;

  constructor(private readonly init: PaymentGateInit) {
    this.nowSeconds = init.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
    this.credit = new CreditLimits({ perPeer: init.creditPerPeer ?? init.creditLimit, total: init.creditTotal ?? init.creditLimit * 16n });
  }

  /**
   * Checks the voucher a session is opened with (`peer`: the remote libp2p peer): well formed, for this
   * supplier, far enough from its deadline, signed by its payer, whose escrow balance is not empty.
   */
  async admitOpen(wire: WireVoucher | undefined, peer: string): Promise<void> {
    const { metrics } = this.init;
    if (!wire || !wire.payer) refuse('missing', metrics, 'this supplier charges for its work: opening a session needs the payer\'s voucher (amount 0 will do)');
    const voucher = this.parse(wire);
    this.authenticate(voucher, this.init.book.get(voucher.payer).best);
    const { ok } = await this.init.balances.covers(voucher.payer, 1n);
    if (!ok) refuse('unfunded', metrics, `payer ${voucher.payer} has nothing in escrow: this supplier opens no session for it`);
    metrics?.vouchers.inc({ outcome: 'opened' });
    this.init.logger?.debug({ peer, payer: voucher.payer }, 'session voucher accepted');
  }

  /** Checks `wire` for a step worth `charge` sent by `peer` and reserves the charge on the payer's account. */
  async admit(wire: WireVoucher | undefined, charge: bigint, peer: string): Promise<AdmittedStep> {
    const { metrics } = this.init;
    if (!wire || !wire.payer) refuse('missing', metrics, 'this supplier charges for its work: the step needs a voucher');
    const voucher = this.parse(wire);

    return this.init.book.update(voucher.payer, async (account, save) => {
      this.authenticate(voucher, account.best);
      const best = account.best?.cumulativeAmount ?? 0n;
      let improved = false;
      if (voucher.cumulativeAmount > best) {
        const needed = voucher.cumulativeAmount - account.redeemed;
        const { ok, balance } = await this.init.balances.covers(voucher.payer, needed);
        if (!ok) refuse('unfunded', metrics, `the payer's escrow balance ${balance} does not cover the voucher (${needed} not yet redeemed)`);
        improved = true;
      }
      const paid = improved ? voucher.cumulativeAmount : best;
      const charged = account.charged + charge;
      const unpaid = charged - paid;
      let refusal: { outcome: string; message: string; code: 'PAYMENT_REQUIRED' | 'UNPAID' } | undefined;
      if (unpaid > this.init.creditLimit) {
        refusal = { outcome: 'over_credit', message: `payments are behind the work by ${unpaid} base units, over this supplier's credit limit of ${this.init.creditLimit}`, code: 'UNPAID' };
      } else if (unpaid > 0n && unpaid > this.credit.held(voucher.payer)) {
        // Credit grows: only for a payer whose escrow covers everything it owes, within the per-peer and total bounds.
        const owed = charged - account.redeemed;
        const { ok, balance } = await this.init.balances.covers(voucher.payer, owed);
        if (!ok) refusal = { outcome: 'unfunded', message: `the payer's escrow balance ${balance} does not cover the ${owed} base units it would owe; this supplier extends no credit to it`, code: 'PAYMENT_REQUIRED' };
        else {
          const r = this.credit.reserve(voucher.payer, peer, unpaid);
          if (r) refusal = { outcome: 'over_credit', message: r.message, code: 'UNPAID' };
        }
      } else {
        this.credit.shrink(voucher.payer, unpaid);
      }
      if (refusal) {
        if (improved) {
          await save({ ...account, best: voucher }); // still worth keeping: it pays for work done
          this.credit.shrink(voucher.payer, account.charged - voucher.cumulativeAmount);
        }
        refuse(refusal.outcome, metrics, refusal.message, refusal.code);
      }
      metrics?.credit.set(Number(this.credit.total));
      // Durable before the step runs whenever it brings a new voucher: that is when work becomes paid. A step
      // re-sending a voucher already held only counts its charge, in memory (no recovery, no write).
      await save({ ...account, charged, best: improved ? voucher : account.best }, improved ? true : 'memory');
      metrics?.vouchers.inc({ outcome: improved ? 'accepted' : 'superseded' });
      return { payer: voucher.payer, charge, newVoucher: improved };
    });
  }

  /** Counts an admitted step as delivered. */
  settle(step: AdmittedStep): void {
    this.init.metrics?.charged.inc(Number(step.charge));
  }

  /** Gives back the charge of a step that failed (its voucher stays: it was valid). */
  async cancel(step: AdmittedStep): Promise<void> {
    if (step.charge === 0n) return;
    await this.init.book.update(step.payer, async (account, save) => {
      const charged = account.charged - step.charge;
      await save({ ...account, charged }, 'memory');
      this.credit.shrink(step.payer, charged - (account.best?.cumulativeAmount ?? 0n));
      this.init.metrics?.credit.set(Number(this.credit.total));
    });
  }

  /** The voucher in its stored form, with payee and deadline checked (PAYMENT_REQUIRED otherwise). */
  private parse(wire: WireVoucher): SignedVoucher {
    const { metrics } = this.init;
    let voucher: SignedVoucher;
    try {
      voucher = voucherFromWire(wire);
    } catch {
      refuse('invalid', metrics, 'the voucher is malformed (addresses, amount)');
    }
    if (voucher.payee !== this.init.payee) refuse('invalid', metrics, `the voucher pays ${voucher.payee}, not this supplier's staking address ${this.init.payee}`);
    const minDeadline = BigInt(this.nowSeconds() + this.init.minDeadlineSeconds);
    if (voucher.deadline < minDeadline) refuse('invalid', metrics, `the voucher's deadline ${voucher.deadline} is too close (this supplier needs ≥ ${this.init.minDeadlineSeconds} s to redeem it)`);
    return voucher;
  }

  /** Checks the payer's signature unless this exact voucher was checked before (the stored best, or recently). */
  private authenticate(voucher: SignedVoucher, best: SignedVoucher | undefined): void {
    if (sameVoucher(voucher, best) || this.verified.has(voucher)) return;
    if (!verifyVoucher(this.init.escrowAddress, this.init.chainId, voucher, voucher.signature)) {
      refuse('invalid', this.init.metrics, 'the voucher\'s signature is not the payer\'s for this chain and escrow');
    }
    this.verified.add(voucher);
  }
}
