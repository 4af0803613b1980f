/**
 * The voucher book (node/payments/voucher-book.ts) at each of its rules, written so that a changed line is seen
 * (issue 21, mutation testing), on real LevelDB: accounts round-trip with their best voucher, the book keeps its
 * own copy, a write without fsync still persists, a memory-only change never claims a voucher or a redemption
 * the disk lacks, a corrupt entry or a held lock is refused by name, a failed batch fails its writers (and the
 * next write still runs), and accounts are listed in payer order. test/payments/voucher-book.test.ts covers
 * concurrency and group commit.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { VoucherBook, VoucherBookError, voucherBookDir, type PayerAccount } from '../../node/payments/voucher-book.js';
import type { SignedVoucher } from '../../contracts/eip712.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const A = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const B = '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC';
const C = '0x90F79bf6EB2c4f870365E785982E1f101E93b906';
let n = 0;
const dir = (): string => path.join(tmp.dir, `book-${n++}`);

function voucher(amount: bigint): SignedVoucher {
  return { payer: A, payee: B, cumulativeAmount: amount, deadline: 1_900_000_000n, signature: `0x${'ab'.repeat(65)}` };
}

describe('voucher book, rule by rule', () => {
  it('lives in payments/vouchers; an unknown payer reads as a fresh empty account, not stored', async () => {
    expect(voucherBookDir('/data')).toBe(path.join('/data', 'payments', 'vouchers'));
    const d = dir();
    const book = await VoucherBook.open(d);
    expect(book.get(A)).toEqual({ payer: A, charged: 0n, redeemed: 0n });
    expect(book.all()).toEqual([]);
    await book.close();
  });

  it('round-trips an account with its best voucher through the disk, and lists accounts in payer order', async () => {
    const d = dir();
    const book = await VoucherBook.open(d);
    const account: PayerAccount = { payer: A, charged: 12345678901234567890n, redeemed: 7n, best: voucher(99n) };
    await book.save(account);
    await book.save({ payer: C, charged: 1n, redeemed: 0n });
    await book.save({ payer: B, charged: 2n, redeemed: 0n });
    expect(book.syncedBatches).toBe(3);
    // saved A, C, B: listed in payer order, not as saved
    expect(book.all().map((a) => a.payer)).toEqual([A, B, C].sort((x, y) => x.localeCompare(y)));
    await book.close();
    const again = await VoucherBook.open(d);
    expect(again.get(A)).toEqual(account);
    expect(again.all().map((a) => a.payer)).toEqual([A, B, C].sort((x, y) => x.localeCompare(y)));
    expect(again.get(B)).toEqual({ payer: B, charged: 2n, redeemed: 0n, best: undefined });
    await again.close();
  });

  it('keeps its own copy: changing the saved object (or its voucher) afterwards changes nothing', async () => {
    const book = await VoucherBook.open(dir());
    const account: PayerAccount = { payer: A, charged: 5n, redeemed: 0n, best: voucher(5n) };
    await book.save(account);
    account.charged = 500n;
    account.best!.cumulativeAmount = 500n;
    expect(book.get(A).charged).toBe(5n);
    expect(book.get(A).best!.cumulativeAmount).toBe(5n);
    await book.close();
  });

  it('a write without fsync is not a synced batch, yet is on disk after a clean close', async () => {
    const d = dir();
    const book = await VoucherBook.open(d);
    await book.save({ payer: A, charged: 3n, redeemed: 0n }, false);
    expect(book.syncedBatches).toBe(0);
    expect(book.get(A).charged).toBe(3n);
    await book.close();
    const again = await VoucherBook.open(d);
    expect(again.get(A).charged).toBe(3n);
    await again.close();
  });

  it('a memory-only change keeps the stored voucher and redemption, and is lost without a later write', async () => {
    const d = dir();
    const book = await VoucherBook.open(d);
    await book.save({ payer: A, charged: 1n, redeemed: 4n, best: voucher(10n) });
    await book.save({ payer: A, charged: 9n, redeemed: 100n, best: voucher(1000n) }, 'memory');
    expect(book.get(A)).toEqual({ payer: A, charged: 9n, redeemed: 4n, best: voucher(10n) });
    // with nothing stored yet, memory takes what it is given
    await book.save({ payer: B, charged: 2n, redeemed: 3n, best: voucher(20n) }, 'memory');
    expect(book.get(B)).toEqual({ payer: B, charged: 2n, redeemed: 3n, best: voucher(20n) });
    expect(book.syncedBatches).toBe(1);
    await book.close();
    const again = await VoucherBook.open(d);
    expect(again.get(A).charged).toBe(1n);
    expect(again.get(B)).toEqual({ payer: B, charged: 0n, redeemed: 0n });
    await again.close();
  });

  it('update hands over the current account and returns what its function returns', async () => {
    const book = await VoucherBook.open(dir());
    await book.save({ payer: A, charged: 2n, redeemed: 0n });
    const seen = await book.update(A, async (account, save) => {
      await save({ ...account, charged: account.charged * 10n });
      return account.charged;
    });
    expect(seen).toBe(2n);
    expect(book.get(A).charged).toBe(20n);
    expect(book.syncedBatches).toBe(2);
    await book.close();
  });

  it('refuses a corrupt entry as CORRUPT naming it, and a book another holder has open as LOCKED', async () => {
    const d = dir();
    const raw = new ClassicLevel<string, string>(d);
    await raw.open();
    await raw.put(`payer/${A}`, '{not json');
    await raw.close();
    let err: unknown;
    try { await VoucherBook.open(d); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(VoucherBookError);
    expect((err as VoucherBookError).code).toBe('CORRUPT');
    expect((err as Error).message).toMatch(new RegExp(`^voucher book entry payer/${A} cannot be read: `));
    expect((err as Error).cause).toBeInstanceOf(SyntaxError);
    expect((err as Error).name).toBe('VoucherBookError');
    // the refused book was closed: it opens again once the entry is fixed
    const fix = new ClassicLevel<string, string>(d);
    await fix.open();
    await fix.put(`payer/${A}`, JSON.stringify({ payer: A, charged: '1', redeemed: '0' }));
    await fix.put('other/key', 'not an account');
    await fix.close();
    const book = await VoucherBook.open(d);
    expect(book.all()).toEqual([{ payer: A, charged: 1n, redeemed: 0n, best: undefined }]);
    let locked: unknown;
    try { await VoucherBook.open(d); } catch (e) { locked = e; }
    expect(locked).toBeInstanceOf(VoucherBookError);
    expect((locked as VoucherBookError).code).toBe('LOCKED');
    expect((locked as Error).message).toBe(`the voucher book at ${d} is in use by another process (a running supplier?)`);
    expect((locked as Error).cause).toBeDefined();
    await book.close();
  });

  it('a batch that fails rejects its writers and leaves memory as it was; the book still answers', async () => {
    const book = await VoucherBook.open(dir());
    await book.save({ payer: A, charged: 1n, redeemed: 0n });
    await book.close();
    await expect(book.save({ payer: A, charged: 2n, redeemed: 0n })).rejects.toThrow();
    await expect(book.save({ payer: B, charged: 2n, redeemed: 0n })).rejects.toThrow();
    expect(book.get(A).charged).toBe(1n);
    expect(book.get(B)).toEqual({ payer: B, charged: 0n, redeemed: 0n });
  });
});
