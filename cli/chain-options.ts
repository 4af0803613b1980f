/**
 * What the chain commands declare, apart from what they do: the shared --chain-config, --rpc, --wallet
 * and --json options and the amount help. Kept apart from cli/chain-args.ts (which needs ethers and the
 * contract bindings) so that building the command tree loads neither.
 */
import { Command, Option } from 'commander';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from './errors.js';

/** Help for a token amount argument (stake, unstake, deposit). */
export const AMOUNT_HELP = 'amount in tokens, decimals allowed (e.g. 12.5; not base units)';

export interface ChainCliOptions { rpc?: string; chainConfig: string; wallet?: string; json: boolean }

/** Default chain config: $GRIDPIPE_CHAIN_CONFIG, else ~/.gridpipe/chain.json. */
export function defaultChainConfig(): string {
  return process.env.GRIDPIPE_CHAIN_CONFIG ?? path.join(os.homedir(), '.gridpipe', 'chain.json');
}

/** Adds the shared options to a chain command. */
export function withChainOptions(cmd: Command, walletHelp = 'encrypted keystore of the account (passphrase in GRIDPIPE_PASSPHRASE)'): Command {
  return cmd
    .addOption(new Option('--chain-config <file>', 'chain config JSON written by the deploy script').default(defaultChainConfig(), '$GRIDPIPE_CHAIN_CONFIG or ~/.gridpipe/chain.json'))
    .option('--rpc <url>', 'EVM JSON-RPC URL (default: the chain config\'s)')
    .option('--wallet <keystore>', walletHelp)
    .option('--json', 'print the result as one JSON line', false);
}

/** Checks that `value` reads as a decimal token amount, before anything reaches the chain; UsageError naming `what`. */
export function checkTokenAmountText(value: string, what = 'AMOUNT'): void {
  if (!/^\d+(\.\d+)?$/.test(value.trim())) throw new UsageError(`${what} must be a decimal number of tokens like 12.5, got "${value}"`);
}
