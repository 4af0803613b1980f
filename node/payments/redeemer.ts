/**
 * Redeems the supplier's best vouchers on PaymentEscrow: automatically once the unredeemed value reaches
 * a threshold, at start-up (vouchers left by a crash) and on shutdown. Before sending, each voucher is
 * checked against the chain (already redeemed? expired? escrow enough?) because `redeemBatch` is atomic:
 * one bad voucher would revert the batch. A batch that still reverts is retried one voucher at a time.
 * What was redeemed is written to the voucher book durably.
 */
import type { Logger } from 'pino';
import type { PaymentEscrowContract } from '../../contracts/bindings.js';
import { revertName } from '../../contracts/bindings.js';
import { redeem, redeemBatch } from '../../contracts/actions.js';
import type { PaymentMetrics } from './metrics.js';
import type { PayerAccount, VoucherBook } from './voucher-book.js';
import type { SignedVoucher } from '../../contracts/eip712.js';

export interface RedeemerInit {
  book: VoucherBook;
  /** PaymentEscrow, connected to the supplier's wallet (it pays the gas). */
  escrow: PaymentEscrowContract;
  payee: string;
  /** Redeem automatically once this much is unredeemed (base units). */
  threshold: bigint;
  /** Latest block timestamp (unix seconds). */
  chainTime: () => Promise<bigint>;
  metrics?: PaymentMetrics;
  logger?: Logger;
}

export interface RedeemResult {
  /** Value paid to the supplier by this run, base units. */
  redeemed: bigint;
  /** Vouchers redeemed. */
  vouchers: number;
  /** Transactions sent. */
  transactions: number;
  /** Redemption transactions that failed (worth another try, unlike an expired voucher). */
  failed: number;
  /** Vouchers skipped (expired, escrow short, failed), with why. */
  skipped: { payer: string; reason: string }[];
}

/** First wait before retrying a failed automatic redemption; doubles up to the maximum. */
const RETRY_FIRST_MS = 2_000;
const RETRY_MAX_MS = 60_000;

export class Redeemer {
  private running?: Promise<RedeemResult>;
  private retryTimer?: NodeJS.Timeout;
  private retryDelayMs = RETRY_FIRST_MS;
  private stopped = false;

  constructor(private readonly init: RedeemerInit) {}

  /** Value held in vouchers above what was redeemed, over all payers. */
  unredeemed(): bigint {
    let total = 0n;
    for (const a of this.init.book.all()) if (a.best && a.best.cumulativeAmount > a.redeemed) total += a.best.cumulativeAmount - a.redeemed;
    return total;
  }

  /** Starts a redemption in the background when the unredeemed value reaches the threshold. */
  maybeRedeem(): void {
    const pending = this.unredeemed();
    this.init.metrics?.unredeemed.set(Number(pending));
    if (pending === 0n || pending < this.init.threshold) return;
    // A failed run is retried on its own (with back-off): the step that crossed the threshold may be the last one.
    void this.redeemAll().then(
      (r) => { if (r.failed) this.retryLater(); else this.retryDelayMs = RETRY_FIRST_MS; },
      (err: unknown) => { this.init.logger?.warn({ err: (err as Error).message }, 'automatic redemption failed; will retry'); this.retryLater(); },
    );
  }

  /** No more automatic retries (shutdown). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
  }

  private retryLater(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => { this.retryTimer = undefined; this.maybeRedeem(); }, this.retryDelayMs);
    this.retryTimer.unref();
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS);
  }

  /**
   * Redeems everything when some unredeemed voucher expires within `withinSeconds`: below the threshold a
   * quiet supplier would otherwise hold vouchers until they are worthless.
   */
  async redeemExpiring(withinSeconds: number): Promise<RedeemResult | undefined> {
    const horizon = (await this.init.chainTime()) + BigInt(withinSeconds);
    const urgent = this.init.book.all().some((a) => a.best && a.best.cumulativeAmount > a.redeemed && a.best.deadline <= horizon);
    return urgent ? this.redeemAll() : undefined;
  }

  /**
   * Redeems every voucher worth redeeming now, or only those of `payers` (runs coalesce: a call during a run
   * waits for a new one).
   */
  redeemAll(payers?: ReadonlySet<string>): Promise<RedeemResult> {
    if (this.running) {
      // After the current run, whether it succeeded or not: a failed run must not swallow the one asked for now.
      return this.running.catch(() => undefined).then(() => this.redeemAll(payers));
    }
    this.running = this.run(payers).finally(() => { this.running = undefined; });
    return this.running;
  }

