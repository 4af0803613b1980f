/**
 * The gateway's StepPayer: signs EIP-712 cumulative vouchers per (payer, payee) with its wallet, records
 * each in its durable ledger before handing it out, and never signs beyond its escrow: the value signed and
 * not yet redeemed, over all payees, plus the new charge must fit in the escrow balance (less a requested
 * withdrawal; while one is pending nothing is signed, as contracts/README.md asks of payers).
 *
 * A voucher covers a credit window, not a step (issue 15): when the steps' charges pass what the latest
 * voucher promised, the payer signs ahead for the next `windowSteps` steps' worth (at most `windowMax` base
 * units ahead, and only when the escrow has room for it; otherwise exactly what is due), and re-sends that
 * same voucher, with no signature and no write, for the steps it covers. The payer thus pre-pays at most one
 * window per payee; the supplier never extends credit to it. After a restart everything signed counts as
 * used (the unused window of the last run is the payer's loss, at most one window per payee).
 */
import { getAddress } from 'ethers';
import path from 'node:path';
import type { Logger } from 'pino';
import { signVoucher, type SignedVoucher } from '../../contracts/eip712.js';
import { openChain, requireWallet, type ChainAccess, type ChainAccessOptions } from '../../contracts/chain.js';
import type { Payee, StepPayer, WireVoucher } from '../../scheduler/payment.js';
import { EscrowView } from './escrow-view.js';
import { voucherToWire } from '../../net/exec/voucher-wire.js';
import { PayerLedger } from './ledger.js';
import { GridpipeError } from '../../errors/base.js';

export interface VoucherPayerOptions {
  /** Chain config, RPC URL and the payer's wallet (keystore or decrypted), or an open access with a wallet. */
  chain: ChainAccessOptions | ChainAccess;
  /** Folder of the payer's ledger (LevelDB). */
  dataDir: string;
  /** How long a voucher stays redeemable (default 7 days; suppliers want at least an hour). */
  voucherTtlSeconds?: number;
  /** Escrow reads are cached this long (default 15 s). */
  escrowTtlMs?: number;
  /** A new voucher pays ahead for this many more steps like the one that needed it (default 16; 0: per step). */
  windowSteps?: number;
  /** Never pays ahead more than this, base units (default WINDOW_MAX: 0.01 token, the suppliers' default credit limit). */
  windowMax?: bigint;
  logger?: Logger;
}

export type PayerErrorCode = 'ESCROW_EXHAUSTED' | 'WITHDRAWING' | 'BAD_PAYEE' | 'BAD_CHARGE';

