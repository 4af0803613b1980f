/**
 * The grid's chain actions as small typed functions (viem's style: one function per action, an account and
 * typed parameters in, the mined receipt out): stake, unstake, withdraw stake, deposit, redeem. The CLI, the
 * devnet, the benches and the tests all call these, so the ERC-20 dance before a stake or a deposit
 * (approve only when the allowance is short, then act) is written once, here, and a failed transaction
 * reads the same everywhere: one line naming the action and the contract's custom error.
 */
import type { ContractTransactionResponse, Signer, TransactionReceipt } from 'ethers';
import { GridpipeError } from '../errors/base.js';
import { connectGrid, decodeRevert, type ChainConfig, type GridContracts } from './bindings.js';
import type { SignedVoucher } from './eip712.js';

/** The grid's contracts bound to one signing account: what every action takes. */
export interface ActingAccount {
  /** Contracts connected to the account's signer. */
  contracts: GridContracts;
  /** The account's address (checksummed). */
  address: string;
}

/** The contracts of `config` bound to `signer` (a Wallet, a NonceManager...). */
export async function actingAs(config: ChainConfig, signer: Signer): Promise<ActingAccount> {
  return { contracts: connectGrid(config, signer), address: await signer.getAddress() };
}

/** A transaction that reverted or could not be sent: `<action> reverted: Error(args)` or `<action> failed: why`. */
export class ChainActionError extends GridpipeError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** What an action that spends the account's tokens did: its own receipt, and the approval's when one was needed. */
export interface SpendResult {
  receipt: TransactionReceipt;
  /** The ERC-20 approval sent first; undefined when the allowance already covered the amount. */
  approval?: TransactionReceipt;
}

/**
 * Sends one transaction and waits until it is mined; a revert becomes ChainActionError REVERTED naming the
 * contract's custom error, any other failure ChainActionError with ethers' code (CHAIN_ERROR without one).
 */
export async function sendAction(what: string, tx: () => Promise<ContractTransactionResponse>): Promise<TransactionReceipt> {
  let receipt: TransactionReceipt | null;
  try {
    receipt = await (await tx()).wait();
  } catch (err) {
    const revert = decodeRevert(err);
    if (revert) throw new ChainActionError('REVERTED', `${what} reverted: ${revert.name}(${revert.args.map(String).join(', ')})`, { cause: err });
    const e = err as { shortMessage?: string; message?: string; code?: string };
    throw new ChainActionError(e.code ?? 'CHAIN_ERROR', `${what} failed: ${e.shortMessage ?? e.message ?? String(err)}`, { cause: err });
  }
  if (!receipt || receipt.status !== 1) throw new ChainActionError('REVERTED', `${what} reverted`);
  return receipt;
}

/**
 * Lets `spender` take `amount` of the account's tokens: approves `approve` (default `amount`; MaxUint256 for
 * "once for all") only when the allowance is short of `amount`. Returns the approval's receipt, if one was sent.
 */
export async function approveIfShort(account: ActingAccount, spender: string, amount: bigint, approve = amount): Promise<TransactionReceipt | undefined> {
  const { token } = account.contracts;
  if ((await token.allowance(account.address, spender)) >= amount) return undefined;
  return sendAction('approve', () => token.approve(spender, approve));
}

/** Approve-then-act: the approval `spender` needs for `amount` (only when short), then the action itself. */
export async function approveThenAct(
  account: ActingAccount, spender: string, amount: bigint, what: string, act: () => Promise<ContractTransactionResponse>,
): Promise<SpendResult> {
  const approval = await approveIfShort(account, spender, amount);
  return { receipt: await sendAction(what, act), approval };
}

/** Stakes `amount` base units in the StakeRegistry (approving it first when needed). */
export async function stake(account: ActingAccount, params: { amount: bigint }): Promise<SpendResult> {
  const { stakeRegistry } = account.contracts;
  return approveThenAct(account, await stakeRegistry.getAddress(), params.amount, 'stake', () => stakeRegistry.stake(params.amount));
}

/** Requests to unstake `amount`: it unbonds for the registry's delay (still slashable), then `withdrawStake`. */
export function unstake(account: ActingAccount, params: { amount: bigint }): Promise<TransactionReceipt> {
  return sendAction('requestUnstake', () => account.contracts.stakeRegistry.requestUnstake(params.amount));
}

/** Takes back what has finished unbonding. */
export function withdrawStake(account: ActingAccount): Promise<TransactionReceipt> {
  return sendAction('withdraw', () => account.contracts.stakeRegistry.withdraw());
}

/** Deposits `amount` base units into the PaymentEscrow that the account's vouchers draw on (approving first when needed). */
export async function deposit(account: ActingAccount, params: { amount: bigint }): Promise<SpendResult> {
  const { paymentEscrow } = account.contracts;
  return approveThenAct(account, await paymentEscrow.getAddress(), params.amount, 'deposit', () => paymentEscrow.deposit(params.amount));
}

/** What redeeming needs: only the escrow, connected to whoever pays the gas (anyone may; the money goes to the payee). */
export type RedeemingAccount = { contracts: Pick<GridContracts, 'paymentEscrow'> };

/** Redeems one signed voucher (anyone may send it; the money goes to its payee). */
export function redeem(account: RedeemingAccount, params: { voucher: SignedVoucher }): Promise<TransactionReceipt> {
  const { signature, ...voucher } = params.voucher;
  return sendAction('redeem', () => account.contracts.paymentEscrow.redeem(voucher, signature));
}

/** Redeems several signed vouchers in one transaction (one token transfer per payee). */
export function redeemBatch(account: RedeemingAccount, params: { vouchers: readonly SignedVoucher[] }): Promise<TransactionReceipt> {
  const structs = params.vouchers.map(({ signature: _signature, ...voucher }) => voucher);
  const signatures = params.vouchers.map((v) => v.signature);
  return sendAction('redeemBatch', () => account.contracts.paymentEscrow.redeemBatch(structs, signatures));
}
