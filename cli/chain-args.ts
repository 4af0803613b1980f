/**
 * What the chain commands (stake, unstake, withdraw, deposit, earnings, redeem) share: the --rpc,
 * --chain-config, --wallet and --json options, token amounts in decimal token units, the wallet as the
 * account the chain actions (contracts/actions.ts) act for, and printing a result as text or JSON. The
 * options themselves are declared in cli/chain-options.ts, which the command tree loads without ethers.
 */
import { formatUnits, parseUnits } from 'ethers';
import type { ActingAccount } from '../contracts/actions.js';
import { openChain, requireWallet, type ChainAccess } from '../contracts/chain.js';
import { UsageError } from './errors.js';
import { GridpipeError } from '../errors/base.js';
import { checkTokenAmountText, type ChainCliOptions } from './chain-options.js';

export { AMOUNT_HELP, checkTokenAmountText, defaultChainConfig, withChainOptions, type ChainCliOptions } from './chain-options.js';

/** A failed chain call, reported on one line with the contract's error name. */
export class ChainCommandError extends GridpipeError {
  override name = 'ChainCommandError';
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
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
  checkTokenAmountText(value, what);
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

/** The wallet's side of the chain actions (contracts/actions.ts): the access's contracts and address. */
export function actingAccount(chain: ChainAccess): ActingAccount {
  requireWallet(chain, 'this command');
  return { contracts: chain.contracts, address: chain.address! };
}

/** UsageError unless the wallet holds `amount` (`amountText` as the user wrote it). */
export async function checkBalance(chain: ChainAccess, amount: bigint, amountText: string, decimals: number): Promise<void> {
  const me = chain.address!;
  const held = await chain.contracts.token.balanceOf(me);
  if (held < amount) throw new UsageError(`${me} holds ${formatTokens(held, decimals)} tokens, less than ${amountText}`);
}

/** Prints `result` as JSON (bigints as decimal strings) or as `text`. */
export function printResult(json: boolean, result: Record<string, unknown>, text: string): void {
  if (json) process.stdout.write(`${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  else process.stdout.write(`${text}\n`);
}

/** Node's codes for an RPC endpoint that cannot be reached at all. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ETIMEDOUT']);

/** Runs `body` with an open chain and closes it afterwards; an RPC that cannot be reached is one line, exit 1. */
export async function withChain<T>(o: ChainCliOptions, needsWallet: boolean, body: (chain: ChainAccess) => Promise<T>): Promise<T> {
  const chain = await openChainFor(o, needsWallet);
  try {
    return await body(chain);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && UNREACHABLE.has(code)) throw new ChainCommandError('RPC_UNREACHABLE', `no chain RPC answers at ${chain.config.rpcUrl} (${code})`, { cause: err });
    throw err;
  } finally {
    chain.close();
  }
}
