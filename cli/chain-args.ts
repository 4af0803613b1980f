/**
 * What the chain commands (stake, unstake, withdraw, deposit, earnings, redeem) share: the --rpc,
 * --chain-config, --wallet and --json options, token amounts in decimal token units, one-line errors for
 * reverts, and printing a result as text or JSON. The options themselves are declared in
 * cli/chain-options.ts, which the command tree loads without ethers.
 */
import { formatUnits, parseUnits } from 'ethers';
import { decodeRevert } from '../contracts/bindings.js';
import { openChain, type ChainAccess } from '../contracts/chain.js';
import { UsageError } from './errors.js';
import type { ChainCliOptions } from './chain-options.js';

export { AMOUNT_HELP, defaultChainConfig, withChainOptions, type ChainCliOptions } from './chain-options.js';

/** A failed chain call, reported on one line with the contract's error name. */
export class ChainCommandError extends Error {
  override name = 'ChainCommandError';
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Opens the chain for a command; a wallet is required unless `readOnly`. */
export async function openChainFor(o: ChainCliOptions, needsWallet: boolean): Promise<ChainAccess> {
  if (needsWallet && !o.wallet) throw new UsageError('this command signs transactions: pass --wallet KEYSTORE (passphrase in GRIDPIPE_PASSPHRASE)');
  return openChain({ chainConfig: o.chainConfig, rpcUrl: o.rpc, wallet: o.wallet });
}

/** The token's decimals (cached per access). */
export async function tokenDecimals(chain: ChainAccess): Promise<number> {
  return Number(await chain.contracts.token.decimals());
}

/** A decimal amount of whole tokens ("12.5") in base units; UsageError naming `what` when malformed. */
export function parseTokenAmount(value: string, decimals: number, what = 'AMOUNT'): bigint {
  if (!/^\d+(\.\d+)?$/.test(value.trim())) throw new UsageError(`${what} must be a decimal number of tokens like 12.5, got "${value}"`);
  let amount: bigint;
  try {
    amount = parseUnits(value.trim(), decimals);
  } catch {
    throw new UsageError(`${what} "${value}" has more than the token's ${decimals} decimals`);
  }
  if (amount <= 0n) throw new UsageError(`${what} must be more than 0`);
  return amount;
}

/** Base units as a decimal token amount. */
export function formatTokens(amount: bigint, decimals: number): string {
  return formatUnits(amount, decimals);
}

/** Checks the wallet holds `amount` and lets `spender` take it (approving only when the allowance is short). */
export async function approveSpend(chain: ChainAccess, spender: string, amount: bigint, amountText: string, decimals: number): Promise<void> {
  const { token } = chain.contracts;
  const me = chain.address!;
  const held = await token.balanceOf(me);
  if (held < amount) throw new UsageError(`${me} holds ${formatTokens(held, decimals)} tokens, less than ${amountText}`);
  if ((await token.allowance(me, spender)) < amount) await send('approve', () => token.approve(spender, amount));
}

/** Sends a transaction and waits for it; a revert becomes a one-line ChainCommandError. */
export async function send(what: string, tx: () => Promise<{ wait(): Promise<unknown> }>): Promise<void> {
  try {
    await (await tx()).wait();
  } catch (err) {
    const revert = decodeRevert(err);
    if (revert) throw new ChainCommandError('REVERTED', `${what} reverted: ${revert.name}(${revert.args.map(String).join(', ')})`);
    const e = err as { shortMessage?: string; message?: string; code?: string };
    throw new ChainCommandError(e.code ?? 'CHAIN_ERROR', `${what} failed: ${e.shortMessage ?? e.message ?? String(err)}`);
  }
}

/** Prints `result` as JSON (bigints as decimal strings) or as `text`. */
export function printResult(json: boolean, result: Record<string, unknown>, text: string): void {
  if (json) process.stdout.write(`${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  else process.stdout.write(`${text}\n`);
}

/** Runs `body` with an open chain and closes it afterwards. */
export async function withChain<T>(o: ChainCliOptions, needsWallet: boolean, body: (chain: ChainAccess) => Promise<T>): Promise<T> {
  const chain = await openChainFor(o, needsWallet);
  try {
    return await body(chain);
  } finally {
    chain.close();
  }
}
