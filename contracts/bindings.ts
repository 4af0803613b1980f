/**
 * Typed ethers v6 bindings of the four contracts: method signatures written out by hand from the
 * ABIs (a test checks every ABI function is typed here), deploy and attach factories, a provider
 * tuned for a chain reached by RPC URL, and the chain config the node and gateway load.
 */
import {
  BaseContract,
  Contract,
  ContractFactory,
  Interface,
  isHexString,
  JsonRpcProvider,
  Network,
  isCallException,
  type AddressLike,
  type BaseContractMethod,
  type BigNumberish,
  type BytesLike,
  type ContractRunner,
  type ContractTransactionResponse,
  type Signer,
  type TransactionRequest,
} from 'ethers';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { CONTRACT_NAMES, loadArtifact, type ContractName } from './artifacts.js';
import type { Receipt, Voucher } from './eip712.js';

type View<A extends unknown[], R> = BaseContractMethod<A, R, R>;
type Send<A extends unknown[], R = void> = BaseContractMethod<A, R, ContractTransactionResponse>;

/** A voucher as a contract argument, derived from `Voucher` (so a `Voucher` or a `SignedVoucher` fits): addresses and numbers in any form ethers takes. */
export type VoucherStruct = { [K in keyof Voucher]: Voucher[K] extends bigint ? BigNumberish : AddressLike };
/** A receipt as a contract argument (a `Receipt` fits). */
export interface ReceiptStruct {
  supplier: AddressLike;
  fragmentCid: string;
  inputHash: string;
  outputHash: string;
  sessionId: string;
  step: BigNumberish;
  issuedAt: BigNumberish;
}

interface Typed<Self> {
  connect(runner: ContractRunner | null): Self;
  getAddress(): Promise<string>;
}

export interface GridTokenContract extends Omit<BaseContract, 'connect'>, Typed<GridTokenContract> {
  name: View<[], string>;
  symbol: View<[], string>;
  decimals: View<[], bigint>;
  totalSupply: View<[], bigint>;
  balanceOf: View<[account: AddressLike], bigint>;
  allowance: View<[owner: AddressLike, spender: AddressLike], bigint>;
  approve: Send<[spender: AddressLike, value: BigNumberish], boolean>;
  transfer: Send<[to: AddressLike, value: BigNumberish], boolean>;
  transferFrom: Send<[from: AddressLike, to: AddressLike, value: BigNumberish], boolean>;
  mint: Send<[to: AddressLike, amount: BigNumberish]>;
  owner: View<[], string>;
  transferOwnership: Send<[newOwner: AddressLike]>;
  renounceOwnership: Send<[]>;
}

export type StakeOf = [staked: bigint, unbonding: bigint, unbondingReadyAt: bigint, freezes: bigint] & {
  staked: bigint;
  unbonding: bigint;
  unbondingReadyAt: bigint;
  freezes: bigint;
};

export interface StakeRegistryContract extends Omit<BaseContract, 'connect'>, Typed<StakeRegistryContract> {
  token: View<[], string>;
  minimumStake: View<[], bigint>;
  unbondingDelay: View<[], bigint>;
  slasher: View<[], string>;
  owner: View<[], string>;
  isListed: View<[supplier: AddressLike], boolean>;
  stakeOf: View<[supplier: AddressLike], StakeOf>;
  stake: Send<[amount: BigNumberish]>;
  requestUnstake: Send<[amount: BigNumberish]>;
  withdraw: Send<[], bigint>;
  slash: Send<[supplier: AddressLike, amount: BigNumberish, recipient: AddressLike], bigint>;
  freeze: Send<[supplier: AddressLike]>;
  unfreeze: Send<[supplier: AddressLike]>;
  setMinimumStake: Send<[minimumStake: BigNumberish]>;
  setUnbondingDelay: Send<[unbondingDelay: BigNumberish]>;
  setSlasher: Send<[slasher: AddressLike]>;
  transferOwnership: Send<[newOwner: AddressLike]>;
  renounceOwnership: Send<[]>;
}

export type WithdrawalRequest = [amount: bigint, withdrawableAt: bigint] & { amount: bigint; withdrawableAt: bigint };

