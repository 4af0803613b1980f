#!/usr/bin/env node
/** The `gridpipe` command. */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { reportFailure } from './errors.js';
import { VERSION } from '../fragments/version.js';
import { modelCommand } from './model.js';
import { devnetCommand } from './devnet.js';
import { supplyCommand } from './supply.js';
import { peersCommand } from './peers.js';
import { generateCommand } from './generate.js';
import { gatewayCommand } from './gateway.js';
import { callCommand } from './call.js';
import { walletCommand } from './wallet.js';
import { stakeCommand, unstakeCommand, withdrawCommand } from './stake.js';
import { depositCommand } from './deposit.js';
import { earningsCommand, redeemCommand } from './earnings.js';
import { arbiterCommand } from './arbiter.js';

/** Builds the command tree (exported for tests). */
export function createProgram(): Command {
  const program = new Command('gridpipe')
    .description('A peer-to-peer grid that serves models too large for any one supplier')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(modelCommand());
  program.addCommand(supplyCommand());
  program.addCommand(peersCommand());
  program.addCommand(generateCommand());
  program.addCommand(gatewayCommand());
  program.addCommand(callCommand());
  program.addCommand(devnetCommand());
  program.addCommand(walletCommand());
  program.addCommand(stakeCommand());
  program.addCommand(unstakeCommand());
  program.addCommand(withdrawCommand());
  program.addCommand(depositCommand());
  program.addCommand(earningsCommand());
  program.addCommand(redeemCommand());
  program.addCommand(arbiterCommand());
  for (const cmd of program.commands) {
    cmd.exitOverride();
    for (const sub of cmd.commands) sub.exitOverride();
  }
  return program;
}

/** Runs the CLI; an expected failure is one line and exit code 2 (bad input) or 1 (cli/errors.ts). */
export async function main(argv: string[]): Promise<number> {
  try {
    await createProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportFailure(err);
  }
}

/** True when this file is the process's entry point (directly, or through the npm bin link). */
function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv).then((code) => { process.exitCode = code; });
}
