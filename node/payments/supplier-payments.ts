/**
 * A supplier's payments, as the exec server's StepPaymentHook: prices each step (pricing.ts), lets it run
 * only with an acceptable voucher (gate.ts; sessions open only with one too), signs a receipt of what it
 * computed (receipts.ts: once per session and per new voucher, over running hashes of the steps) and redeems the vouchers on chain (redeemer.ts): above a threshold, at start-up,
 * at stop and as soon as a payer asks to withdraw its escrow (withdrawal-watch.ts).
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ExecError } from '../../net/exec/errors.js';
import type { PaidOpenInfo, PaidStepInfo, PaidStepTicket, StepPaymentHook } from '../exec/protocol.js';
import { CachedBalances } from './balances.js';
import { requireWallet, type ChainAccess } from '../../contracts/chain.js';
import { PaymentGate } from './gate.js';
import { PaymentMetrics } from './metrics.js';
import { stepCharge } from '../../policy/pricing.js';
import { ReceiptSigner, RunningDigest } from './receipts.js';
import { Redeemer, type RedeemResult } from './redeemer.js';
import { voucherBookDir, VoucherBook, type PayerAccount } from './voucher-book.js';
import { WithdrawalWatch } from './withdrawal-watch.js';
import { withTimeout } from '../../net/deadline.js';

/** Token base units: 10^18 is one token of an 18-decimal ERC-20 such as GridToken. */
const TOKEN = 10n ** 18n;

/** Defaults (see node/payments/README.md). */
export const PAYMENT_DEFAULTS = {
  /** Unpaid work a payer may run up: 0.01 token. */
  creditLimit: TOKEN / 100n,
  /** Unpaid work all payers named by one remote peer may run up (default: the per-payer limit). */
  creditPerPeer: TOKEN / 100n,
  /** Unpaid work over all payers: 0.16 token. */
  creditTotal: (TOKEN / 100n) * 16n,
  /** How often the chain is asked for new WithdrawalRequested events (ms). */
  withdrawalPollMs: 4_000,
  /** Redeem once this much is held unredeemed: 1 token. */
  redeemThreshold: TOKEN,
  /** Vouchers must stay redeemable for at least an hour. */
  minDeadlineSeconds: 3600,
  /** Escrow balances are re-read after this long (ms). */
  balanceTtlMs: 15_000,
  /** Every this often (ms), vouchers that expire within `expiryMarginSeconds` are redeemed whatever the threshold. */
  expiryCheckMs: 10 * 60_000,
  expiryMarginSeconds: 6 * 3600,
} as const;

export interface SupplierPaymentsOptions {
  chain: ChainAccess;
  /** The supplier's data folder (the voucher book goes in payments/vouchers). */
  dataDir: string;
  pricePerGflop: bigint;
  creditLimit?: bigint;
  /** Unpaid work allowed over all payers of one remote peer (default: creditLimit). */
  creditPerPeer?: bigint;
  /** Unpaid work allowed over all payers (default: 16 × creditLimit). */
  creditTotal?: bigint;
  redeemThreshold?: bigint;
  /** Poll interval of the WithdrawalRequested watch (ms; default PAYMENT_DEFAULTS.withdrawalPollMs). */
  withdrawalPollMs?: number;
  minDeadlineSeconds?: number;
  balanceTtlMs?: number;
  /** Sign receipts of each step (default: when the chain has a DisputeManager). */
  receipts?: boolean;
  registry?: Registry;
  logger?: Logger;
}

/** Earnings as the voucher book sees them. */
export interface EarningsSummary {
  payee: string;
  /** Work delivered, base units. */
  accrued: bigint;
  /** Value of the best vouchers held. */
  vouchered: bigint;
  redeemed: bigint;
  /** Held in vouchers and not redeemed yet. */
  pending: bigint;
  payers: PayerAccount[];
}

