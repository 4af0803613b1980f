/** DisputeManager against a real anvil: signed receipts, disputes, arbitration, slashing through the registry. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Wallet } from 'ethers';
import { cidToBytes32, DisputeStatus, receiptDigest, signReceipt, verifyReceipt, type Receipt } from '../../contracts/index.js';
import { CHALLENGE_WINDOW, DISPUTE_BOND, REWARD_BPS, SLASH_AMOUNT, eventsOf, expectRevert, mined, randomHash, setupChain, type Chain } from './helpers.js';

let chain: Chain;
let supplier: Wallet;
let challenger: Wallet;
let stranger: Wallet;

beforeAll(async () => {
  chain = await setupChain();
  [, supplier, challenger, stranger] = chain.wallets;
  await mined(chain.c.stakeRegistry.connect(supplier).stake(200n));
  await chain.checkpoint();
});
afterAll(async () => {
  await chain?.close();
});
beforeEach(async () => {
  await chain.reset();
});

const dm = (w?: Wallet) => (w ? chain.c.disputeManager.connect(w) : chain.c.disputeManager);
const dmAddress = () => chain.config.disputeManager!;
const bal = (a: string) => chain.c.token.balanceOf(a);

async function receipt(overrides: Partial<Receipt> = {}): Promise<Receipt> {
  return {
    supplier: supplier.address,
    fragmentCid: cidToBytes32('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'),
    inputHash: randomHash(),
    outputHash: randomHash(),
    sessionId: randomHash(),
    step: 7n,
    issuedAt: await chain.now(),
    ...overrides,
  };
}
const sign = (w: Wallet, r: Receipt) => signReceipt(w, dmAddress(), chain.chainId, r);

async function open(r?: Receipt): Promise<{ id: bigint; r: Receipt }> {
  const rec = r ?? (await receipt());
  const tx = await mined(dm(challenger).openDispute(rec, await sign(supplier, rec), randomHash()));
  const [ev] = eventsOf(tx, chain.c.disputeManager, 'DisputeOpened');
  return { id: ev.id as bigint, r: rec };
}

describe('receipts', () => {
  it('hash as the contract hashes them, verify off chain, and map CIDs to their sha256 digest', async () => {
    const r = await receipt();
    expect(await dm().hashReceipt(r)).toBe(receiptDigest(dmAddress(), chain.chainId, r));
    const sig = await sign(supplier, r);
    expect(verifyReceipt(dmAddress(), chain.chainId, r, sig)).toBe(true);
    expect(verifyReceipt(dmAddress(), chain.chainId, { ...r, step: 8n }, sig)).toBe(false);
    expect(verifyReceipt(dmAddress(), chain.chainId + 1, r, sig)).toBe(false);
    // bafkrei… is CIDv1 raw sha2-256: the bytes32 is the digest itself.
    expect(cidToBytes32('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')).toBe('0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(cidToBytes32(`0x${'ab'.repeat(32)}`)).toBe(`0x${'ab'.repeat(32)}`);
    expect(cidToBytes32('not a cid')).toMatch(/^0x[0-9a-f]{64}$/);
  });
});

describe('openDispute', () => {
  it('opens with a bond, freezes the supplier, emits the evidence', async () => {
    const r = await receipt();
    const contradicting = randomHash();
    const before = await bal(challenger.address);
    const tx = await mined(dm(challenger).openDispute(r, await sign(supplier, r), contradicting));
    const [ev] = eventsOf(tx, chain.c.disputeManager, 'DisputeOpened');
    const digest = receiptDigest(dmAddress(), chain.chainId, r);
    expect(ev).toEqual({
      id: 1n, supplier: supplier.address, challenger: challenger.address, receiptDigest: digest, fragmentCid: r.fragmentCid,
      sessionId: r.sessionId, step: 7n, outputHash: r.outputHash, contradictingOutputHash: contradicting, bond: DISPUTE_BOND,
    });
    expect(await bal(challenger.address)).toBe(before - DISPUTE_BOND);
    expect(await bal(dmAddress())).toBe(DISPUTE_BOND);
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).freezes).toBe(1n);
    const d = await dm().getDispute(1n);
    expect([d.supplier, d.challenger, d.status, d.receiptDigest, d.bond]).toEqual([supplier.address, challenger.address, BigInt(DisputeStatus.Open), digest, DISPUTE_BOND]);
    expect(await dm().disputeOfReceipt(digest)).toBe(1n);
    expect(await dm().disputeCount()).toBe(1n);
  });

  it('reverts when the output does not contradict, the signature is not the supplier\'s, or the receipt is already disputed', async () => {
    const r = await receipt();
    const sig = await sign(supplier, r);
    await expectRevert(dm(challenger).openDispute(r, sig, r.outputHash), 'NotContradicting');
    await expectRevert(dm(challenger).openDispute(r, await sign(stranger, r), randomHash()), 'InvalidSignature');
    await expectRevert(dm(challenger).openDispute({ ...r, outputHash: randomHash() }, sig, randomHash()), 'InvalidSignature');
    await expectRevert(dm(challenger).openDispute(r, await signReceipt(supplier, chain.config.paymentEscrow, chain.chainId, r), randomHash()), 'InvalidSignature');
    await mined(dm(challenger).openDispute(r, sig, randomHash()));
    await expectRevert(dm(stranger).openDispute(r, sig, randomHash()), 'ReceiptAlreadyDisputed');
  });

  it('reverts after the challenge window', async () => {
    const r = await receipt();
    const sig = await sign(supplier, r);
    await chain.increaseTime(CHALLENGE_WINDOW + 60);
    await expectRevert(dm(challenger).openDispute(r, sig, randomHash()), 'ChallengeWindowClosed');
    const old = await receipt({ issuedAt: 1n });
    await expectRevert(dm(challenger).openDispute(old, await sign(supplier, old), randomHash()), 'ChallengeWindowClosed');
  });

  it('takes the bond only with an allowance', async () => {
    await mined(chain.c.token.connect(stranger).approve(dmAddress(), 0n));
    const r = await receipt();
    await expectRevert(dm(stranger).openDispute(r, await sign(supplier, r), randomHash()), 'ERC20InsufficientAllowance');
  });
});

describe('resolveDispute', () => {
  it('only the arbiter resolves', async () => {
    const { id } = await open();
    for (const w of [stranger, challenger, supplier, chain.deployer]) await expectRevert(dm(w).resolveDispute(id, true), 'NotArbiter');
  });

  it('upheld: slashes the supplier, rewards the challenger (share + bond), pays the treasury, unfreezes', async () => {
    const { id, r } = await open();
    const [c0, t0] = [await bal(challenger.address), await bal(chain.treasury.address)];
    const tx = await mined(dm(chain.arbiter).resolveDispute(id, true));
    const reward = (SLASH_AMOUNT * BigInt(REWARD_BPS)) / 10_000n;
    expect(eventsOf(tx, chain.c.disputeManager, 'DisputeResolved')).toEqual([{ id, upheld: true, slashed: SLASH_AMOUNT, challengerReward: reward }]);
    expect(eventsOf(tx, chain.c.stakeRegistry, 'Slashed')).toEqual([{ supplier: supplier.address, recipient: dmAddress(), requested: SLASH_AMOUNT, slashed: SLASH_AMOUNT }]);
    expect(await bal(challenger.address)).toBe(c0 + reward + DISPUTE_BOND);
    expect(await bal(chain.treasury.address)).toBe(t0 + SLASH_AMOUNT - reward);
    expect(await bal(dmAddress())).toBe(0n);
    const s = await chain.c.stakeRegistry.stakeOf(supplier.address);
    expect([s.staked, s.freezes]).toEqual([200n - SLASH_AMOUNT, 0n]);
    expect((await dm().getDispute(id)).status).toBe(BigInt(DisputeStatus.Upheld));
    await expectRevert(dm(chain.arbiter).resolveDispute(id, true), 'DisputeNotOpen');
    // An upheld receipt cannot be slashed again.
    await expectRevert(dm(stranger).openDispute(r, await sign(supplier, r), randomHash()), 'ReceiptAlreadyDisputed');
  });

  it('rejected: the bond goes to the supplier, nothing is slashed, the receipt can be disputed again', async () => {
    const { id, r } = await open();
    const s0 = await bal(supplier.address);
    const tx = await mined(dm(chain.arbiter).resolveDispute(id, false));
    expect(eventsOf(tx, chain.c.disputeManager, 'DisputeResolved')).toEqual([{ id, upheld: false, slashed: 0n, challengerReward: 0n }]);
    expect(await bal(supplier.address)).toBe(s0 + DISPUTE_BOND);
    const s = await chain.c.stakeRegistry.stakeOf(supplier.address);
    expect([s.staked, s.freezes]).toEqual([200n, 0n]);
    expect((await dm().getDispute(id)).status).toBe(BigInt(DisputeStatus.Rejected));
    const again = await open(r);
    expect(again.id).toBe(id + 1n);
  });

  it('reverts for a dispute that does not exist', async () => {
    await expectRevert(dm(chain.arbiter).resolveDispute(42n, true), 'DisputeNotOpen');
  });

  it('an open dispute holds the supplier\'s unbonding stake; a slash reaches it', async () => {
    await mined(chain.c.stakeRegistry.connect(supplier).requestUnstake(200n));
    const { id } = await open();
    await chain.increaseTime(2000);
    await expectRevert(chain.c.stakeRegistry.connect(supplier).withdraw(), 'StakeFrozen');
    await mined(dm(chain.arbiter).resolveDispute(id, true));
    expect(await chain.c.stakeRegistry.connect(supplier).withdraw.staticCall()).toBe(200n - SLASH_AMOUNT);
  });

  it('slashes only what the supplier has left', async () => {
    const first = await open();
    const second = await open();
    const third = await open();
    const fourth = await open();
    const fifth = await open();
    for (const { id } of [first, second, third, fourth]) await mined(dm(chain.arbiter).resolveDispute(id, true));
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).staked).toBe(0n);
    const tx = await mined(dm(chain.arbiter).resolveDispute(fifth.id, true));
    expect(eventsOf(tx, chain.c.disputeManager, 'DisputeResolved')).toEqual([{ id: fifth.id, upheld: true, slashed: 0n, challengerReward: 0n }]);
    expect(await bal(dmAddress())).toBe(0n);
  });
});

describe('owner settings', () => {
  it('sets arbiter and parameters; checks them; only the owner', async () => {
    await mined(dm().setArbiter(stranger.address));
    expect(await dm().arbiter()).toBe(stranger.address);
    await mined(dm().setParameters(stranger.address, 10n, 1n, 0n, 10_000n));
    expect([await dm().treasury(), await dm().challengeWindow(), await dm().slashAmount(), await dm().disputeBond(), await dm().challengerRewardBps()])
      .toEqual([stranger.address, 10n, 1n, 0n, 10_000n]);
    await expectRevert(dm().setParameters(stranger.address, 10n, 1n, 0n, 10_001n), 'InvalidBps');
    await expectRevert(dm().setParameters('0x0000000000000000000000000000000000000000', 10n, 1n, 0n, 1n), 'ZeroAddress');
    await expectRevert(dm().setArbiter('0x0000000000000000000000000000000000000000'), 'ZeroAddress');
    await expectRevert(dm(stranger).setArbiter(stranger.address), 'OwnableUnauthorizedAccount');
    await expectRevert(dm(stranger).setParameters(stranger.address, 1n, 1n, 1n, 1n), 'OwnableUnauthorizedAccount');
    // With no bond, a dispute takes no tokens.
    const before = await bal(challenger.address);
    const { id } = await open();
    expect(await bal(challenger.address)).toBe(before);
    await mined(dm(stranger).resolveDispute(id, false));
  });
});
