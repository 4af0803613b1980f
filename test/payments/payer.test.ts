/**
 * The gateway's payer on a real anvil: cumulative vouchers per payee that PaymentEscrow redeems, never
 * signing beyond the escrow (outstanding vouchers over all payees count, redemptions free nothing, deposits
 * do, a pending withdrawal stops it), and a ledger that survives a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hexlify } from 'ethers';
import path from 'node:path';
import { VoucherPayer, PayerError } from '../../gateway/payer/index.js';
import { verifyVoucher } from '../../contracts/eip712.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import { voucherFromWire } from '../../net/exec/voucher-wire.js';
import { redeem as redeemVoucher } from '../../contracts/actions.js';
import { tempDir } from '../helpers/tmp.js';
import { startPaymentChain, type PaymentChain } from './helpers.js';

const tmp = tempDir('gridpipe-payer-');
let chain: PaymentChain;
let payer: VoucherPayer;
const payeeA = (): { peerId: string; stakingAddress: string; pricePerGflop: string } => ({ peerId: 'A', stakingAddress: chain.wallets[1].address, pricePerGflop: '1' });
const payeeB = (): { peerId: string; stakingAddress: string; pricePerGflop: string } => ({ peerId: 'B', stakingAddress: chain.wallets[2].address, pricePerGflop: '1' });
const dataDir = (): string => path.join(tmp.dir, 'gateway');
// Per-step vouchers (windowSteps 0) for the exact amounts below; the credit window has its own tests.
const open = (): Promise<VoucherPayer> => VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: chain.wallets[4] }, dataDir: dataDir(), escrowTtlMs: 60_000, windowSteps: 0 });

async function refused(p: Promise<unknown>): Promise<PayerError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(PayerError);
  return err as PayerError;
}

function redeem(v: WireVoucher): Promise<unknown> {
  return redeemVoucher({ contracts: { paymentEscrow: chain.contracts.paymentEscrow.connect(chain.wallets[1]) } }, { voucher: voucherFromWire(v) });
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  await chain.mint(chain.wallets[4].address, 10n);
  await chain.deposit(chain.wallets[4], 1000n);
  payer = await open();
});

afterAll(async () => {
  await payer?.close();
  await chain?.close();
  tmp.cleanup();
});

describe('VoucherPayer (anvil)', () => {
  it('signs cumulative vouchers the escrow accepts', async () => {
    const v1 = await payer.voucherFor(payeeA(), 300n);
    const v2 = await payer.voucherFor(payeeA(), 300n);
    expect(v1.cumulativeAmount).toBe('300');
    expect(v2.cumulativeAmount).toBe('600');
    const typed = { ...v2, cumulativeAmount: 600n };
    expect(verifyVoucher(chain.config.paymentEscrow, chain.config.chainId, typed, hexlify(v2.signature))).toBe(true);
    // a zero charge reuses the last voucher
    expect((await payer.voucherFor(payeeA(), 0n)).signature).toEqual(v2.signature);
  });

  it('never signs beyond the escrow, counting every payee\'s outstanding vouchers', async () => {
    const e = await refused(payer.voucherFor(payeeB(), 401n));
    expect(e.code).toBe('ESCROW_EXHAUSTED');
    expect(e.message).toMatch(/400 base units free of 1000/);
    expect((await payer.voucherFor(payeeB(), 400n)).cumulativeAmount).toBe('400');
    expect((await refused(payer.voucherFor(payeeA(), 1n))).code).toBe('ESCROW_EXHAUSTED');
    expect(new Map(payer.totals().map((t) => [t.payee, t.signed]))).toEqual(new Map([[chain.wallets[1].address, 600n], [chain.wallets[2].address, 400n]]));
  });

  it('a redemption frees nothing; a deposit does', async () => {
    await redeem(await payer.voucherFor(payeeA(), 0n));
    expect(await chain.contracts.paymentEscrow.balanceOf(payer.payer)).toBe(400n);
    expect((await refused(payer.voucherFor(payeeA(), 1n))).code).toBe('ESCROW_EXHAUSTED');
    await chain.deposit(chain.wallets[4], 50n);
    expect((await payer.voucherFor(payeeA(), 50n)).cumulativeAmount).toBe('650');
    expect(await payer.available()).toBe(0n);
  });

  it('signs nothing while a withdrawal is pending', async () => {
    await chain.deposit(chain.wallets[4], 100n);
    const escrow = chain.contracts.paymentEscrow.connect(chain.wallets[4]);
    await (await escrow.requestWithdrawal(100n)).wait();
    expect((await refused(payer.voucherFor(payeeB(), 1n))).code).toBe('WITHDRAWING');
    await (await escrow.requestWithdrawal(0n)).wait();
    expect((await payer.voucherFor(payeeB(), 1n)).cumulativeAmount).toBe('401');
  });

  it('a restarted payer continues each payee\'s cumulative amount', async () => {
    await payer.close();
    payer = await open();
    const totals = new Map(payer.totals().map((t) => [t.payee, t.signed]));
    expect(totals.get(chain.wallets[1].address)).toBe(650n);
    expect(totals.get(chain.wallets[2].address)).toBe(401n);
    expect((await payer.voucherFor(payeeB(), 9n)).cumulativeAmount).toBe('410');
  });

  it('refuses a payee without a valid staking address', async () => {
    expect((await refused(payer.voucherFor({ peerId: 'X', stakingAddress: '', pricePerGflop: '1' }, 1n))).code).toBe('BAD_PAYEE');
  });
});

describe('VoucherPayer credit window (anvil, issue 15)', () => {
  const windowDir = (): string => path.join(tmp.dir, 'gateway-window');
  const openWindowed = (extra: { windowSteps?: number; windowMax?: bigint; dataDir?: string } = {}): Promise<VoucherPayer> => VoucherPayer.open({
    chain: { chainConfig: chain.config, wallet: chain.wallets[5] }, dataDir: extra.dataDir ?? windowDir(), escrowTtlMs: 60_000, windowSteps: extra.windowSteps ?? 4, windowMax: extra.windowMax,
  });

  it('pays a window ahead and re-sends that voucher, with no signature and no ledger write, for the steps it covers', async () => {
    await chain.mint(chain.wallets[5].address, 10n);
    await chain.deposit(chain.wallets[5], 10_000n);
    const p = await openWindowed();
    try {
      const first = await p.voucherFor(payeeA(), 10n);
      expect(first.cumulativeAmount).toBe('50'); // this step and 4 more like it
      expect(p.signedCount).toBe(1);
      for (let i = 0; i < 4; i++) expect(await p.voucherFor(payeeA(), 10n)).toBe(first);
      expect(p.signedCount).toBe(1);
      const next = await p.voucherFor(payeeA(), 10n);
      expect(next.cumulativeAmount).toBe('100');
      expect(p.signedCount).toBe(2);
      // The supplier can redeem the voucher it holds: the escrow pays what was signed.
      expect(verifyVoucher(chain.config.paymentEscrow, chain.config.chainId, { ...next, cumulativeAmount: 100n }, hexlify(next.signature))).toBe(true);
    } finally {
      await p.close();
    }
  });

  it('concurrent steps to one payee: every charge is covered by a voucher signed, at most one window ahead', async () => {
    const p = await openWindowed({ dataDir: path.join(tmp.dir, 'gateway-concurrent') });
    const payeeC = { peerId: 'C', stakingAddress: chain.wallets[7].address, pricePerGflop: '1' };
    try {
      const vouchers = await Promise.all(Array.from({ length: 10 }, () => p.voucherFor(payeeC, 10n)));
      const highest = vouchers.reduce((m, v) => (BigInt(v.cumulativeAmount) > m ? BigInt(v.cumulativeAmount) : m), 0n);
      expect(highest).toBeGreaterThanOrEqual(100n);
      expect(highest).toBeLessThanOrEqual(140n);
      expect(p.signedCount).toBeLessThan(10);
    } finally {
      await p.close();
    }
  });

  it('a restarted payer counts everything signed as used: its next voucher is above every one it signed', async () => {
    const p = await openWindowed();
    try {
      expect(p.totals().find((t) => t.payee === chain.wallets[1].address)?.signed).toBe(100n);
      expect((await p.voucherFor(payeeA(), 10n)).cumulativeAmount).toBe('150');
    } finally {
      await p.close();
    }
  });

  it('never pays ahead more than windowMax, nor more than the escrow has room for', async () => {
    const capped = await openWindowed({ windowMax: 15n, dataDir: path.join(tmp.dir, 'gateway-capped') });
    try {
      expect((await capped.voucherFor(payeeB(), 10n)).cumulativeAmount).toBe('25');
    } finally {
      await capped.close();
    }
    // Its own ledger counts 150 to A and 25 to B of this escrow (10,000): a window of 4 × 3,000 does not fit, the step alone does.
    const big = await openWindowed({ dataDir: windowDir() });
    try {
      expect((await big.voucherFor(payeeB(), 3_000n)).cumulativeAmount).toBe('3000');
      expect((await big.voucherFor(payeeB(), 3_000n)).cumulativeAmount).toBe('6000');
      expect((await refused(big.voucherFor(payeeB(), 4_000n))).code).toBe('ESCROW_EXHAUSTED');
    } finally {
      await big.close();
    }
  });
});
