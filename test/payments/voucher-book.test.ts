/**
 * The voucher book serializes changes to one payer's account: the gate (charges, vouchers) and the redeemer
 * (what was redeemed) write concurrently, and neither may undo the other's change. Real LevelDB on disk.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { VoucherBook } from '../../node/payments/voucher-book.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAYER = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

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
});