export interface PaymentEscrowContract extends Omit<BaseContract, 'connect'>, Typed<PaymentEscrowContract> {
  token: View<[], string>;
  withdrawalDelay: View<[], bigint>;
  VOUCHER_TYPEHASH: View<[], string>;
  balanceOf: View<[payer: AddressLike], bigint>;
  redeemed: View<[payer: AddressLike, payee: AddressLike], bigint>;
  withdrawalRequest: View<[payer: AddressLike], WithdrawalRequest>;
  hashVoucher: View<[voucher: VoucherStruct], string>;
  domainSeparator: View<[], string>;
  eip712Domain: View<[], unknown>;
  deposit: Send<[amount: BigNumberish]>;
  depositFor: Send<[payer: AddressLike, amount: BigNumberish]>;
  redeem: Send<[voucher: VoucherStruct, signature: string], bigint>;
  redeemBatch: Send<[vouchers: readonly VoucherStruct[], signatures: readonly string[]], bigint>;
  requestWithdrawal: Send<[amount: BigNumberish]>;
  withdraw: Send<[], bigint>;
}

/** DisputeManager.Status */
export enum DisputeStatus { None = 0, Open = 1, Upheld = 2, Rejected = 3 }

export type DisputeInfo = [
  supplier: string, openedAt: bigint, status: bigint, challenger: string,
  receiptDigest: string, outputHash: string, contradictingOutputHash: string, bond: bigint,
] & {
  supplier: string;
  openedAt: bigint;
  status: bigint;
  challenger: string;
  receiptDigest: string;
  outputHash: string;
  contradictingOutputHash: string;
  bond: bigint;
};

export interface DisputeManagerContract extends Omit<BaseContract, 'connect'>, Typed<DisputeManagerContract> {
  stakeRegistry: View<[], string>;
  token: View<[], string>;
  arbiter: View<[], string>;
  treasury: View<[], string>;
  challengeWindow: View<[], bigint>;
  /** How far ahead of the block time a disputed receipt's issuedAt may lie. */
  MAX_ISSUED_AHEAD: View<[], bigint>;
  slashAmount: View<[], bigint>;
  disputeBond: View<[], bigint>;
  challengerRewardBps: View<[], bigint>;
  disputeCount: View<[], bigint>;
  disputeOfReceipt: View<[receiptDigest: string], bigint>;
  getDispute: View<[id: BigNumberish], DisputeInfo>;
  hashReceipt: View<[receipt: ReceiptStruct | Receipt], string>;
  domainSeparator: View<[], string>;
  eip712Domain: View<[], unknown>;
  RECEIPT_TYPEHASH: View<[], string>;
  BPS: View<[], bigint>;
  owner: View<[], string>;
  openDispute: Send<[receipt: ReceiptStruct | Receipt, supplierSignature: string, contradictingOutputHash: string], bigint>;
  /** Opens a dispute with its evidence (the input and digest streams checked against the receipt on chain). */
  fileDispute: Send<[receipt: ReceiptStruct | Receipt, supplierSignature: string, inputs: BytesLike, revealedDigests: BytesLike, rerunDigests: BytesLike, context: BytesLike], bigint>;
  evidenceHash: View<[id: BigNumberish], string>;
  resolveDispute: Send<[id: BigNumberish, upheld: boolean], [bigint, bigint]>;
  setArbiter: Send<[arbiter: AddressLike]>;
  setParameters: Send<[treasury: AddressLike, challengeWindow: BigNumberish, slashAmount: BigNumberish, disputeBond: BigNumberish, challengerRewardBps: BigNumberish]>;
  transferOwnership: Send<[newOwner: AddressLike]>;
  renounceOwnership: Send<[]>;
}

/**
 * The contract functions each typed interface declares, checked at compile time against the
 * interfaces (`satisfies`) and by a test against the ABIs: together they keep the types complete.
 */
export const TYPED_METHODS = {
  GridToken: ['name', 'symbol', 'decimals', 'totalSupply', 'balanceOf', 'allowance', 'approve', 'transfer', 'transferFrom', 'mint', 'owner', 'transferOwnership', 'renounceOwnership'] as const satisfies readonly (keyof GridTokenContract)[],
  StakeRegistry: ['token', 'minimumStake', 'unbondingDelay', 'slasher', 'owner', 'isListed', 'stakeOf', 'stake', 'requestUnstake', 'withdraw', 'slash', 'freeze', 'unfreeze', 'setMinimumStake', 'setUnbondingDelay', 'setSlasher', 'transferOwnership', 'renounceOwnership'] as const satisfies readonly (keyof StakeRegistryContract)[],
  PaymentEscrow: ['token', 'withdrawalDelay', 'VOUCHER_TYPEHASH', 'balanceOf', 'redeemed', 'withdrawalRequest', 'hashVoucher', 'domainSeparator', 'eip712Domain', 'deposit', 'depositFor', 'redeem', 'redeemBatch', 'requestWithdrawal', 'withdraw'] as const satisfies readonly (keyof PaymentEscrowContract)[],
  DisputeManager: ['stakeRegistry', 'token', 'arbiter', 'treasury', 'challengeWindow', 'slashAmount', 'disputeBond', 'challengerRewardBps', 'disputeCount', 'disputeOfReceipt', 'evidenceHash', 'getDispute', 'hashReceipt', 'domainSeparator', 'eip712Domain', 'RECEIPT_TYPEHASH', 'BPS', 'MAX_ISSUED_AHEAD', 'owner', 'openDispute', 'fileDispute', 'resolveDispute', 'setArbiter', 'setParameters', 'transferOwnership', 'renounceOwnership'] as const satisfies readonly (keyof DisputeManagerContract)[],
} satisfies Record<ContractName, readonly string[]>;