export class PayerError extends GridpipeError<PayerErrorCode> {
  override name = 'PayerError';
  constructor(code: PayerErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** What the payer has signed to one payee. */
export interface PayeeTotal {
  payee: string;
  /** Cumulative amount of the latest voucher, base units. */
  signed: bigint;
  deadline: bigint;
}

/** The ledger's folder inside a gateway data folder. */
export function payerLedgerDir(dataDir: string): string {
  return path.join(dataDir, 'payer', 'ledger');
}

/** Default cap on what a voucher pays ahead: 0.01 token of 18 decimals (a supplier's default credit limit). */
export const WINDOW_MAX = 10n ** 16n;
/** Default credit window in steps. */
export const WINDOW_STEPS = 16;

/** Per payee: what the steps have used of the latest voucher, and that voucher in wire form (re-sent as is). */
interface PayeeWindow { used: bigint; wire: WireVoucher; voucher: SignedVoucher }

export class VoucherPayer implements StepPayer {
  readonly payer: string;
  private readonly escrowView: EscrowView;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly windows = new Map<string, PayeeWindow>();
  /** Vouchers signed by this process (each one ledger write). */
  signedCount = 0;

  private constructor(private readonly chain: ChainAccess, private readonly ownsChain: boolean, private readonly ledger: PayerLedger, private readonly options: VoucherPayerOptions) {
    requireWallet(chain, 'paying suppliers');
    this.payer = chain.address!;
    this.escrowView = new EscrowView(chain.contracts.paymentEscrow, this.payer, options.escrowTtlMs);
  }

  /** Connects to the chain (when given options) and opens the ledger. */
  static async open(options: VoucherPayerOptions): Promise<VoucherPayer> {
    const owns = !('contracts' in options.chain);
    const chain = 'contracts' in options.chain ? options.chain : await openChain(options.chain);
    try {
      const ledger = await PayerLedger.open(payerLedgerDir(options.dataDir));
      return new VoucherPayer(chain, owns, ledger, options);
    } catch (err) {
      if (owns) chain.close();
      throw err;
    }
  }

  /**
   * The voucher paying `charge` more to `payee`: the latest one again while it still covers the steps' charges
   * (no signature, no write), otherwise a new one paying a window ahead. A zero charge gives the latest voucher.
   */
  voucherFor(payee: Payee, charge: bigint): Promise<WireVoucher> {
    const fast = this.covered(payee, charge);
    if (fast) return Promise.resolve(fast);
    // One at a time: the escrow check spans every payee.
    const run = this.tail.then(() => this.covered(payee, charge) ?? this.sign(payee, charge));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** The latest voucher to `target` when it covers `charge` more and has long to live (the charge is then counted as used). */
  private covered(target: Payee, charge: bigint): WireVoucher | undefined {
    if (charge < 0n) return undefined;
    const w = this.windows.get(target.stakingAddress);
    if (!w || w.used + charge > w.voucher.cumulativeAmount) return undefined;
    const ttl = BigInt(this.options.voucherTtlSeconds ?? 7 * 24 * 3600);
    if (w.voucher.deadline - BigInt(Math.floor(Date.now() / 1000)) < ttl / 2n) return undefined;
    w.used += charge;
    return w.wire;
  }

  private async sign(target: Payee, charge: bigint): Promise<WireVoucher> {
    if (charge < 0n) throw new PayerError('BAD_CHARGE', `a charge cannot be negative (${charge})`);
    let payee: string;
    try {
      payee = getAddress(target.stakingAddress);
    } catch {
      throw new PayerError('BAD_PAYEE', `supplier ${target.peerId} names no valid staking address ("${target.stakingAddress}")`);
    }
    const ttl = BigInt(this.options.voucherTtlSeconds ?? 7 * 24 * 3600);
    const now = BigInt(Math.floor(Date.now() / 1000));
    const last = this.ledger.get(this.payer, payee);
    const signedSoFar = last?.cumulativeAmount ?? 0n;
    // What the steps have used: everything signed, when this process has not seen the payee yet (a restart).
    const window = this.windows.get(target.stakingAddress);
    const used = window?.used ?? signedSoFar;
    if (charge === 0n && last && last.deadline - now >= ttl / 2n) {
      if (!window) this.windows.set(target.stakingAddress, { used, voucher: last, wire: voucherToWire(last) });
      return voucherToWire(last);
    }
    // Counted before any await: steps that the old voucher still covers meanwhile (the fast path) add to it.
    if (window) window.used = used + charge;
    try {
      const due = used + charge > signedSoFar ? used + charge - signedSoFar : 0n;
      const ahead = due > 0n ? this.windowAhead(charge) : 0n;
      let extra = due;
      if (due > 0n) extra = (await this.escrowRoom(payee, due + ahead)) ? due + ahead : (await this.checkEscrow(payee, due), due);
      const voucher = { payer: this.payer, payee, cumulativeAmount: signedSoFar + extra, deadline: now + ttl };
      const signature = await signVoucher(this.chain.wallet!, this.chain.config.paymentEscrow, this.chain.config.chainId, voucher);
      const signed: SignedVoucher = { ...voucher, signature };
      await this.ledger.record(signed); // durable before it leaves: a restart continues from here
      this.signedCount++;
      const wire = voucherToWire(signed);
      if (window) Object.assign(window, { voucher: signed, wire });
      else this.windows.set(target.stakingAddress, { used: used + charge, voucher: signed, wire });
      return wire;
    } catch (err) {
      if (window) window.used -= charge; // not paid: not used
      throw err;
    }
  }

  /** What a new voucher pays beyond what is due: `windowSteps` more steps of `charge`, at most `windowMax`. */
  private windowAhead(charge: bigint): bigint {
    const steps = BigInt(this.options.windowSteps ?? WINDOW_STEPS);
    const max = this.options.windowMax ?? WINDOW_MAX;
    const ahead = charge * steps;
    return ahead < max ? ahead : max;
  }

  /** Whether the escrow covers everything outstanding plus `amount` (from the cached escrow state, no refresh). */
  private async escrowRoom(payee: string, amount: bigint): Promise<boolean> {
    const payees = [...new Set([...this.ledger.all(this.payer).map((v) => v.payee), payee])];
    const s = await this.escrowView.get(payees, false);
    return s.withdrawing === 0n && s.balance - this.outstanding(s.redeemed) >= amount;
  }

  /** Throws ESCROW_EXHAUSTED / WITHDRAWING unless the escrow covers everything outstanding plus `charge`. */
  private async checkEscrow(payee: string, charge: bigint): Promise<void> {
    const payees = [...new Set([...this.ledger.all(this.payer).map((v) => v.payee), payee])];
    const room = async (fresh: boolean): Promise<{ free: bigint; withdrawing: bigint; balance: bigint }> => {
      const s = await this.escrowView.get(payees, fresh);
      return { free: s.balance - this.outstanding(s.redeemed), withdrawing: s.withdrawing, balance: s.balance };
    };
    let r = await room(false);
    if (r.withdrawing > 0n || r.free < charge) r = await room(true);
    if (r.withdrawing > 0n) throw new PayerError('WITHDRAWING', `payer ${this.payer} has requested a withdrawal of ${r.withdrawing} from escrow; it signs no more vouchers until it cancels it`);
    if (r.free < charge) {
      throw new PayerError('ESCROW_EXHAUSTED', `payer ${this.payer}'s escrow cannot cover this step: ${r.free > 0n ? r.free : 0n} base units free of ${r.balance}, the step costs ${charge}; deposit more (gridpipe deposit)`);
    }
  }

  /** Per payee, what has been signed so far. */
  totals(): PayeeTotal[] {
    return this.ledger.all(this.payer).map((v) => ({ payee: v.payee, signed: v.cumulativeAmount, deadline: v.deadline })).sort((a, b) => a.payee.localeCompare(b.payee));
  }

  /** Base units the payer may still sign for (escrow read fresh). */
  async available(): Promise<bigint> {
    const payees = this.ledger.all(this.payer).map((v) => v.payee);
    const s = await this.escrowView.get(payees, true);
    const free = s.balance - this.outstanding(s.redeemed);
    return free > 0n ? free : 0n;
  }

  /** Signed and not yet redeemed, over every payee (`redeemed`: what each payee has redeemed on chain). */
  private outstanding(redeemed: Map<string, bigint>): bigint {
    let total = 0n;
    for (const v of this.ledger.all(this.payer)) {
      const r = redeemed.get(v.payee) ?? 0n;
      if (v.cumulativeAmount > r) total += v.cumulativeAmount - r;
    }
    return total;
  }

  async close(): Promise<void> {
    await this.tail;
    await this.ledger.close();
    if (this.ownsChain) this.chain.close();
  }
}