export class SupplierPayments implements StepPaymentHook {
  readonly payee: string;
  readonly metrics: PaymentMetrics;
  private readonly gate: PaymentGate;
  readonly redeemer: Redeemer;
  private readonly receipts?: ReceiptSigner;
  /** Running hashes per session (remote peer + session id), least recently used dropped past SESSION_DIGESTS. */
  private readonly digests = new Map<string, RunningDigest>();
  private expiryTimer?: ReturnType<typeof setInterval>;
  private readonly withdrawals: WithdrawalWatch;

  private constructor(private readonly options: SupplierPaymentsOptions, readonly book: VoucherBook) {
    const { chain } = options;
    const wallet = requireWallet(chain, 'a supplier that charges');
    this.payee = chain.address!;
    this.metrics = new PaymentMetrics(options.registry);
    const escrow = chain.contracts.paymentEscrow;
    this.gate = new PaymentGate({
      book,
      balances: new CachedBalances({ balanceOf: (payer) => escrow.balanceOf(payer) }, options.balanceTtlMs ?? PAYMENT_DEFAULTS.balanceTtlMs),
      payee: this.payee,
      escrowAddress: chain.config.paymentEscrow,
      chainId: chain.config.chainId,
      creditLimit: options.creditLimit ?? PAYMENT_DEFAULTS.creditLimit,
      creditPerPeer: options.creditPerPeer ?? options.creditLimit ?? PAYMENT_DEFAULTS.creditPerPeer,
      creditTotal: options.creditTotal ?? (options.creditLimit ?? PAYMENT_DEFAULTS.creditLimit) * 16n,
      minDeadlineSeconds: options.minDeadlineSeconds ?? PAYMENT_DEFAULTS.minDeadlineSeconds,
      metrics: this.metrics,
      logger: options.logger,
    });
    this.redeemer = new Redeemer({
      book,
      escrow,
      payee: this.payee,
      threshold: options.redeemThreshold ?? PAYMENT_DEFAULTS.redeemThreshold,
      chainTime: async () => BigInt((await chain.provider.getBlock('latest'))!.timestamp),
      metrics: this.metrics,
      logger: options.logger,
    });
    this.withdrawals = new WithdrawalWatch({
      escrow, blockNumber: () => chain.provider.getBlockNumber(), redeemer: this.redeemer,
      intervalMs: options.withdrawalPollMs ?? PAYMENT_DEFAULTS.withdrawalPollMs, logger: options.logger,
    });
    const dispute = chain.config.disputeManager;
    if (dispute && options.receipts !== false) this.receipts = new ReceiptSigner(wallet, dispute, chain.config.chainId);
  }

  /** Opens the voucher book and redeems what a previous run left unredeemed (in the background). */
  static async start(options: SupplierPaymentsOptions): Promise<SupplierPayments> {
    if (options.pricePerGflop < 0n) throw new RangeError('the price per GFLOP must not be negative');
    const book = await VoucherBook.open(voucherBookDir(options.dataDir));
    let payments: SupplierPayments;
    try {
      payments = new SupplierPayments(options, book);
    } catch (err) {
      await book.close();
      throw err;
    }
    payments.expiryTimer = setInterval(() => {
      void payments.redeemer.redeemExpiring(PAYMENT_DEFAULTS.expiryMarginSeconds).catch((err: unknown) => options.logger?.warn({ err: (err as Error).message }, 'redeeming vouchers close to their deadline failed'));
    }, PAYMENT_DEFAULTS.expiryCheckMs);
    payments.expiryTimer.unref();
    await payments.withdrawals.start();
    const left = payments.redeemer.unredeemed();
    if (left > 0n) {
      options.logger?.info({ unredeemed: left.toString() }, 'redeeming vouchers left from the last run');
      void payments.redeemer.redeemAll().catch((err: unknown) => options.logger?.warn({ err: (err as Error).message }, 'start-up redemption failed; will retry with the next ones'));
    }
    return payments;
  }

