/**
 * contracts/actions.ts against a real anvil: approve-then-act approves only when the allowance is short
 * (and then exactly the amount), sends nothing extra when it suffices, and a revert reads as one
 * ChainActionError line naming the action and the contract's error.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MaxUint256, type Wallet } from 'ethers';
import {
  actingAs, ChainActionError, deposit, redeem, redeemBatch, signVoucher, stake, unstake, withdrawStake,
  type ActingAccount, type SignedVoucher, type Voucher,
} from '../../contracts/index.js';
import { isGridpipeError } from '../../errors/base.js';
import { mined, setupChain, TEST_PARAMS, type Chain } from './helpers.js';

let chain: Chain;
let supplier: Wallet;
let payer: Wallet;
let payee: Wallet;
let payer2: Wallet;

beforeAll(async () => {
  chain = await setupChain();
  [, supplier, payer, payee, payer2] = chain.wallets;
});
afterAll(async () => {
  await chain?.close();
});
beforeEach(async () => {
  await chain.reset();
});

const account = (w: Wallet): Promise<ActingAccount> => actingAs(chain.config, w);
const nonce = (w: Wallet): Promise<number> => chain.provider.getTransactionCount(w.address, 'latest');

async function expectActionError(call: Promise<unknown>, message: RegExp): Promise<ChainActionError> {
  const err = await call.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ChainActionError);
  const e = err as ChainActionError;
  expect(isGridpipeError(e)).toBe(true);
  expect(e.badInput).toBe(false);
  expect(e.message).toMatch(message);
  expect(e.message).not.toContain('\n');
  return e;
}

async function signed(from: Wallet, to: Wallet, cumulativeAmount: bigint): Promise<SignedVoucher> {
  const v: Voucher = { payer: from.address, payee: to.address, cumulativeAmount, deadline: (await chain.now()) + 3600n };
  return { ...v, signature: await signVoucher(from, chain.config.paymentEscrow, chain.chainId, v) };
}

describe('approve-then-act', () => {
  it('stake approves exactly the amount when the allowance is short, then stakes', async () => {
    await mined(chain.c.token.connect(supplier).approve(chain.config.stakeRegistry, 0n));
    const before = await nonce(supplier);
    const r = await stake(await account(supplier), { amount: 150n });
    expect(r.approval?.status).toBe(1);
    expect(r.receipt.status).toBe(1);
    expect(await nonce(supplier)).toBe(before + 2);
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).staked).toBe(150n);
    expect(await chain.c.token.allowance(supplier.address, chain.config.stakeRegistry)).toBe(0n); // approved 150, spent 150
  });

  it('stake sends no approval when the allowance suffices', async () => {
    expect(await chain.c.token.allowance(supplier.address, chain.config.stakeRegistry)).toBe(MaxUint256);
    const before = await nonce(supplier);
    const r = await stake(await account(supplier), { amount: 150n });
    expect(r.approval).toBeUndefined();
    expect(await nonce(supplier)).toBe(before + 1);
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).staked).toBe(150n);
  });

  it('deposit approves when the allowance covers only part of the amount, and not when it covers all', async () => {
    await mined(chain.c.token.connect(payer).approve(chain.config.paymentEscrow, 50n));
    const short = await deposit(await account(payer), { amount: 100n });
    expect(short.approval?.status).toBe(1);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(100n);

    await mined(chain.c.token.connect(payer).approve(chain.config.paymentEscrow, 100n));
    const before = await nonce(payer);
    const enough = await deposit(await account(payer), { amount: 100n });
    expect(enough.approval).toBeUndefined();
    expect(await nonce(payer)).toBe(before + 1);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(200n);
  });
});

describe('stake lifecycle', () => {
  it('unstake starts unbonding; withdrawStake reverts until the delay has passed, then pays the stake back', async () => {
    const me = await account(supplier);
    await stake(me, { amount: 300n });
    await unstake(me, { amount: 200n });
    const s = await chain.c.stakeRegistry.stakeOf(supplier.address);
    expect([s.staked, s.unbonding]).toEqual([100n, 200n]);
    await expectActionError(withdrawStake(me), /^withdraw reverted: StillUnbonding\(\d+\)$/);
    await chain.increaseTime(TEST_PARAMS.unbondingDelay! + 1);
    const balance = await chain.c.token.balanceOf(supplier.address);
    await withdrawStake(me);
    expect(await chain.c.token.balanceOf(supplier.address)).toBe(balance + 200n);
  });

  it('unstake of more than is staked is a one-line REVERTED error', async () => {
    const e = await expectActionError(unstake(await account(supplier), { amount: 1n }), /^requestUnstake reverted: InsufficientStake\(1, 0\)$/);
    expect(e.code).toBe('REVERTED');
  });
});

describe('redeem', () => {
  it('redeems one voucher, refuses it a second time, and redeems several in one batch', async () => {
    await deposit(await account(payer), { amount: 1000n });
    await deposit(await account(payer2), { amount: 1000n });
    const sender = await account(payee);
    const before = await chain.c.token.balanceOf(payee.address);
    const v = await signed(payer, payee, 300n);
    await redeem(sender, { voucher: v });
    expect(await chain.c.token.balanceOf(payee.address)).toBe(before + 300n);
    await expectActionError(redeem(sender, { voucher: v }), /^redeem reverted: VoucherAlreadyRedeemed\(/);

    await redeemBatch(sender, { vouchers: [await signed(payer, payee, 500n), await signed(payer2, payee, 50n)] });
    expect(await chain.c.token.balanceOf(payee.address)).toBe(before + 550n);
    expect(await chain.c.paymentEscrow.redeemed(payer2.address, payee.address)).toBe(50n);
  });
});
