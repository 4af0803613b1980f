/**
 * The supplier's check of a step's payment (before the step runs):
 * - a voucher is required; its payee must be this supplier's staking address, its deadline far enough
 *   ahead to redeem it, its EIP-712 signature the payer's for this chain and escrow;
 * - vouchers are cumulative and only the highest counts: a lower or equal one than the best stored is
 *   superseded (ignored, not an error: steps of several sessions race);
 * - a new best must be covered by the payer's escrow balance (amount − already redeemed);
 * - the work delivered but not paid (charged − best voucher, this step included) may not exceed the
 *   credit limit (UNPAID otherwise);
 * - a new best voucher is written durably (fsync) before the step runs, so work is only ever counted as
 *   paid once its voucher is on disk.
 */
import { getAddress } from 'ethers';
import type { Logger } from 'pino';
import { verifyVoucher } from '../../contracts/eip712.js';
import type { WireVoucher } from '../exec/codec.js';
import { ExecError } from '../exec/errors.js';
import type { CachedBalances } from './balances.js';
import type { PaymentMetrics } from './metrics.js';
import type { StoredVoucher, VoucherBook } from './voucher-book.js';

export interface PaymentGateInit {
  book: VoucherBook;
  balances: CachedBalances;
  /** This supplier's staking address (checksummed): the payee every voucher must name. */
  payee: string;
  escrowAddress: string;
  chainId: number;
  /** Unpaid work allowed per payer, base units. */
  creditLimit: bigint;
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
}

function refuse(outcome: string, metrics: PaymentMetrics | undefined, message: string, code: 'PAYMENT_REQUIRED' | 'UNPAID' = 'PAYMENT_REQUIRED'): never {
  metrics?.vouchers.inc({ outcome });
  throw new ExecError(code, message);
}

export class PaymentGate {
  private readonly nowSeconds: () => number;

  constructor(private readonly init: PaymentGateInit) {
    this.nowSeconds = init.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
  }

  /** Checks `wire` for a step worth `charge` and reserves the charge on the payer's account. */
  async admit(wire: WireVoucher | undefined, charge: bigint): Promise<AdmittedStep> {
    const { metrics } = this.init;
    if (!wire || !wire.payer) refuse('missing', metrics, 'this supplier charges for its work: the step needs a voucher');
    let voucher: StoredVoucher;
    try {
      voucher = {
        payer: getAddress(wire.payer),
        payee: getAddress(wire.payee),
        cumulativeAmount: BigInt(/^\d+$/.test(wire.cumulativeAmount) ? wire.cumulativeAmount : 'x'),
        deadline: wire.deadline,
        signature: `0x${Buffer.from(wire.signature).toString('hex')}`,
      };
    } catch {
      refuse('invalid', metrics, 'the voucher is malformed (addresses, amount)');
    }
    if (voucher.payee !== this.init.payee) refuse('invalid', metrics, `the voucher pays ${voucher.payee}, not this supplier's staking address ${this.init.payee}`);
    const minDeadline = BigInt(this.nowSeconds() + this.init.minDeadlineSeconds);
    if (voucher.deadline < minDeadline) refuse('invalid', metrics, `the voucher's deadline ${voucher.deadline} is too close (this supplier needs ≥ ${this.init.minDeadlineSeconds} s to redeem it)`);

    return this.init.book.update(voucher.payer, async (account, save) => {
      const best = account.best?.cumulativeAmount ?? 0n;
      let improved = false;
      if (voucher.cumulativeAmount > best) {
        if (!verifyVoucher(this.init.escrowAddress, this.init.chainId, voucher, voucher.signature)) {
          refuse('invalid', metrics, 'the voucher\'s signature is not the payer\'s for this chain and escrow');
        }
        const needed = voucher.cumulativeAmount - account.redeemed;
        const { ok, balance } = await this.init.balances.covers(voucher.payer, needed);
        if (!ok) refuse('unfunded', metrics, `the payer's escrow balance ${balance} does not cover the voucher (${needed} not yet redeemed)`);
        improved = true;
      }
      const paid = improved ? voucher.cumulativeAmount : best;
      const unpaid = account.charged + charge - paid;
      if (unpaid > this.init.creditLimit) {
        if (improved) await save({ ...account, best: voucher }); // still worth keeping: it pays for work done
        refuse('over_credit', metrics, `payments are behind the work by ${unpaid} base units, over this supplier's credit limit of ${this.init.creditLimit}`, 'UNPAID');
      }
      // Durable before the step runs whenever it brings a new voucher: that is when work becomes paid.
      await save({ ...account, charged: account.charged + charge, best: improved ? voucher : account.best }, improved);
      metrics?.vouchers.inc({ outcome: improved ? 'accepted' : 'superseded' });
      return { payer: voucher.payer, charge };
    });
  }

  /** Counts an admitted step as delivered. */
  settle(step: AdmittedStep): void {
    this.init.metrics?.charged.inc(Number(step.charge));
  }

  /** Gives back the charge of a step that failed (its voucher stays: it was valid). */
  async cancel(step: AdmittedStep): Promise<void> {
    if (step.charge === 0n) return;
    await this.init.book.update(step.payer, (account, save) => save({ ...account, charged: account.charged - step.charge }, false));
  }
}
