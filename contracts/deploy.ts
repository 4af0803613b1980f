/**
 * Deploys a grid's contracts to any EVM chain reached by RPC URL (anvil for tests and the devnet, a
 * testnet or mainnet otherwise) and writes the chain config JSON the node and gateway load.
 *
 * Order: GridToken (only without `token`) → StakeRegistry (slasher: the deployer for now) →
 * PaymentEscrow → DisputeManager → StakeRegistry.setSlasher(DisputeManager). Without a dispute
 * manager, `slasher` (default: the owner) slashes directly.
 *
 * As a command: `node --import tsx contracts/deploy.ts --rpc URL --out chain.json [--token ADDR]
 * [--keystore FILE]`; the key comes from the keystore (passphrase in GRIDPIPE_PASSPHRASE) or from
 * GRIDPIPE_DEPLOYER_KEY.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { getAddress, parseUnits, Wallet, type ContractTransactionResponse, type Signer } from 'ethers';
import {
  attachGridToken,
  createProvider,
  deployDisputeManager,
  deployGridToken,
  deployPaymentEscrow,
  deployStakeRegistry,
  writeChainConfig,
  type ChainConfig,
  type GridContracts,
} from './bindings.js';
import { loadKeystore } from './wallet.js';
import { GridpipeError } from '../errors/base.js';

export interface DisputeParams {
  /** Who resolves disputes (default: the owner). */
  arbiter?: string;
  /** Where the slashed stake not rewarded goes (default: the owner). */
  treasury?: string;
  /** Seconds after a receipt's issuedAt during which it can be disputed. Must be ≤ unbondingDelay. */
  challengeWindow: number;
  slashAmount: bigint;
  disputeBond: bigint;
  /** Share of the slashed stake paid to the challenger, in basis points. */
  challengerRewardBps: number;
}

export interface DeployParams {
  /** An existing ERC-20 to stake and pay with; when absent a GridToken is deployed (owner: the owner). */
  token?: string;
  tokenName: string;
  tokenSymbol: string;
  minimumStake: bigint;
  /** Seconds between requestUnstake and withdraw. */
  unbondingDelay: number;
  /** Seconds between requestWithdrawal and withdraw (payees redeem meanwhile). */
  withdrawalDelay: number;
  /** Dispute manager parameters; `false` deploys none. */
  dispute: DisputeParams | false;
  /** Owner of the registry, dispute manager and token (default: the deployer). */
  owner?: string;
  /** The slasher when no dispute manager is deployed (default: the owner). */
  slasher?: string;
}

export const DEFAULT_DEPLOY_PARAMS: DeployParams = {
  tokenName: 'Gridpipe Token',
  tokenSymbol: 'GRID',
  minimumStake: parseUnits('100', 18),
  unbondingDelay: 7 * 24 * 3600,
  withdrawalDelay: 24 * 3600,
  dispute: {
    challengeWindow: 3 * 24 * 3600,
    slashAmount: parseUnits('50', 18),
    disputeBond: parseUnits('10', 18),
    challengerRewardBps: 5000,
  },
};

export interface DeployOptions {
  /** The RPC URL the config will name (the signer's provider should be connected to it). */
  rpcUrl: string;
  /** The deployer, connected to a provider. */
  signer: Signer;
  params?: Partial<DeployParams>;
  /** Write the chain config here. */
  configPath?: string;
}

export interface Deployment {
  config: ChainConfig;
  contracts: GridContracts;
}

export class DeployError extends GridpipeError<'DEPLOY_FAILED'> {
  override name = 'DeployError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('DEPLOY_FAILED', message, options);
  }
}

