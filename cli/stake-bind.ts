/**
 * `gridpipe stake bind --peer PEERID --wallet W [--days N] --out FILE`: the staking key signs that it
 * operates one supplier peer (an EIP-712 stake binding over the StakeRegistry's domain), for a supplier
 * that runs without the key (`gridpipe supply --staking-address 0x… --stake-binding FILE`). Without a
 * binding, readers ignore the staking address a record names, so stake cannot be borrowed.
 * Signing needs no transaction; it reads the chain only to warn when the address is not staked.
 */
import { Command, InvalidArgumentError } from 'commander';
import { withChainOptions, type ChainCliOptions } from './chain-options.js';
import { UsageError } from './errors.js';

function days(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 366) throw new InvalidArgumentError(`expected a number of days in (0, 366], got "${value}"`);
  return n;
}

export function stakeBindCommand(): Command {
  return withChainOptions(new Command('bind')
    .description('Sign that this staking account operates a supplier peer id (for `gridpipe supply --stake-binding FILE`)')
    .requiredOption('--peer <peer-id>', 'the supplier\'s libp2p peer id (printed by `gridpipe supply` and `gridpipe peers`)')
    .option('--days <n>', 'how long the binding holds', days, 30)
    .requiredOption('--out <file>', 'where to write the binding (JSON; a signature, no secret)'), 'keystore of the staking account (passphrase in GRIDPIPE_PASSPHRASE)')
    .action(async (_o: unknown, cmd: Command) => {
      // libp2p's peer ids and ethers load here, not with the command tree.
      const { peerIdFromString } = await import('@libp2p/peer-id');
      const { makeStakeBinding, writeStakeBindingFile } = await import('../net/capacity/binding.js');
      const { requireWallet } = await import('../contracts/chain.js');
      const { withChain, printResult } = await import('./chain-args.js');
      // `stake` has the same chain options and commander gives them to it: read both levels.
      const o = cmd.optsWithGlobals<ChainCliOptions & { peer: string; days: number; out: string }>();
      try {
        peerIdFromString(o.peer);
      } catch {
        throw new UsageError(`--peer must be a libp2p peer id, got "${o.peer}"`);
      }
      await withChain(o, true, async (chain) => {
        const wallet = requireWallet(chain, 'gridpipe stake bind');
        const statement = await makeStakeBinding(wallet, o.peer, { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry }, Math.round(o.days * 86400));
        await writeStakeBindingFile(o.out, statement);
        const listed = await chain.contracts.stakeRegistry.isListed(statement.operator).catch(() => undefined);
        if (listed === false) process.stderr.write(`gridpipe: warning: ${statement.operator} is not staked (enough) in the StakeRegistry; the binding holds but clients route only to staked suppliers\n`);
        printResult(o.json, { operator: statement.operator, peerId: statement.peerId, until: statement.until, out: o.out },
          `${statement.operator} operates ${statement.peerId} until ${new Date(statement.until * 1000).toISOString()}: wrote ${o.out}`);
      });
    });
}