  /** The exec server's hook at session opening: a valid voucher of a payer with escrow. */
  admitOpen(open: PaidOpenInfo): Promise<void> {
    return this.gate.admitOpen(open.voucher, open.owner);
  }

  /** The exec server's hook: price the step, check its voucher, reserve the charge. */
  async admit(step: PaidStepInfo): Promise<PaidStepTicket> {
    if (!step.manifest) throw new ExecError('PAYMENT_REQUIRED', 'this supplier charges by the manifest\'s FLOPs: open the session naming the fragments\' manifest');
    if (step.chunkTokens.length !== step.chunks) throw new ExecError('PAYMENT_REQUIRED', `the step must declare the new positions of each of its ${step.chunks} chunks (chunk_tokens), it declared ${step.chunkTokens.length}`);
    let charge = 0n;
    if (!step.cached) {
      try {
        charge = stepCharge(step.manifest, this.options.pricePerGflop, { start: step.start, end: step.end, chunkTokens: step.chunkTokens });
      } catch (err) {
        throw new ExecError('BAD_REQUEST', (err as Error).message);
      }
    }
    const admitted = await this.gate.admit(step.voucher, charge, step.owner);
    return {
      charge,
      settle: async (io) => {
        this.gate.settle(admitted);
        this.redeemer.maybeRedeem();
        if (!this.receipts) return undefined;
        const key = `${step.owner}/${step.sessionId}`;
        let digest = this.digests.get(key);
        const first = !digest;
        if (digest) this.digests.delete(key); // refresh: most recently used last
        else digest = new RunningDigest();
        this.digests.set(key, digest);
        if (this.digests.size > SESSION_DIGESTS) this.digests.delete(this.digests.keys().next().value!);
        digest.add(io.inputs, io.outputs);
        // One signature per voucher window: on the session's first step and when this step brought a new voucher.
        if (!first && !admitted.newVoucher) return undefined;
        const signed = await this.receipts.sign({ cids: step.cids, sessionId: step.sessionId, step: step.stepId, inputs: digest.current() });
        this.metrics.receipts.inc();
        return signed.encoded;
      },
      cancel: () => this.gate.cancel(admitted),
    };
  }

  /** Redeems every voucher worth redeeming now. */
  redeemNow(): Promise<RedeemResult> {
    return this.redeemer.redeemAll();
  }

  earnings(): EarningsSummary {
    return summarize(this.payee, this.book.all());
  }

  /** Redeems what is left (graceful shutdown) and closes the book. */
  async stop(): Promise<RedeemResult | undefined> {
    let result: RedeemResult | undefined;
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.withdrawals.stop();
    this.redeemer.stop();
    try {
      // Bounded: with the chain unreachable, shutdown must still finish; the vouchers stay in the book for the next start.
      result = await withTimeout((async () => {
        await this.redeemer.idle();
        return this.redeemer.unredeemed() > 0n ? this.redeemer.redeemAll() : undefined;
      })(), SHUTDOWN_REDEEM_TIMEOUT_MS, 'redemption at shutdown');
    } catch (err) {
      this.options.logger?.warn({ err: (err as Error).message }, 'redemption at shutdown failed; the vouchers stay in the book for the next start');
    }
    await this.book.close();
    return result;
  }
}

/** Sessions whose running receipt hashes are kept (a session dropped and seen again starts a new running hash). */
const SESSION_DIGESTS = 4096;

/** How long a graceful shutdown waits for its final redemption. */
const SHUTDOWN_REDEEM_TIMEOUT_MS = 20_000;


/** Totals of a voucher book's accounts. */
export function summarize(payee: string, payers: PayerAccount[]): EarningsSummary {
  let accrued = 0n;
  let vouchered = 0n;
  let redeemed = 0n;
  for (const a of payers) {
    accrued += a.charged;
    vouchered += a.best?.cumulativeAmount ?? 0n;
    redeemed += a.redeemed;
  }
  return { payee, accrued, vouchered, redeemed, pending: vouchered - redeemed, payers };
}
