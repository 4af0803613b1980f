/**
 * The Chain view's reader against a real anvil with the grid deployed: stakes, an unstake request, a slash,
 * deposits and a withdrawal request come back as decoded events in block order (newest first), read
 * incrementally (a second read sees only what is new and keeps the old), with each supplier's stake and each
 * payer's escrow balance as the chain has them now.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actingAs, unstake } from '../../contracts/index.js';
import { ChainReader } from '../../explorer/chain-reader.js';
import { tempDir } from '../helpers/tmp.js';
import { startPaymentChain, TOKEN, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-explorer-chain-');
let chain: PaymentChain;
let reader: ChainReader;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  reader = new ChainReader(chain.config, { minRefreshMs: 0 });
});

afterAll(async () => {
  reader?.close();
  await chain?.close();
  tmp.cleanup();
});

describe('ChainReader', () => {
  it('decodes stakes, unstakes, slashes, deposits and withdrawals; stakes and escrow balances as they are now', async () => {
    const [owner, s1, s2, payer] = chain.wallets;
    for (const w of [s1, s2, payer]) await chain.mint(w.address, 1000n);
    await chain.stake(s1, 200n * TOKEN);
    await chain.deposit(payer, 50n * TOKEN);
    const first = await reader.view();
    expect(first.events.map((e) => [e.kind, e.account, e.amount])).toEqual([
      ['deposited', payer.address, (50n * TOKEN).toString()], ['staked', s1.address, (200n * TOKEN).toString()],
    ]);

    await chain.stake(s2, 150n * TOKEN);
    await unstake(await actingAs(chain.config, s2), { amount: 20n * TOKEN });
    // The dispute manager is the slasher; the owner takes the role back to slash directly.
    const registry = chain.contracts.stakeRegistry.connect(owner);
    await (await registry.setSlasher(owner.address)).wait();
    await (await registry.slash(s1.address, 30n * TOKEN, owner.address)).wait();
    await (await chain.contracts.paymentEscrow.connect(payer).requestWithdrawal(10n * TOKEN)).wait();

    const view = await reader.view();
    expect(view.configured).toBe(true);
    expect(view.events.map((e) => e.kind)).toEqual(['withdrawal', 'slashed', 'unstake', 'staked', 'deposited', 'staked']);
    expect(view.events.find((e) => e.kind === 'slashed')).toMatchObject({ account: s1.address, amount: (30n * TOKEN).toString() });
    for (const e of view.events) expect(e.at).toBeGreaterThan(0);
    expect(view.stakes).toEqual(expect.arrayContaining([
      { address: s1.address, staked: (170n * TOKEN).toString(), unbonding: '0' },
      { address: s2.address, staked: (130n * TOKEN).toString(), unbonding: (20n * TOKEN).toString() },
    ]));
    expect(view.escrow).toEqual([{ payer: payer.address, balance: (50n * TOKEN).toString() }]);
    expect(await reader.stakeOf(s2.address)).toBe((130n * TOKEN).toString());
    expect(view.earnings).toEqual([]);
  });
});
