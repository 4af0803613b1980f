/**
 * The payment gate loaded directly (issue 21: no test did, and its escrow-coverage check, deadline check,
 * superseded-voucher comparison and cancel() could each be deleted unnoticed): a PaymentGate over a real
 * voucher book (LevelDB in a temp folder) and the real PaymentEscrow's balances on anvil, fed vouchers signed
 * with EIP-712 by the payer's key. Each rule is checked at its boundary, so a changed comparison shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { Wallet } from 'ethers';
import { signVoucher, type Voucher } from '../../contracts/eip712.js';
import { voucherToWire } from '../../net/exec/voucher-wire.js';
import { ExecError } from '../../net/exec/errors.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import { PaymentGate, type PaymentGateInit } from '../../node/payments/gate.js';
import { CachedBalances } from '../../node/payments/balances.js';
import { VoucherBook } from '../../node/payments/voucher-book.js';
import { PaymentMetrics } from '../../node/payments/metrics.js';
import { Registry } from 'prom-client';
import { tempDir } from '../helpers/tmp.js';
import { startPaymentChain, type PaymentChain, TOKEN } from './helpers.js';

const tmp = tempDir('gridpipe-gate-');
const NOW = 1_900_000_000;
const MIN_DEADLINE = 3600;
const ESCROW = 100n * TOKEN;
let chain: PaymentChain;
let payer: Wallet;
let poorPayer: Wallet;
let payee: string;
let books = 0;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  payer = chain.wallets[1];
  poorPayer = chain.wallets[2];
  payee = chain.wallets[3].address;
  await chain.mint(payer.address, 1000n);
  await chain.deposit(payer, ESCROW);
}, 120_000);

afterAll(async () => {
  await chain?.close();
  tmp.cleanup();
});

/** A gate over a fresh voucher book; `init` overrides the defaults. */
async function gate(init: Partial<PaymentGateInit> = {}): Promise<{ gate: PaymentGate; book: VoucherBook }> {
  const book = await VoucherBook.open(path.join(tmp.dir, `book-${books++}`));
  const balances = new CachedBalances({ balanceOf: (p) => chain.contracts.paymentEscrow.balanceOf(p) }, 0);
  const g = new PaymentGate({
    book, balances, payee, escrowAddress: chain.config.paymentEscrow, chainId: chain.config.chainId, creditLimit: 10n,
    minDeadlineSeconds: MIN_DEADLINE, nowSeconds: () => NOW, ...init,
  });
  return { gate: g, book };
}

/** A voucher signed by `from` (default the funded payer). */
async function voucher(amount: bigint, options: { from?: Wallet; payee?: string; deadline?: bigint } = {}): Promise<WireVoucher> {
  const from = options.from ?? payer;
  const v: Voucher = { payer: from.address, payee: options.payee ?? payee, cumulativeAmount: amount, deadline: options.deadline ?? BigInt(NOW + MIN_DEADLINE + 100) };
  return voucherToWire({ ...v, signature: await signVoucher(from, chain.config.paymentEscrow, chain.config.chainId, v) });
}

async function refusal(p: Promise<unknown>): Promise<ExecError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ExecError);
    return err as ExecError;
  }
  throw new Error('accepted');
}

