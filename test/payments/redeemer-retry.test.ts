/**
 * A failed automatic redemption is tried again on its own: on a real anvil, a supplier wallet without gas
 * cannot send its redemption; once it has gas, the redeemer redeems without any new step arriving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { Wallet } from 'ethers';
import { rpc } from '../../contracts/anvil.js';
import { attachPaymentEscrow } from '../../contracts/bindings.js';
import { signVoucher } from '../../contracts/eip712.js';
import { Redeemer } from '../../node/payments/redeemer.js';
import { VoucherBook } from '../../node/payments/voucher-book.js';
import { tempDir } from '../helpers/tmp.js';
import { eventually, startPaymentChain, TOKEN, type PaymentChain } from './helpers.js';

const tmp = tempDir();
let chain: PaymentChain;
let book: VoucherBook;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  book = await VoucherBook.open(path.join(tmp.dir, 'book'));
});

afterAll(async () => {
  await book?.close();
  await chain?.close();
  tmp.cleanup();
});

describe('automatic redemption', () => {
  it('retries a redemption that failed, with no new step to trigger it', async () => {
    const payer = chain.wallets[1];
    await chain.mint(payer.address, 10n);
    await chain.deposit(payer, 10n * TOKEN);
    // A fresh supplier wallet: no ETH, so its redemption transaction cannot be sent.
    const supplier = Wallet.createRandom().connect(chain.provider);
    const voucher = { payer: payer.address, payee: supplier.address, cumulativeAmount: 3n * TOKEN, deadline: BigInt(Math.floor(Date.now() / 1000) + 86_400) };
    const signature = await signVoucher(payer, chain.config.paymentEscrow, chain.config.chainId, voucher);
    await book.save({ payer: payer.address, charged: voucher.cumulativeAmount, redeemed: 0n, best: { ...voucher, signature } });
    const redeemer = new Redeemer({
      book, escrow: attachPaymentEscrow(chain.config.paymentEscrow, supplier), payee: supplier.address, threshold: 1n,
      chainTime: async () => BigInt((await chain.provider.getBlock('latest'))!.timestamp),
    });
    try {
      redeemer.maybeRedeem();
      await redeemer.idle();
      expect(await chain.contracts.paymentEscrow.redeemed(payer.address, supplier.address)).toBe(0n);
      await rpc(chain.node.rpcUrl, 'anvil_setBalance', [supplier.address, '0xde0b6b3a7640000']); // 1 ETH for gas
      await eventually(async () => (await chain.contracts.paymentEscrow.redeemed(payer.address, supplier.address)) === voucher.cumulativeAmount, 'the redeemer to retry on its own', 30_000);
      expect(await chain.contracts.token.balanceOf(supplier.address)).toBe(voucher.cumulativeAmount);
      await eventually(async () => book.get(payer.address).redeemed === voucher.cumulativeAmount, 'the book to note the redemption', 30_000);
    } finally {
      redeemer.stop();
    }
  });
});