  /** Whether the book holds a voucher of `payer` above what was redeemed. */
  holdsUnredeemed(payer: string): boolean {
    const a = this.init.book.get(payer);
    return a.best !== undefined && a.best.cumulativeAmount > a.redeemed;
  }

  /** Waits for a redemption in progress. */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  private async run(payers?: ReadonlySet<string>): Promise<RedeemResult> {
    const { book, escrow, payee, logger, metrics } = this.init;
    const result: RedeemResult = { redeemed: 0n, vouchers: 0, transactions: 0, failed: 0, skipped: [] };
    const now = await this.init.chainTime();
    const ready: { account: PayerAccount; voucher: SignedVoucher; onChain: bigint }[] = [];
    for (const account of book.all()) {
      if (payers && !payers.has(account.payer)) continue;
      const v = account.best;
      if (!v || v.cumulativeAmount <= account.redeemed) continue;
      // The chain is the truth: a crash may have come between a redemption and its note in the book.
      const onChain = await escrow.redeemed(v.payer, payee);
      if (onChain >= v.cumulativeAmount) {
        await book.update(account.payer, (current, save) => save({ ...current, redeemed: onChain > current.redeemed ? onChain : current.redeemed }));
        continue;
      }
      if (v.deadline < now) {
        result.skipped.push({ payer: v.payer, reason: `voucher expired at ${v.deadline}` });
        logger?.error({ payer: v.payer, amount: (v.cumulativeAmount - onChain).toString() }, 'voucher expired before it was redeemed');
        continue;
      }
      const balance = await escrow.balanceOf(v.payer);
      if (balance < v.cumulativeAmount - onChain) {
        result.skipped.push({ payer: v.payer, reason: `escrow holds ${balance}, the voucher needs ${v.cumulativeAmount - onChain}` });
        logger?.warn({ payer: v.payer, balance: balance.toString() }, 'payer\'s escrow does not cover its voucher; not redeeming it now');
        continue;
      }
      ready.push({ account, voucher: v, onChain });
    }
    if (ready.length === 0) return result;

    const record = async (items: typeof ready): Promise<void> => {
      for (const { account, voucher, onChain } of items) {
        await book.update(account.payer, (current, save) => save({ ...current, redeemed: voucher.cumulativeAmount > current.redeemed ? voucher.cumulativeAmount : current.redeemed }));
        result.redeemed += voucher.cumulativeAmount - onChain;
        result.vouchers++;
        metrics?.redeemed.inc(Number(voucher.cumulativeAmount - onChain));
      }
    };
    const vouchersOf = (items: typeof ready): SignedVoucher[] => items.map((r) => r.voucher);
    const account = { contracts: { paymentEscrow: escrow } };
    try {
      if (ready.length === 1) await redeem(account, { voucher: ready[0].voucher });
      else await redeemBatch(account, { vouchers: vouchersOf(ready) });
      result.transactions++;
      metrics?.redemptions.inc({ outcome: 'ok' });
      await record(ready);
    } catch (err) {
      metrics?.redemptions.inc({ outcome: 'failed' });
      result.failed++;
      if (ready.length === 1) {
        result.skipped.push({ payer: ready[0].voucher.payer, reason: failureReason(err) });
        logger?.warn({ payer: ready[0].voucher.payer, err: failureReason(err) }, 'redemption failed');
      } else {
        logger?.warn({ err: failureReason(err) }, 'batch redemption failed; redeeming one by one');
        for (const item of ready) {
          try {
            await redeem(account, { voucher: item.voucher });
            result.transactions++;
            metrics?.redemptions.inc({ outcome: 'ok' });
            await record([item]);
          } catch (e) {
            metrics?.redemptions.inc({ outcome: 'failed' });
            result.failed++;
            result.skipped.push({ payer: item.voucher.payer, reason: failureReason(e) });
          }
        }
      }
    }
    metrics?.unredeemed.set(Number(this.unredeemed()));
    if (result.vouchers) logger?.info({ redeemed: result.redeemed.toString(), vouchers: result.vouchers, transactions: result.transactions }, 'vouchers redeemed');
    return result;
  }
}

/** Why a redemption failed, for the log and the result: the contract's error name when it reverted. */
function failureReason(err: unknown): string {
  return revertName(err) ?? revertName((err as { cause?: unknown }).cause) ?? (err as Error).message;
}
