/** A real anvil with the grid deployed and accounts funded, reset between cases with snapshots. */
import { hexlify, MaxUint256, randomBytes, Wallet, type ContractTransactionResponse, type JsonRpcProvider, type TransactionReceipt } from 'ethers';
import { expect } from 'vitest';
import {
  actingAs,
  approveIfShort,
  createProvider,
  deployGrid,
  increaseTime,
  revertName,
  revertSnapshot,
  snapshot,
  startAnvil,
  type AnvilNode,
  type DeployParams,
  type DisputeManagerContract,
  type GridContracts,
  type ChainConfig,
} from '../../contracts/index.js';

/** Test parameters: small numbers, delays far apart so wall-clock drift never matters. */
export const TEST_PARAMS: Partial<DeployParams> = {
  minimumStake: 100n,
  unbondingDelay: 1000,
  withdrawalDelay: 500,
};
export const CHALLENGE_WINDOW = 600;
export const SLASH_AMOUNT = 50n;
export const DISPUTE_BOND = 10n;
export const REWARD_BPS = 5000;
export const FUND = 1_000_000n;

export interface Chain {
  node: AnvilNode;
  provider: JsonRpcProvider;
  chainId: number;
  /** Anvil's dev accounts as wallets: 0 deploys/owns, 8 is the treasury, 9 the arbiter. */
  wallets: Wallet[];
  deployer: Wallet;
  arbiter: Wallet;
  treasury: Wallet;
  config: ChainConfig;
  c: GridContracts & { disputeManager: DisputeManagerContract };
  /** The latest block's timestamp. */
  now(): Promise<bigint>;
  increaseTime(seconds: number): Promise<void>;
  /** Back to the state right after setup (or the last checkpoint). */
  reset(): Promise<void>;
  /** Makes the current state the one `reset` returns to. */
  checkpoint(): Promise<void>;
  close(): Promise<void>;
}

/** Starts anvil, deploys everything (with a DisputeManager as the slasher), funds and approves every account. */
export async function setupChain(params: Partial<DeployParams> = {}): Promise<Chain> {
  const node = await startAnvil();
  try {
    const provider = createProvider(node.rpcUrl, node.chainId);
    const wallets = node.accounts.map((a) => new Wallet(a.privateKey, provider));
    const [deployer] = wallets;
    const arbiter = wallets[9];
    const treasury = wallets[8];
    const { config, contracts } = await deployGrid({
      rpcUrl: node.rpcUrl,
      signer: deployer,
      params: {
        ...TEST_PARAMS,
        dispute: { arbiter: arbiter.address, treasury: treasury.address, challengeWindow: CHALLENGE_WINDOW, slashAmount: SLASH_AMOUNT, disputeBond: DISPUTE_BOND, challengerRewardBps: REWARD_BPS },
        ...params,
      },
    });
    const c = contracts as Chain['c'];
    for (const w of wallets) await mined(c.token.mint(w.address, FUND));
    await Promise.all(wallets.map(async (w) => {
      const account = await actingAs(config, w);
      for (const spender of [config.stakeRegistry, config.paymentEscrow, config.disputeManager]) {
        if (spender) await approveIfShort(account, spender, MaxUint256);
      }
    }));
    let baseline = await snapshot(node.rpcUrl);
    return {
      node,
      provider,
      chainId: node.chainId,
      wallets,
      deployer,
      arbiter,
      treasury,
      config,
      c,
      now: async () => BigInt((await provider.getBlock('latest'))!.timestamp),
      increaseTime: (s) => increaseTime(node.rpcUrl, s),
      reset: async () => {
        await revertSnapshot(node.rpcUrl, baseline);
        baseline = await snapshot(node.rpcUrl);
      },
      checkpoint: async () => {
        baseline = await snapshot(node.rpcUrl);
      },
      close: async () => {
        provider.destroy();
        await node.stop();
      },
    };
  } catch (err) {
    await node.stop();
    throw err;
  }
}

/** Sends, waits for the receipt, checks success. */
export async function mined(tx: Promise<ContractTransactionResponse>): Promise<TransactionReceipt> {
  const receipt = await (await tx).wait();
  if (!receipt || receipt.status !== 1) throw new Error('transaction failed');
  return receipt;
}

/** Expects the call to revert with the named custom error. */
export async function expectRevert(call: Promise<unknown>, errorName: string): Promise<void> {
  let failed = false;
  try {
    await call;
  } catch (err) {
    failed = true;
    expect(revertName(err), `expected ${errorName}, got: ${(err as Error).message.slice(0, 300)}`).toBe(errorName);
  }
  expect(failed, `expected revert ${errorName}, but the call succeeded`).toBe(true);
}

/** The named events a receipt holds, decoded with `contract`'s interface. */
export function eventsOf(receipt: TransactionReceipt, contract: { interface: { parseLog(log: { topics: readonly string[]; data: string }): { name: string; args: unknown } | null } }, name: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const log of receipt.logs) {
    let parsed: { name: string; args: unknown } | null;
    try {
      parsed = contract.interface.parseLog(log);
    } catch {
      parsed = null;
    }
    if (parsed?.name === name) out.push((parsed.args as { toObject(): Record<string, unknown> }).toObject());
  }
  return out;
}

/** A random bytes32. */
export function randomHash(): string {
  return hexlify(randomBytes(32));
}