describe('PaymentGate', () => {
  it('opens a session only with a valid voucher of a funded payer', async () => {
    const { gate: g, book } = await gate();
    expect((await refusal(g.admitOpen(undefined, 'peer'))).message).toMatch(/needs the payer's voucher/);
    expect((await refusal(g.admitOpen({ ...(await voucher(0n)), payer: '' }, 'peer'))).code).toBe('PAYMENT_REQUIRED');
    await expect(g.admitOpen(await voucher(0n), 'peer')).resolves.toBeUndefined();
    expect((await refusal(g.admitOpen(await voucher(0n, { from: poorPayer }), 'peer'))).message).toMatch(/nothing in escrow/);
    await book.close();
  });

  it('refuses a step without a voucher, a malformed one, one for another payee, or one signed by another key', async () => {
    const { gate: g, book } = await gate();
    expect((await refusal(g.admit(undefined, 1n, 'peer'))).message).toMatch(/the step needs a voucher/);
    expect((await refusal(g.admit({ ...(await voucher(5n)), cumulativeAmount: '5x' }, 1n, 'peer'))).message).toMatch(/malformed/);
    const other = await voucher(5n, { payee: chain.wallets[4].address });
    expect((await refusal(g.admit(other, 1n, 'peer'))).message).toMatch(/pays .* not this supplier's staking address/);
    const forged = { ...(await voucher(5n, { from: poorPayer })), payer: payer.address };
    expect((await refusal(g.admit(forged, 1n, 'peer'))).message).toMatch(/signature is not the payer's/);
    const raised = { ...(await voucher(5n)), cumulativeAmount: '6' };
    expect((await refusal(g.admit(raised, 1n, 'peer'))).message).toMatch(/signature is not the payer's/);
    expect(book.get(payer.address).best).toBeUndefined();
    await book.close();
  });

  it('needs a deadline at least minDeadlineSeconds ahead, to the second', async () => {
    const { gate: g, book } = await gate();
    const edge = BigInt(NOW + MIN_DEADLINE);
    const late = await refusal(g.admit(await voucher(5n, { deadline: edge - 1n }), 1n, 'peer'));
    expect(late.message).toMatch(/deadline .* is too close/);
    expect(late.code).toBe('PAYMENT_REQUIRED');
    await expect(g.admit(await voucher(5n, { deadline: edge }), 1n, 'peer')).resolves.toMatchObject({ newVoucher: true });
    await book.close();
  });

  it('accepts a new best voucher only while the escrow covers what is not yet redeemed, to the unit', async () => {
    const { gate: g, book } = await gate({ creditLimit: ESCROW });
    await expect(g.admit(await voucher(ESCROW), 1n, 'peer')).resolves.toMatchObject({ newVoucher: true, charge: 1n, payer: payer.address });
    expect(book.get(payer.address).best?.cumulativeAmount).toBe(ESCROW);
    const over = await refusal(g.admit(await voucher(ESCROW + 1n), 1n, 'peer'));
    expect(over.message).toMatch(/does not cover the voucher/);
    expect(book.get(payer.address).best?.cumulativeAmount).toBe(ESCROW);
    await book.close();
  });

  it('keeps the highest voucher: a lower or equal one is superseded, not stored, and its charge still counts', async () => {
    const { gate: g, book } = await gate();
    expect((await g.admit(await voucher(50n), 10n, 'peer')).newVoucher).toBe(true);
    const equal = await g.admit(await voucher(50n), 10n, 'peer');
    expect(equal.newVoucher).toBe(false);
    const lower = await g.admit(await voucher(40n), 10n, 'peer');
    expect(lower.newVoucher).toBe(false);
    const account = book.get(payer.address);
    expect(account.best?.cumulativeAmount).toBe(50n);
    expect(account.charged).toBe(30n);
    expect((await g.admit(await voucher(51n), 1n, 'peer')).newVoucher).toBe(true);
    expect(book.get(payer.address).best?.cumulativeAmount).toBe(51n);
    await book.close();
  });

  it('extends credit up to creditLimit and refuses the step that would go over it (UNPAID)', async () => {
    const { gate: g, book } = await gate({ creditLimit: 10n });
    await g.admit(await voucher(5n), 5n, 'peer'); // paid 5, charged 5
    await g.admit(await voucher(5n), 10n, 'peer'); // charged 15: unpaid 10 = the limit
    expect(g.credit.held(payer.address)).toBe(10n);
    const over = await refusal(g.admit(await voucher(5n), 1n, 'peer'));
    expect(over.code).toBe('UNPAID');
    expect(over.message).toMatch(/over this supplier's credit limit of 10/);
    expect(book.get(payer.address).charged).toBe(15n);
    // a voucher that pays for the work brings it back under the limit, and releases the credit
    await g.admit(await voucher(20n), 1n, 'peer');
    expect(book.get(payer.address).charged).toBe(16n);
    expect(g.credit.held(payer.address)).toBe(0n);
    await book.close();
  });

  it('cancel() gives back a failed step\'s charge and its credit; a zero charge changes nothing', async () => {
    const { gate: g, book } = await gate({ creditLimit: 10n });
    await g.admit(await voucher(5n), 5n, 'peer');
    const step = await g.admit(await voucher(5n), 8n, 'peer');
    expect(book.get(payer.address).charged).toBe(13n);
    expect(g.credit.held(payer.address)).toBe(8n);
    await g.cancel(step);
    expect(book.get(payer.address).charged).toBe(5n);
    expect(g.credit.held(payer.address)).toBe(0n);
    await g.cancel({ ...step, charge: 0n });
    g.settle(step); // no metrics on this gate: settling counts nothing and does not throw
    expect(book.get(payer.address).charged).toBe(5n);
    // the credit given back can be used again
    await expect(g.admit(await voucher(5n), 10n, 'peer')).resolves.toMatchObject({ newVoucher: false });
    await book.close();
  });

  it('extends no credit to a payer whose escrow does not cover what it would owe', async () => {
    const { gate: g, book } = await gate({ creditLimit: 1000n * TOKEN });
    await g.admit(await voucher(1n), 1n, 'peer');
    const owe = await refusal(g.admit(await voucher(1n), ESCROW + 1n, 'peer'));
    expect(owe.code).toBe('PAYMENT_REQUIRED');
    expect(owe.message).toMatch(/does not cover the .* base units it would owe/);
    await book.close();
  });
});

describe('PaymentGate metrics and shared credit bounds', () => {
  /** The vouchers counter by outcome, and the credit and charged figures. */
  async function counts(m: PaymentMetrics): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const v of (await m.vouchers.get()).values) out[String(v.labels.outcome)] = v.value;
    out.credit = (await m.credit.get()).values[0]?.value ?? 0;
    out.charged = (await m.charged.get()).values[0]?.value ?? 0;
    return out;
  }

  it('counts every outcome, the credit held and the work settled', async () => {
    const metrics = new PaymentMetrics(new Registry());
    const { gate: g, book } = await gate({ creditLimit: 10n, metrics });
    await refusal(g.admitOpen(undefined, 'peer'));
    await refusal(g.admit(undefined, 1n, 'peer'));
    await refusal(g.admit(await voucher(ESCROW + 1n), 1n, 'peer'));
    await refusal(g.admit(await voucher(5n, { payee: chain.wallets[4].address }), 1n, 'peer'));
    await refusal(g.admitOpen(await voucher(0n, { from: poorPayer }), 'peer'));
    await g.admitOpen(await voucher(0n), 'peer');
    const first = await g.admit(await voucher(5n), 8n, 'peer');
    g.settle(first);
    await g.admit(await voucher(5n), 2n, 'peer'); // unpaid 5
    await refusal(g.admit(await voucher(5n), 6n, 'peer')); // unpaid would be 11
    expect(await counts(metrics)).toEqual({ missing: 2, invalid: 1, unfunded: 2, opened: 1, accepted: 1, superseded: 1, over_credit: 1, credit: 5, charged: 8 });
    await book.close();
  });

  it('keeps a new voucher that comes with a step over the credit limit, and counts its payment', async () => {
    const metrics = new PaymentMetrics(new Registry());
    const { gate: g, book } = await gate({ creditLimit: 10n, metrics });
    await g.admit(await voucher(5n), 15n, 'peer'); // unpaid 10: at the limit
    expect(g.credit.held(payer.address)).toBe(10n);
    const over = await refusal(g.admit(await voucher(6n), 20n, 'peer')); // pays 1 more, charges 20 more
    expect(over.code).toBe('UNPAID');
    expect(book.get(payer.address).best?.cumulativeAmount).toBe(6n);
    expect(book.get(payer.address).charged).toBe(15n);
    expect(g.credit.held(payer.address)).toBe(9n);
    await book.close();
  });

  it('bounds credit per remote peer (creditPerPeer) and in total (creditTotal)', async () => {
    const perPeer = await gate({ creditLimit: 100n, creditPerPeer: 4n });
    await perPeer.gate.admit(await voucher(1n), 5n, 'peer-a'); // unpaid 4
    expect((await refusal(perPeer.gate.admit(await voucher(1n), 1n, 'peer-a'))).code).toBe('UNPAID');
    await perPeer.book.close();
    const total = await gate({ creditLimit: 100n, creditTotal: 3n });
    expect((await refusal(total.gate.admit(await voucher(1n), 5n, 'peer-b'))).code).toBe('UNPAID');
    // the refused step's voucher was kept (it pays for work); its charge was not counted
    await expect(total.gate.admit(await voucher(1n), 4n, 'peer-b')).resolves.toMatchObject({ newVoucher: false, charge: 4n });
    await total.book.close();
    const defaults = await gate({ creditLimit: 2n });
    await defaults.gate.admit(await voucher(1n), 3n, 'peer-c'); // unpaid 2 = creditLimit = the default per-peer bound
    expect((await refusal(defaults.gate.admit(await voucher(1n), 1n, 'peer-c'))).code).toBe('UNPAID');
    await defaults.book.close();
  });
});
