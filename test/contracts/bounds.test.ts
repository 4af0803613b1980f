/**
 * Issue 21's on-chain bounds against a real anvil: `challengeWindow ≤ unbondingDelay` holds through every
 * setter of both contracts (not only at deploy), and a receipt dated in the future cannot be disputed (a
 * supplier cannot stretch its window past the unbonding delay).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Wallet } from 'ethers';
import { cidToBytes32, signReceipt, type Receipt } from '../../contracts/index.js';
import { CHALLENGE_WINDOW, TEST_PARAMS, expectRevert, mined, randomHash, setupChain, type Chain } from './helpers.js';

let chain: Chain;
let supplier: Wallet;
let challenger: Wallet;
const DELAY = BigInt(TEST_PARAMS.unbondingDelay!);

beforeAll(async () => {
  chain = await setupChain();
  [, supplier, challenger] = chain.wallets;
  await mined(chain.c.stakeRegistry.connect(supplier).stake(200n));
  await chain.checkpoint();
});
afterAll(async () => {
  await chain?.close();
});
beforeEach(async () => {
  await chain.reset();
});

const dm = () => chain.c.disputeManager;
const registry = () => chain.c.stakeRegistry;
const treasury = () => chain.treasury.address;

describe('challenge window and unbonding delay', () => {
  it('DisputeManager.setParameters refuses a window longer than the registry\'s unbonding delay, takes one equal to it', async () => {
    await expectRevert(dm().setParameters(treasury(), DELAY + 1n, 1n, 0n, 0n), 'ChallengeWindowTooLong');
    await mined(dm().setParameters(treasury(), DELAY, 1n, 0n, 0n));
    expect(await dm().challengeWindow()).toBe(DELAY);
  });

  it('StakeRegistry.setUnbondingDelay refuses a delay shorter than its slasher\'s challenge window', async () => {
    expect(await registry().slasher()).toBe(chain.config.disputeManager);
    await expectRevert(registry().setUnbondingDelay(BigInt(CHALLENGE_WINDOW) - 1n), 'ChallengeWindowTooLong');
    await mined(registry().setUnbondingDelay(BigInt(CHALLENGE_WINDOW)));
    expect(await registry().unbondingDelay()).toBe(BigInt(CHALLENGE_WINDOW));
    // and then the manager cannot lengthen its window past it
    await expectRevert(dm().setParameters(treasury(), BigInt(CHALLENGE_WINDOW) + 1n, 1n, 0n, 0n), 'ChallengeWindowTooLong');
  });

  it('StakeRegistry.setSlasher refuses a manager whose window exceeds the delay; an account slasher has no window', async () => {
    await mined(registry().setSlasher(chain.deployer.address));
    await mined(registry().setUnbondingDelay(10n));
    await expectRevert(registry().setSlasher(chain.config.disputeManager!), 'ChallengeWindowTooLong');
    await mined(registry().setUnbondingDelay(DELAY));
    await mined(registry().setSlasher(chain.config.disputeManager!));
  });
});

describe('receipt time', () => {
  async function receiptAt(issuedAt: bigint): Promise<{ r: Receipt; sig: string }> {
    const r: Receipt = {
      supplier: supplier.address, fragmentCid: cidToBytes32('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'),
      inputHash: randomHash(), outputHash: randomHash(), sessionId: randomHash(), step: 1n, issuedAt,
    };
    return { r, sig: await signReceipt(supplier, chain.config.disputeManager!, chain.chainId, r) };
  }

  it('a receipt dated more than MAX_ISSUED_AHEAD in the future cannot be disputed; one within the skew can', async () => {
    const ahead = await dm().MAX_ISSUED_AHEAD();
    expect(ahead).toBe(300n);
    const future = await receiptAt((await chain.now()) + ahead + 60n);
    await expectRevert(dm().connect(challenger).openDispute(future.r, future.sig, randomHash()), 'ReceiptFromTheFuture');
    const skewed = await receiptAt((await chain.now()) + 60n);
    await mined(dm().connect(challenger).openDispute(skewed.r, skewed.sig, randomHash()));
  });
});
