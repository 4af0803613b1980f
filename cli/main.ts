#!/usr/bin/env node
/** The `gridpipe` command. */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { FragmentError } from '../fragments/onnx/errors.js';
import { IdentityError } from '../net/identity.js';
import { UsageError } from './errors.js';
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
  for (const cmd of program.commands) {
    cmd.exitOverride();
    for (const sub of cmd.commands) sub.exitOverride();
  }
  return program;
}

/** Runs the CLI; bad input exits 2 with a one-line message. */
export async function main(argv: string[]): Promise<number> {
  try {
    await createProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; commander already printed usage errors.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? 0 : 2;
    }
    if (err instanceof FragmentError || err instanceof UsageError || err instanceof IdentityError) {
      process.stderr.write(`gridpipe: error: ${err.message}\n`);
      return 2;
    }
    const e = err as NodeJS.ErrnoException;
    if (e?.code === 'ENOENT' || e?.code === 'EACCES' || e?.code === 'ENOSPC' || e?.code === 'EISDIR') {
      process.stderr.write(`gridpipe: error: ${e.message}\n`);
      return 2;
    }
    // Our typed runtime errors (no provider found, a peer refused...) carry a code and read well alone.
    if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && !process.env.GRIDPIPE_DEBUG) {
      process.stderr.write(`gridpipe: error: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`gridpipe: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
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
