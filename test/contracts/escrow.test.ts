/** PaymentEscrow against a real anvil: deposits, EIP-712 vouchers, redemption, batches, withdrawals. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Signature, Wallet, concat, toBeHex } from 'ethers';
import {
  deployPaymentEscrow,
  recoverVoucherSigner,
  signVoucher,
  verifyVoucher,
  voucherDigest,
  type Voucher,
} from '../../contracts/index.js';
import { eventsOf, expectRevert, mined, setupChain, type Chain } from './helpers.js';

const FAR = 10n ** 12n; // a deadline far in the future

let chain: Chain;
let payer: Wallet;
let payer2: Wallet;
let payee: Wallet;
let payee2: Wallet;
let stranger: Wallet;

beforeAll(async () => {
  chain = await setupChain();
  [, payer, payer2, payee, payee2, stranger] = chain.wallets;
});
afterAll(async () => {
  await chain?.close();
});
beforeEach(async () => {
  await chain.reset();
});

const escrowAs = (w: Wallet) => chain.c.paymentEscrow.connect(w);
const voucher = (p: Wallet, q: Wallet, cumulativeAmount: bigint, deadline = FAR): Voucher => ({ payer: p.address, payee: q.address, cumulativeAmount, deadline });
const sign = (w: Wallet, v: Voucher) => signVoucher(w, chain.config.paymentEscrow, chain.chainId, v);
const tokenBalance = (w: Wallet | string) => chain.c.token.balanceOf(typeof w === 'string' ? w : w.address);

describe('EIP-712 helpers', () => {
  it('compute the digest the contract computes, and verify signatures off chain', async () => {
    const v = voucher(payer, payee, 123n);
    const digest = voucherDigest(chain.config.paymentEscrow, chain.chainId, v);
    expect(await chain.c.paymentEscrow.hashVoucher(v)).toBe(digest);
    const sig = await sign(payer, v);
    expect(verifyVoucher(chain.config.paymentEscrow, chain.chainId, v, sig)).toBe(true);
    expect(recoverVoucherSigner(chain.config.paymentEscrow, chain.chainId, v, sig)).toBe(payer.address);
  });

  it('reject the wrong signer, another chain, another contract, other amounts, compact and high-s signatures', async () => {
    const v = voucher(payer, payee, 123n);
    const esc = chain.config.paymentEscrow;
    expect(verifyVoucher(esc, chain.chainId, v, await sign(stranger, v))).toBe(false);
    expect(verifyVoucher(esc, chain.chainId, v, await signVoucher(payer, esc, 1, v))).toBe(false);
    expect(verifyVoucher(esc, chain.chainId, v, await signVoucher(payer, chain.config.stakeRegistry, chain.chainId, v))).toBe(false);
    const sig = await sign(payer, v);
    expect(verifyVoucher(esc, chain.chainId, { ...v, cumulativeAmount: 124n }, sig)).toBe(false);
    expect(verifyVoucher(esc, chain.chainId, v, Signature.from(sig).compactSerialized)).toBe(false);
    expect(verifyVoucher(esc, chain.chainId, v, highS(sig))).toBe(false);
    expect(verifyVoucher(esc, chain.chainId, v, '0x1234')).toBe(false);
  });
});

describe('deposit', () => {
  it('credits the payer and takes the tokens', async () => {
    const before = await tokenBalance(payer);
    const receipt = await mined(escrowAs(payer).deposit(1000n));
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(1000n);
    expect(await tokenBalance(payer)).toBe(before - 1000n);
    expect(await tokenBalance(chain.config.paymentEscrow)).toBe(1000n);
    expect(eventsOf(receipt, chain.c.paymentEscrow, 'Deposited')).toEqual([{ payer: payer.address, from: payer.address, amount: 1000n, balance: 1000n }]);
  });

  it('depositFor credits another payer', async () => {
    await mined(escrowAs(stranger).depositFor(payer.address, 70n));
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(70n);
    expect(await chain.c.paymentEscrow.balanceOf(stranger.address)).toBe(0n);
  });

  it('reverts on zero amount, zero payer, and without allowance', async () => {
    await expectRevert(escrowAs(payer).deposit(0n), 'ZeroAmount');
    await expectRevert(escrowAs(payer).depositFor('0x0000000000000000000000000000000000000000', 1n), 'ZeroAddress');
    await mined(chain.c.token.connect(payer).approve(chain.config.paymentEscrow, 0n));
    await expectRevert(escrowAs(payer).deposit(1n), 'ERC20InsufficientAllowance');
  });
});

describe('redeem', () => {
  beforeEach(async () => {
    await mined(escrowAs(payer).deposit(1000n));
  });

  it('pays the cumulative amount minus what was redeemed, to the payee, whoever submits', async () => {
    const v1 = voucher(payer, payee, 100n);
    const before = await tokenBalance(payee);
    const r1 = await mined(escrowAs(payee).redeem(v1, await sign(payer, v1)));
    expect(eventsOf(r1, chain.c.paymentEscrow, 'Redeemed')).toEqual([{ payer: payer.address, payee: payee.address, amount: 100n, cumulativeAmount: 100n }]);
    const v2 = voucher(payer, payee, 250n);
    await mined(escrowAs(stranger).redeem(v2, await sign(payer, v2))); // a relayer submits; the payee is paid
    expect(await tokenBalance(payee)).toBe(before + 250n);
    expect(await chain.c.paymentEscrow.redeemed(payer.address, payee.address)).toBe(250n);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(750n);
    expect(await tokenBalance(chain.config.paymentEscrow)).toBe(750n);
  });

  it('accepts a voucher up to and including its deadline second', async () => {
    const now = await chain.now();
    const v = voucher(payer, payee, 10n, now + 100n);
    const sig = await sign(payer, v);
    await chain.increaseTime(50);
    await mined(escrowAs(payee).redeem(v, sig));
  });

  it('reverts on a replayed voucher and on an older (lower) one', async () => {
    const v1 = voucher(payer, payee, 100n);
    const s1 = await sign(payer, v1);
    const v2 = voucher(payer, payee, 300n);
    const s2 = await sign(payer, v2);
    await mined(escrowAs(payee).redeem(v2, s2));
    await expectRevert(escrowAs(payee).redeem(v2, s2), 'VoucherAlreadyRedeemed');
    await expectRevert(escrowAs(payee).redeem(v1, s1), 'VoucherAlreadyRedeemed');
    await expectRevert(escrowAs(payee).redeem(voucher(payer, payee, 0n), await sign(payer, voucher(payer, payee, 0n))), 'VoucherAlreadyRedeemed');
  });

  it('reverts on a wrong signer, a tampered amount or payee, and a malformed signature', async () => {
    const v = voucher(payer, payee, 100n);
    await expectRevert(escrowAs(payee).redeem(v, await sign(stranger, v)), 'InvalidSignature');
    await expectRevert(escrowAs(payee).redeem(v, await sign(payee, v)), 'InvalidSignature');
    const sig = await sign(payer, v);
    await expectRevert(escrowAs(payee).redeem({ ...v, cumulativeAmount: 101n }, sig), 'InvalidSignature');
    await expectRevert(escrowAs(payee).redeem({ ...v, payee: payee2.address }, sig), 'InvalidSignature');
    await expectRevert(escrowAs(payee).redeem(v, highS(sig)), 'InvalidSignature');
    await expectRevert(escrowAs(payee).redeem(v, '0x00'), 'InvalidSignature');
  });

  it('reverts on a voucher signed for another chain id', async () => {
    const v = voucher(payer, payee, 100n);
    await expectRevert(escrowAs(payee).redeem(v, await signVoucher(payer, chain.config.paymentEscrow, chain.chainId + 1, v)), 'InvalidSignature');
  });

  it('reverts on a voucher signed for another escrow contract', async () => {
    const other = await deployPaymentEscrow(chain.deployer, { token: chain.config.token, withdrawalDelay: 500 });
    const otherAddress = await other.getAddress();
    await mined(chain.c.token.connect(payer).approve(otherAddress, 1000n));
    await mined(other.connect(payer).deposit(1000n));
    const v = voucher(payer, payee, 100n);
    const forOther = await signVoucher(payer, otherAddress, chain.chainId, v);
    await expectRevert(escrowAs(payee).redeem(v, forOther), 'InvalidSignature');
    await mined(other.connect(payee).redeem(v, forOther)); // where it belongs it pays
    await expectRevert(other.connect(payee).redeem(v, await sign(payer, v)), 'VoucherAlreadyRedeemed');
    await expectRevert(other.connect(payee).redeem(voucher(payer, payee, 200n), await sign(payer, voucher(payer, payee, 200n))), 'InvalidSignature');
  });

  it('reverts on an expired voucher', async () => {
    const now = await chain.now();
    const v = voucher(payer, payee, 100n, now + 10n);
    const sig = await sign(payer, v);
    await chain.increaseTime(100);
    await expectRevert(escrowAs(payee).redeem(v, sig), 'VoucherExpired');
  });

  it('reverts when the escrow cannot cover the voucher, and pays once it can', async () => {
    const v = voucher(payer, payee, 1500n);
    const sig = await sign(payer, v);
    await expectRevert(escrowAs(payee).redeem(v, sig), 'InsufficientEscrow');
    await mined(escrowAs(payer).deposit(500n));
    await mined(escrowAs(payee).redeem(v, sig));
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(0n);
  });

  it('reverts on a zero payee', async () => {
    const v: Voucher = { payer: payer.address, payee: '0x0000000000000000000000000000000000000000', cumulativeAmount: 1n, deadline: FAR };
    await expectRevert(escrowAs(payee).redeem(v, await sign(payer, v)), 'ZeroAddress');
  });
});

describe('redeemBatch', () => {
  beforeEach(async () => {
    await mined(escrowAs(payer).deposit(1000n));
    await mined(escrowAs(payer2).deposit(1000n));
  });

  it('redeems vouchers of several payers and payees in one transaction', async () => {
    const vs = [voucher(payer, payee, 10n), voucher(payer2, payee, 20n), voucher(payer, payee2, 30n), voucher(payer, payee, 15n)];
    const sigs = await Promise.all(vs.map((v) => sign(v.payer === payer.address ? payer : payer2, v)));
    const [b1, b2] = [await tokenBalance(payee), await tokenBalance(payee2)];
    const receipt = await mined(escrowAs(payee).redeemBatch(vs, sigs));
    expect(eventsOf(receipt, chain.c.paymentEscrow, 'Redeemed').map((e) => e.amount)).toEqual([10n, 20n, 30n, 5n]);
    expect(await tokenBalance(payee)).toBe(b1 + 35n);
    expect(await tokenBalance(payee2)).toBe(b2 + 30n);
    expect(await chain.c.paymentEscrow.redeemed(payer.address, payee.address)).toBe(15n);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(1000n - 45n);
    expect(await chain.c.paymentEscrow.balanceOf(payer2.address)).toBe(980n);
    expect(await tokenBalance(chain.config.paymentEscrow)).toBe(2000n - 65n);
  });

  it('is all or nothing: one bad voucher (duplicate, expired, wrong signer) reverts the batch', async () => {
    const good = voucher(payer, payee, 10n);
    const goodSig = await sign(payer, good);
    await expectRevert(escrowAs(payee).redeemBatch([good, good], [goodSig, goodSig]), 'VoucherAlreadyRedeemed');
    const now = await chain.now();
    const expired = voucher(payer2, payee, 5n, now - 1n);
    await expectRevert(escrowAs(payee).redeemBatch([good, expired], [goodSig, await sign(payer2, expired)]), 'VoucherExpired');
    const forged = voucher(payer2, payee, 5n);
    await expectRevert(escrowAs(payee).redeemBatch([good, forged], [goodSig, await sign(payer, forged)]), 'InvalidSignature');
    expect(await chain.c.paymentEscrow.redeemed(payer.address, payee.address)).toBe(0n);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(1000n);
  });

  it('reverts on mismatched lengths; an empty batch pays nothing', async () => {
    const v = voucher(payer, payee, 10n);
    await expectRevert(escrowAs(payee).redeemBatch([v], []), 'LengthMismatch');
    expect(await escrowAs(payee).redeemBatch.staticCall([], [])).toBe(0n);
  });
});

describe('withdrawal', () => {
  beforeEach(async () => {
    await mined(escrowAs(payer).deposit(1000n));
  });

  it('pays the payer after the delay', async () => {
    const receipt = await mined(escrowAs(payer).requestWithdrawal(400n));
    const [ev] = eventsOf(receipt, chain.c.paymentEscrow, 'WithdrawalRequested');
    const block = await chain.provider.getBlock(receipt.blockNumber);
    expect(ev).toEqual({ payer: payer.address, amount: 400n, withdrawableAt: BigInt(block!.timestamp) + 500n });
    const req = await chain.c.paymentEscrow.withdrawalRequest(payer.address);
    expect([req.amount, req.withdrawableAt]).toEqual([400n, BigInt(block!.timestamp) + 500n]);
    await chain.increaseTime(600);
    const before = await tokenBalance(payer);
    const r = await mined(escrowAs(payer).withdraw());
    expect(eventsOf(r, chain.c.paymentEscrow, 'Withdrawn')).toEqual([{ payer: payer.address, amount: 400n, requested: 400n }]);
    expect(await tokenBalance(payer)).toBe(before + 400n);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(600n);
    await expectRevert(escrowAs(payer).withdraw(), 'NoWithdrawalRequested');
  });

  it('reverts before the delay, without a request, and above the balance', async () => {
    await expectRevert(escrowAs(payer).withdraw(), 'NoWithdrawalRequested');
    await expectRevert(escrowAs(payer).requestWithdrawal(1001n), 'InsufficientEscrow');
    await mined(escrowAs(payer).requestWithdrawal(400n));
    await expectRevert(escrowAs(payer).withdraw(), 'WithdrawalNotReady');
    await chain.increaseTime(200);
    await expectRevert(escrowAs(payer).withdraw(), 'WithdrawalNotReady');
  });

  it('lets payees redeem during the delay: redemptions come first, the withdrawal gets what is left', async () => {
    await mined(escrowAs(payer).requestWithdrawal(1000n));
    const v = voucher(payer, payee, 700n);
    await mined(escrowAs(payee).redeem(v, await sign(payer, v)));
    await chain.increaseTime(600);
    const v2 = voucher(payer, payee2, 100n); // after the delay, before withdraw(): still first
    await mined(escrowAs(payee2).redeem(v2, await sign(payer, v2)));
    const before = await tokenBalance(payer);
    const r = await mined(escrowAs(payer).withdraw());
    expect(eventsOf(r, chain.c.paymentEscrow, 'Withdrawn')).toEqual([{ payer: payer.address, amount: 200n, requested: 1000n }]);
    expect(await tokenBalance(payer)).toBe(before + 200n);
    expect(await chain.c.paymentEscrow.balanceOf(payer.address)).toBe(0n);
    expect(await tokenBalance(chain.config.paymentEscrow)).toBe(0n);
  });

  it('a new request restarts the clock; zero cancels', async () => {
    await mined(escrowAs(payer).requestWithdrawal(100n));
    await chain.increaseTime(400);
    await mined(escrowAs(payer).requestWithdrawal(200n));
    await chain.increaseTime(200);
    await expectRevert(escrowAs(payer).withdraw(), 'WithdrawalNotReady');
    await mined(escrowAs(payer).requestWithdrawal(0n));
    await chain.increaseTime(1000);
    await expectRevert(escrowAs(payer).withdraw(), 'NoWithdrawalRequested');
  });

  it('withdrawing everything leaves later vouchers unredeemable', async () => {
    const v = voucher(payer, payee, 100n);
    const sig = await sign(payer, v);
    await mined(escrowAs(payer).requestWithdrawal(1000n));
    await chain.increaseTime(600);
    await mined(escrowAs(payer).withdraw());
    await expectRevert(escrowAs(payee).redeem(v, sig), 'InsufficientEscrow');
  });
});

/** The same signature with s replaced by n - s (valid for plain ecrecover, rejected by OpenZeppelin's ECDSA). */
function highS(sig: string): string {
  const s = Signature.from(sig);
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
  const flippedV = s.v === 27 ? 28 : 27;
  return concat([s.r, toBeHex(n - BigInt(s.s), 32), toBeHex(flippedV, 1)]);
}
