/**
 * CreditLimits (node/payments/credit.ts): credit is attributed to the peer that asked for it, bounded per
 * peer and in total, and released as vouchers pay for the work (whichever peer's steps they follow).
 */
import { describe, expect, it } from 'vitest';
import { CreditLimits } from '../../node/payments/credit.js';

describe('CreditLimits', () => {
  it('bounds the credit one peer gets over all the payers it names', () => {
    const c = new CreditLimits({ perPeer: 100n, total: 1000n });
    expect(c.reserve('0xA', 'p1', 60n)).toBeUndefined();
    expect(c.reserve('0xB', 'p1', 50n)?.message).toMatch(/per peer/);
    expect(c.heldByPeer('p1')).toBe(60n);
    expect(c.reserve('0xB', 'p2', 50n)).toBeUndefined();
    expect(c.total).toBe(110n);
  });

  it('bounds the credit over all peers', () => {
    const c = new CreditLimits({ perPeer: 100n, total: 150n });
    expect(c.reserve('0xA', 'p1', 100n)).toBeUndefined();
    expect(c.reserve('0xB', 'p2', 60n)?.message).toMatch(/total limit of 150/);
    expect(c.reserve('0xB', 'p2', 50n)).toBeUndefined();
    expect(c.total).toBe(150n);
  });

  it('only the growth of a payer\'s unpaid work is attributed, and payment releases it', () => {
    const c = new CreditLimits({ perPeer: 100n, total: 1000n });
    expect(c.reserve('0xA', 'p1', 40n)).toBeUndefined();
    expect(c.reserve('0xA', 'p2', 70n)).toBeUndefined(); // p2 adds 30
    expect([c.heldByPeer('p1'), c.heldByPeer('p2'), c.held('0xA')]).toEqual([40n, 30n, 70n]);
    c.shrink('0xA', 50n); // a voucher paid 20 of it
    expect(c.held('0xA')).toBe(50n);
    expect(c.heldByPeer('p1') + c.heldByPeer('p2')).toBe(50n);
    c.shrink('0xA', -5n); // paid in advance: nothing held
    expect([c.held('0xA'), c.heldByPeer('p1'), c.heldByPeer('p2'), c.total]).toEqual([0n, 0n, 0n, 0n]);
    expect(c.reserve('0xB', 'p1', 100n)).toBeUndefined(); // p1's credit is free again
  });
});
