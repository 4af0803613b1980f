/** GridToken and StakeRegistry against a real anvil: staking, listing, unbonding, slashing, freezing, owner settings. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Wallet } from 'ethers';
import { deployStakeRegistry, type StakeRegistryContract } from '../../contracts/index.js';
import { eventsOf, expectRevert, mined, setupChain, type Chain } from './helpers.js';

let chain: Chain;
let supplier: Wallet;
let supplier2: Wallet;
let slasher: Wallet;
let stranger: Wallet;
/** A registry whose slasher is an account (the grid's own registry has the DisputeManager). */
let registry: StakeRegistryContract;

beforeAll(async () => {
  chain = await setupChain();
  [, supplier, supplier2, slasher, stranger] = chain.wallets;
  registry = await deployStakeRegistry(chain.deployer, { token: chain.config.token, minimumStake: 100n, unbondingDelay: 1000, slasher: slasher.address, owner: chain.deployer.address });
  const address = await registry.getAddress();
  for (const w of [supplier, supplier2]) await mined(chain.c.token.connect(w).approve(address, 10n ** 30n));
  await chain.checkpoint(); // cases reset to this state
});
afterAll(async () => {
  await chain?.close();
});
beforeEach(async () => {
  await chain.reset();
});

const as = (w: Wallet) => registry.connect(w);
const registryAddress = () => registry.getAddress();

describe('GridToken', () => {
  it('has a name and symbol, and mints only for the owner', async () => {
    expect(await chain.c.token.name()).toBe('Gridpipe Token');
    expect(await chain.c.token.symbol()).toBe('GRID');
    expect(await chain.c.token.decimals()).toBe(18n);
    const before = await chain.c.token.balanceOf(stranger.address);
    await mined(chain.c.token.mint(stranger.address, 5n));
    expect(await chain.c.token.balanceOf(stranger.address)).toBe(before + 5n);
    await expectRevert(chain.c.token.connect(stranger).mint(stranger.address, 5n), 'OwnableUnauthorizedAccount');
  });
});

describe('stake and listing', () => {
  it('stakes, emits, lists at the minimum', async () => {
    const r = await mined(as(supplier).stake(60n));
    expect(eventsOf(r, registry, 'Staked')).toEqual([{ supplier: supplier.address, amount: 60n, totalStaked: 60n }]);
    expect(await registry.isListed(supplier.address)).toBe(false);
    await mined(as(supplier).stake(40n));
    expect(await registry.isListed(supplier.address)).toBe(true);
    const s = await registry.stakeOf(supplier.address);
    expect([s.staked, s.unbonding, s.freezes]).toEqual([100n, 0n, 0n]);
    expect(await chain.c.token.balanceOf(await registryAddress())).toBe(100n);
  });

  it('reverts on zero stake and without allowance or balance', async () => {
    await expectRevert(as(supplier).stake(0n), 'ZeroAmount');
    await expectRevert(as(stranger).stake(1n), 'ERC20InsufficientAllowance');
  });

  it('with a zero minimum, lists any positive stake but not an empty one', async () => {
    await mined(registry.setMinimumStake(0n));
    expect(await registry.isListed(supplier.address)).toBe(false);
    await mined(as(supplier).stake(1n));
    expect(await registry.isListed(supplier.address)).toBe(true);
  });
});

describe('unstake and withdraw', () => {
  beforeEach(async () => {
    await mined(as(supplier).stake(300n));
  });

  it('unbonds, delists below the minimum, and withdraws after the delay', async () => {
    const r = await mined(as(supplier).requestUnstake(250n));
    const block = await chain.provider.getBlock(r.blockNumber);
    expect(eventsOf(r, registry, 'UnstakeRequested')).toEqual([{ supplier: supplier.address, amount: 250n, totalUnbonding: 250n, readyAt: BigInt(block!.timestamp) + 1000n }]);
    expect(await registry.isListed(supplier.address)).toBe(false);
    await chain.increaseTime(1100);
    const before = await chain.c.token.balanceOf(supplier.address);
    const w = await mined(as(supplier).withdraw());
    expect(eventsOf(w, registry, 'Withdrawn')).toEqual([{ supplier: supplier.address, amount: 250n }]);
    expect(await chain.c.token.balanceOf(supplier.address)).toBe(before + 250n);
    const s = await registry.stakeOf(supplier.address);
    expect([s.staked, s.unbonding]).toEqual([50n, 0n]);
  });

  it('reverts on withdraw before unbonding ends, and when nothing unbonds', async () => {
    await expectRevert(as(supplier).withdraw(), 'NothingToWithdraw');
    await mined(as(supplier).requestUnstake(100n));
    await expectRevert(as(supplier).withdraw(), 'StillUnbonding');
    await chain.increaseTime(500);
    await expectRevert(as(supplier).withdraw(), 'StillUnbonding');
    await chain.increaseTime(600);
    await mined(as(supplier).withdraw());
    await expectRevert(as(supplier).withdraw(), 'NothingToWithdraw');
  });

  it('a new request restarts the clock for everything unbonding', async () => {
    await mined(as(supplier).requestUnstake(100n));
    await chain.increaseTime(900);
    await mined(as(supplier).requestUnstake(100n));
    await chain.increaseTime(200);
    await expectRevert(as(supplier).withdraw(), 'StillUnbonding');
    await chain.increaseTime(900);
    expect(await as(supplier).withdraw.staticCall()).toBe(200n);
  });

  it('reverts on unstaking more than staked, or zero', async () => {
    await expectRevert(as(supplier).requestUnstake(301n), 'InsufficientStake');
    await expectRevert(as(supplier).requestUnstake(0n), 'ZeroAmount');
    await mined(as(supplier).requestUnstake(300n));
    await expectRevert(as(supplier).requestUnstake(1n), 'InsufficientStake');
  });
});

