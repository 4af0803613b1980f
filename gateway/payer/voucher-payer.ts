/**
 * The gateway's StepPayer: signs EIP-712 cumulative vouchers per (payer, payee) with its wallet, records
 * each in its durable ledger before handing it out, and never signs beyond its escrow: the value signed and
 * not yet redeemed, over all payees, plus the new charge must fit in the escrow balance (less a requested
 * withdrawal; while one is pending nothing is signed, as contracts/README.md asks of payers).
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

export class VoucherPayer implements StepPayer {
  readonly payer: string;
  private readonly escrowView: EscrowView;
  private tail: Promise<unknown> = Promise.resolve();

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

  /** Signs (or reuses, for a zero charge) the voucher paying `charge` more to `payee`. */
  voucherFor(payee: Payee, charge: bigint): Promise<WireVoucher> {
    // One at a time: the escrow check spans every payee.
    const run = this.tail.then(() => this.sign(payee, charge));
    this.tail = run.catch(() => undefined);
    return run;
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
    // Nothing new to pay and the last voucher has long to live: hand it out again (no signature, no write).
    if (charge === 0n && last && last.deadline - now >= ttl / 2n) return voucherToWire(last);
    const cumulative = (last?.cumulativeAmount ?? 0n) + charge;
    if (charge > 0n) await this.checkEscrow(payee, charge);
    const voucher = { payer: this.payer, payee, cumulativeAmount: cumulative, deadline: now + ttl };
    const signature = await signVoucher(this.chain.wallet!, this.chain.config.paymentEscrow, this.chain.config.chainId, voucher);
    const signed: SignedVoucher = { ...voucher, signature };
    await this.ledger.record(signed); // durable before it leaves: a restart continues from here
    return voucherToWire(signed);
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