interface ContractTypes {
  GridToken: GridTokenContract;
  StakeRegistry: StakeRegistryContract;
  PaymentEscrow: PaymentEscrowContract;
  DisputeManager: DisputeManagerContract;
}

/** Attaches a typed contract at `address`. */
export function attachContract<N extends ContractName>(name: N, address: string, runner: ContractRunner | null): ContractTypes[N] {
  return new Contract(address, loadArtifact(name).abi as never, runner) as unknown as ContractTypes[N];
}

/** Deploys a contract from its committed artifact and waits until it is mined. */
export async function deployContract<N extends ContractName>(name: N, signer: Signer, args: unknown[]): Promise<ContractTypes[N]> {
  const artifact = loadArtifact(name);
  const factory = new ContractFactory(artifact.abi as never, artifact.bytecode, signer);
  const contract = await factory.deploy(...args);
  await contract.waitForDeployment();
  return contract as unknown as ContractTypes[N];
}

export const attachGridToken = (address: string, runner: ContractRunner | null): GridTokenContract => attachContract('GridToken', address, runner);
export const attachStakeRegistry = (address: string, runner: ContractRunner | null): StakeRegistryContract => attachContract('StakeRegistry', address, runner);
export const attachPaymentEscrow = (address: string, runner: ContractRunner | null): PaymentEscrowContract => attachContract('PaymentEscrow', address, runner);
export const attachDisputeManager = (address: string, runner: ContractRunner | null): DisputeManagerContract => attachContract('DisputeManager', address, runner);

export function deployGridToken(signer: Signer, name: string, symbol: string, owner: string): Promise<GridTokenContract> {
  return deployContract('GridToken', signer, [name, symbol, owner]);
}

export function deployStakeRegistry(
  signer: Signer,
  p: { token: string; minimumStake: bigint; unbondingDelay: number; slasher: string; owner: string },
): Promise<StakeRegistryContract> {
  return deployContract('StakeRegistry', signer, [p.token, p.minimumStake, p.unbondingDelay, p.slasher, p.owner]);
}

export function deployPaymentEscrow(signer: Signer, p: { token: string; withdrawalDelay: number }): Promise<PaymentEscrowContract> {
  return deployContract('PaymentEscrow', signer, [p.token, p.withdrawalDelay]);
}

export function deployDisputeManager(
  signer: Signer,
  p: { stakeRegistry: string; arbiter: string; treasury: string; challengeWindow: number; slashAmount: bigint; disputeBond: bigint; challengerRewardBps: number; owner: string },
): Promise<DisputeManagerContract> {
  return deployContract('DisputeManager', signer, [p.stakeRegistry, p.arbiter, p.treasury, p.challengeWindow, p.slashAmount, p.disputeBond, p.challengerRewardBps, p.owner]);
}

/** Where the contracts of one grid live; written by deploy, read by node, gateway and explorer. */
export interface ChainConfig {
  rpcUrl: string;
  chainId: number;
  token: string;
  stakeRegistry: string;
  paymentEscrow: string;
  disputeManager?: string;
  /** The account that deployed (and owns) the contracts. */
  deployer: string;
  /** The block of the first deployment transaction: where event scans start. */
  blockNumber: number;
}

export interface GridContracts {
  token: GridTokenContract;
  stakeRegistry: StakeRegistryContract;
  paymentEscrow: PaymentEscrowContract;
  disputeManager?: DisputeManagerContract;
}

/** Typed contracts of a chain config, bound to `runner` (a signer to send, a provider to read). */
export function connectGrid(config: ChainConfig, runner: ContractRunner | null): GridContracts {
  return {
    token: attachGridToken(config.token, runner),
    stakeRegistry: attachStakeRegistry(config.stakeRegistry, runner),
    paymentEscrow: attachPaymentEscrow(config.paymentEscrow, runner),
    disputeManager: config.disputeManager ? attachDisputeManager(config.disputeManager, runner) : undefined,
  };
}