/** Deploys the contracts; returns the chain config (also written to `configPath`) and typed contracts. */
export async function deployGrid(options: DeployOptions): Promise<Deployment> {
  const params: DeployParams = { ...DEFAULT_DEPLOY_PARAMS, ...options.params };
  const { signer } = options;
  const provider = signer.provider;
  if (!provider) throw new DeployError('the deployer signer has no provider');
  const deployer = getAddress(await signer.getAddress());
  const owner = getAddress(params.owner ?? deployer);
  const chainId = Number((await provider.getNetwork()).chainId);
  if (params.dispute && params.dispute.challengeWindow > params.unbondingDelay) {
    // A supplier could otherwise unstake and leave before a dispute about its last receipts opens.
    throw new DeployError(`challengeWindow (${params.dispute.challengeWindow} s) must not exceed unbondingDelay (${params.unbondingDelay} s)`);
  }
  if (params.dispute && (params.dispute.challengerRewardBps < 0 || params.dispute.challengerRewardBps > 10_000)) {
    throw new DeployError('challengerRewardBps must be within 0..10000');
  }

  let firstBlock: number | undefined;
  const track = async (c: { deploymentTransaction(): ContractTransactionResponse | null }): Promise<void> => {
    const receipt = await c.deploymentTransaction()?.wait();
    if (receipt && firstBlock === undefined) firstBlock = receipt.blockNumber;
  };

  const token = params.token
    ? attachGridToken(getAddress(params.token), signer)
    : await deployGridToken(signer, params.tokenName, params.tokenSymbol, owner);
  if (!params.token) await track(token);
  const tokenAddress = await token.getAddress();

  const stakeRegistry = await deployStakeRegistry(signer, {
    token: tokenAddress,
    minimumStake: params.minimumStake,
    unbondingDelay: params.unbondingDelay,
    slasher: params.dispute ? deployer : getAddress(params.slasher ?? owner),
    owner: deployer,
  });
  await track(stakeRegistry);
  const registryAddress = await stakeRegistry.getAddress();

  const paymentEscrow = await deployPaymentEscrow(signer, { token: tokenAddress, withdrawalDelay: params.withdrawalDelay });
  await track(paymentEscrow);

  let disputeManager: GridContracts['disputeManager'];
  if (params.dispute) {
    const d = params.dispute;
    disputeManager = await deployDisputeManager(signer, {
      stakeRegistry: registryAddress,
      arbiter: getAddress(d.arbiter ?? owner),
      treasury: getAddress(d.treasury ?? owner),
      challengeWindow: d.challengeWindow,
      slashAmount: d.slashAmount,
      disputeBond: d.disputeBond,
      challengerRewardBps: d.challengerRewardBps,
      owner,
    });
    await track(disputeManager);
    await (await stakeRegistry.setSlasher(await disputeManager.getAddress())).wait();
  }
  if (owner !== deployer) await (await stakeRegistry.transferOwnership(owner)).wait();

  const config: ChainConfig = {
    rpcUrl: options.rpcUrl,
    chainId,
    token: tokenAddress,
    stakeRegistry: registryAddress,
    paymentEscrow: await paymentEscrow.getAddress(),
    ...(disputeManager ? { disputeManager: await disputeManager.getAddress() } : {}),
    deployer,
    blockNumber: firstBlock ?? (await provider.getBlockNumber()),
  };
  if (options.configPath) writeChainConfig(options.configPath, config);
  return { config, contracts: { token, stakeRegistry, paymentEscrow, disputeManager } };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rpc: { type: 'string' },
      out: { type: 'string' },
      token: { type: 'string' },
      keystore: { type: 'string' },
      'chain-id': { type: 'string' },
      'no-dispute': { type: 'boolean' },
    },
  });
  if (!values.rpc || !values.out) throw new DeployError('usage: deploy.ts --rpc URL --out chain.json [--token ADDR] [--keystore FILE] [--chain-id N] [--no-dispute]');
  const provider = createProvider(values.rpc, values['chain-id'] ? Number(values['chain-id']) : undefined);
  let signer: Signer;
  if (values.keystore) signer = (await loadKeystore(values.keystore)).connect(provider);
  else if (process.env.GRIDPIPE_DEPLOYER_KEY) signer = new Wallet(process.env.GRIDPIPE_DEPLOYER_KEY, provider);
  else throw new DeployError('no deployer key: pass --keystore FILE (passphrase in GRIDPIPE_PASSPHRASE) or set GRIDPIPE_DEPLOYER_KEY');
  const params: Partial<DeployParams> = {};
  if (values.token) params.token = values.token;
  if (values['no-dispute']) params.dispute = false;
  const { config } = await deployGrid({ rpcUrl: values.rpc, signer, params, configPath: values.out });
  process.stdout.write(`deployed to chain ${config.chainId}; config written to ${path.resolve(values.out)}\n`);
  provider.destroy();
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
