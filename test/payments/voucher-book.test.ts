/**
 * The voucher book serializes changes to one payer's account: the gate (charges, vouchers) and the redeemer
 * (what was redeemed) write concurrently, and neither may undo the other's change; durable writes arriving
 * together share one fsync, and per-step charges stay in memory until the next write. Real LevelDB on disk.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { VoucherBook } from '../../node/payments/voucher-book.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAYER = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const OTHER = '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC';
const THIRD = '0x90F79bf6EB2c4f870365E785982E1f101E93b906';

describe('voucher book', () => {
  it('keeps both of two concurrent changes to one account, on disk too', async () => {
    const dir = path.join(tmp.dir, 'book');
    const book = await VoucherBook.open(dir);
    await book.save({ payer: PAYER, charged: 10n, redeemed: 0n });
    // A slow change (the gate awaits an escrow read between reading and writing) and a quick one (a redemption).
    const slow = book.update(PAYER, async (account, save) => {
      await new Promise((r) => setTimeout(r, 50));
      await save({ ...account, charged: account.charged + 5n });
    });
    const quick = book.update(PAYER, (account, save) => save({ ...account, redeemed: 7n }));
    await Promise.all([slow, quick]);
    expect(book.get(PAYER)).toMatchObject({ charged: 15n, redeemed: 7n });
    await book.close();
    const again = await VoucherBook.open(dir);
    expect(again.get(PAYER)).toMatchObject({ charged: 15n, redeemed: 7n });
    await again.close();
  });

  it('durable writes that arrive together share one fsync (group commit); per-step charges stay in memory until the next write', async () => {
    const dir = path.join(tmp.dir, 'book-group');
    const book = await VoucherBook.open(dir);
    const payers = [PAYER, OTHER, THIRD];
    const before = book.syncedBatches;
    await Promise.all(payers.map((payer, i) => book.save({ payer, charged: BigInt(i + 1), redeemed: 0n })));
    expect(book.syncedBatches - before).toBe(1);
    // A charge counted in memory: seen at once, not written by itself.
    await book.update(PAYER, (account, save) => save({ ...account, charged: 100n }, 'memory'));
    expect(book.get(PAYER).charged).toBe(100n);
    expect(book.syncedBatches - before).toBe(1);
    await book.close();
    let again = await VoucherBook.open(dir);
    expect(payers.map((p) => again.get(p).charged)).toEqual([1n, 2n, 3n]);
    // The account's next durable write carries the charges counted in memory.
    await again.update(PAYER, (account, save) => save({ ...account, charged: account.charged + 5n }, 'memory'));
    await again.update(PAYER, (account, save) => save({ ...account, redeemed: 1n }));
    await again.close();
    again = await VoucherBook.open(dir);
    expect(again.get(PAYER)).toMatchObject({ charged: 6n, redeemed: 1n });
    await again.close();
  });
});