/** Gas added to every estimate: 20 % plus a constant. */
const GAS_MARGIN_PERCENT = 20n;
const GAS_MARGIN_FIXED = 10_000n;

/**
 * Sends every transaction with a gas limit above the node's estimate. An estimate is exact only for the state
 * and block it was made on; a transaction mined a block later (another timestamp, another voucher redeemed
 * first) can need more, and with no margin it runs out of gas (seen: estimated ~38.3k, needed 38.6k).
 */
class MarginedGasProvider extends JsonRpcProvider {
  override async estimateGas(tx: TransactionRequest): Promise<bigint> {
    const estimate = await super.estimateGas(tx);
    return estimate + (estimate * GAS_MARGIN_PERCENT) / 100n + GAS_MARGIN_FIXED;
  }
}

/**
 * A JSON-RPC provider for `rpcUrl`. With `chainId`, it never asks the node for its network; polls
 * fast on loopback; ethers' short response cache is off so reads right after a transaction are fresh;
 * transactions carry a gas margin over the estimate.
 */
export function createProvider(rpcUrl: string, chainId?: number): JsonRpcProvider {
  const loopback = /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(\/|$)/.test(rpcUrl);
  const network = chainId === undefined ? undefined : Network.from(chainId);
  return new MarginedGasProvider(rpcUrl, network, {
    staticNetwork: network ?? false,
    pollingInterval: loopback ? 100 : 4000,
    batchStallTime: loopback ? 0 : 10,
    cacheTimeout: -1,
  });
}

/** Writes a chain config as JSON (creating folders). */
export function writeChainConfig(file: string, config: ChainConfig): void {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const ordered: ChainConfig = {
    rpcUrl: config.rpcUrl,
    chainId: config.chainId,
    token: config.token,
    stakeRegistry: config.stakeRegistry,
    paymentEscrow: config.paymentEscrow,
    ...(config.disputeManager ? { disputeManager: config.disputeManager } : {}),
    deployer: config.deployer,
    blockNumber: config.blockNumber,
  };
  writeFileSync(file, `${JSON.stringify(ordered, null, 2)}\n`);
}

/** Reads and checks a chain config file. */
export function readChainConfig(file: string): ChainConfig {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const need = (k: string, type: 'string' | 'number'): void => {
    if (typeof raw[k] !== type) throw new Error(`chain config ${file}: "${k}" must be a ${type}`);
  };
  for (const k of ['rpcUrl', 'token', 'stakeRegistry', 'paymentEscrow', 'deployer']) need(k, 'string');
  for (const k of ['chainId', 'blockNumber']) need(k, 'number');
  if (raw.disputeManager !== undefined) need('disputeManager', 'string');
  return raw as unknown as ChainConfig;
}

let allErrors: Interface | undefined;

/**
 * The custom error a contract call reverted with, decoded against all four contracts' ABIs
 * (ethers leaves errors raised while estimating gas for a send undecoded).
 */
export function decodeRevert(err: unknown): { name: string; args: unknown[] } | undefined {
  if (isCallException(err) && err.revert) return { name: err.revert.name, args: [...err.revert.args] };
  const data = findRevertData(err);
  if (!data) return undefined;
  if (!allErrors) {
    const fragments = new Map<string, unknown>();
    for (const name of CONTRACT_NAMES) {
      for (const f of loadArtifact(name).abi as { type: string; name: string; inputs: { type: string }[] }[]) {
        if (f.type === 'error') fragments.set(`${f.name}(${f.inputs.map((i) => i.type).join(',')})`, f);
      }
    }
    allErrors = new Interface([...fragments.values()] as never);
  }
  try {
    const parsed = allErrors.parseError(data);
    return parsed ? { name: parsed.name, args: [...parsed.args] } : undefined;
  } catch {
    return undefined;
  }
}

/** The name of the custom error a contract call reverted with (e.g. "VoucherExpired"), if any. */
export function revertName(err: unknown): string | undefined {
  return decodeRevert(err)?.name;
}

function findRevertData(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 4) return undefined;
  const e = err as { data?: unknown; error?: unknown; info?: { error?: unknown } };
  if (typeof e.data === 'string' && isHexString(e.data) && e.data.length >= 10) return e.data;
  return findRevertData(e.error, depth + 1) ?? findRevertData(e.info?.error, depth + 1) ?? findRevertData(e.data, depth + 1);
}