describe('slash', () => {
  beforeEach(async () => {
    await mined(as(supplier).stake(300n));
    await mined(as(supplier).requestUnstake(100n)); // 200 staked, 100 unbonding
  });

  it('only the slasher slashes', async () => {
    await expectRevert(as(stranger).slash(supplier.address, 10n, stranger.address), 'NotSlasher');
    await expectRevert(as(supplier).slash(supplier.address, 10n, supplier.address), 'NotSlasher');
    await expectRevert(registry.slash(supplier.address, 10n, chain.deployer.address), 'NotSlasher'); // the owner is not the slasher
  });

  it('takes staked first, then unbonding, capped at what there is, and pays the recipient', async () => {
    const before = await chain.c.token.balanceOf(stranger.address);
    const r = await mined(as(slasher).slash(supplier.address, 250n, stranger.address));
    expect(eventsOf(r, registry, 'Slashed')).toEqual([{ supplier: supplier.address, recipient: stranger.address, requested: 250n, slashed: 250n }]);
    let s = await registry.stakeOf(supplier.address);
    expect([s.staked, s.unbonding]).toEqual([0n, 50n]);
    expect(await as(slasher).slash.staticCall(supplier.address, 1000n, stranger.address)).toBe(50n);
    await mined(as(slasher).slash(supplier.address, 1000n, stranger.address));
    s = await registry.stakeOf(supplier.address);
    expect([s.staked, s.unbonding]).toEqual([0n, 0n]);
    expect(await chain.c.token.balanceOf(stranger.address)).toBe(before + 300n);
    expect(await chain.c.token.balanceOf(await registryAddress())).toBe(0n);
    expect(await as(slasher).slash.staticCall(supplier.address, 5n, stranger.address)).toBe(0n); // nothing left: no revert
  });

  it('reverts on zero amount and zero recipient', async () => {
    await expectRevert(as(slasher).slash(supplier.address, 0n, stranger.address), 'ZeroAmount');
    await expectRevert(as(slasher).slash(supplier.address, 1n, '0x0000000000000000000000000000000000000000'), 'ZeroAddress');
  });

  it('freeze holds withdrawals until unfrozen; only the slasher freezes', async () => {
    await expectRevert(as(stranger).freeze(supplier.address), 'NotSlasher');
    await mined(as(slasher).freeze(supplier.address));
    await mined(as(slasher).freeze(supplier.address));
    await chain.increaseTime(1100);
    await expectRevert(as(supplier).withdraw(), 'StakeFrozen');
    await mined(as(slasher).unfreeze(supplier.address));
    await expectRevert(as(supplier).withdraw(), 'StakeFrozen');
    await expectRevert(as(stranger).unfreeze(supplier.address), 'NotSlasher');
    await mined(as(slasher).unfreeze(supplier.address));
    await expectRevert(as(slasher).unfreeze(supplier.address), 'NotFrozen');
    await mined(as(supplier).withdraw());
  });
});

describe('owner settings', () => {
  it('sets minimum stake, unbonding delay and slasher; others cannot', async () => {
    await mined(registry.setMinimumStake(5n));
    expect(await registry.minimumStake()).toBe(5n);
    await mined(registry.setUnbondingDelay(7n));
    expect(await registry.unbondingDelay()).toBe(7n);
    const r = await mined(registry.setSlasher(stranger.address));
    expect(eventsOf(r, registry, 'SlasherSet')).toEqual([{ previousSlasher: slasher.address, newSlasher: stranger.address }]);
    await mined(as(supplier).stake(10n));
    await mined(as(stranger).slash(supplier.address, 1n, stranger.address));
    await expectRevert(as(slasher).slash(supplier.address, 1n, stranger.address), 'NotSlasher');
    for (const call of [as(stranger).setMinimumStake(1n), as(stranger).setUnbondingDelay(1n), as(stranger).setSlasher(stranger.address)]) {
      await expectRevert(call, 'OwnableUnauthorizedAccount');
    }
    await expectRevert(registry.setSlasher('0x0000000000000000000000000000000000000000'), 'ZeroAddress');
  });

  it('the deployed grid registry has the DisputeManager as its slasher', async () => {
    expect(await chain.c.stakeRegistry.slasher()).toBe(chain.config.disputeManager);
    await mined(chain.c.stakeRegistry.connect(supplier).stake(100n));
    await expectRevert(chain.c.stakeRegistry.slash(supplier.address, 1n, chain.deployer.address), 'NotSlasher');
  });
});
