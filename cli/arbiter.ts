/**
 * `gridpipe arbiter`: the arbiter service behind DisputeManager's `arbiter` role (issue 21), a process with its
 * own key. It watches for open disputes, re-runs each one's on-chain evidence on hosts of the span other than
 * the accused (gateway/verify/arbiter.ts) and resolves it: upheld slashes the supplier, rejected returns the
 * bond to it. Replaceable: the DisputeManager's owner points `setArbiter` at another service or a committee.
 * Hosts that charge are paid from the arbiter's own escrow (its --wallet), within price limits and a ceiling per
 * re-run, so a grid where every host charges can still be ruled on and a rogue price cannot drain it.
 */
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { baseUnitAmount, collect, positiveNumber } from './args.js';
import { DEFAULT_MAX_OVER_MEDIAN, DEFAULT_MAX_PRICE_PER_GFLOP } from '../policy/price-limits.js';
import { defaultChainConfig } from './chain-options.js';
import { UsageError } from './errors.js';

function count(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number of at least 1, got "${value}"`);
  return n;
}

/** The arbiter command. */
export function arbiterCommand(): Command {
  return new Command('arbiter')
    .description('Resolve disputes: re-run each open dispute\'s evidence on other hosts of the span and uphold (slash) or reject it')
    .addOption(new Option('--chain-config <file>', 'chain config JSON written by the deploy script').default(defaultChainConfig(), '$GRIDPIPE_CHAIN_CONFIG or ~/.gridpipe/chain.json'))
    .option('--rpc <url>', 'EVM JSON-RPC URL (default: the chain config\'s)')
    .option('--wallet <keystore>', 'keystore of the DisputeManager\'s arbiter account (passphrase in GRIDPIPE_PASSPHRASE)')
    .option('--bootstrap <multiaddr>', 'peer to join the grid through, with /p2p/<id> (repeatable)', collect, [])
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--data <dir>', 'data folder (the ledger of vouchers the arbiter signed to pay re-runs)', path.join(os.homedir(), '.gridpipe', 'arbiter'))
    .option('--max-price-per-gflop <base-units>', `never pay a host asking more per GFLOP for a re-run (token base units; default ${DEFAULT_MAX_PRICE_PER_GFLOP}, i.e. 0.001 GRID)`, baseUnitAmount, DEFAULT_MAX_PRICE_PER_GFLOP)
    .option('--max-over-median <factor>', `refuse hosts asking more than this many times the median price of the model's hosts (default ${DEFAULT_MAX_OVER_MEDIAN})`, positiveNumber, DEFAULT_MAX_OVER_MEDIAN)
    .option('--max-rerun-charge <base-units>', 'the most one host\'s re-run of one dispute may cost (token base units; default 10^16, i.e. 0.01 GRID)', baseUnitAmount)
    .option('--referees <n>', 'hosts that re-run each dispute (all must agree)', count, 2)
    .option('--every <seconds>', 'seconds between looks for open disputes', count, 5)
    .option('--once', 'resolve the disputes open now, print the rulings and exit', false)
    .option('--json', 'print one JSON line when ready (and the rulings with --once)', false)
    .action(async (o: {
      chainConfig: string; rpc?: string; wallet?: string; bootstrap: string[]; network: string; data: string; maxPricePerGflop: bigint; maxOverMedian: number;
      maxRerunCharge?: bigint; referees: number; every: number; once: boolean; json: boolean;
    }) => {
      if (!o.wallet) throw new UsageError('the arbiter signs resolveDispute: give --wallet KEYSTORE (the DisputeManager\'s arbiter account)');
      if (!o.bootstrap.length) throw new UsageError('the arbiter re-runs evidence on the grid: give --bootstrap MULTIADDR');
      await import('../net/polyfill.js');
      const { openChain, requireWallet } = await import('../contracts/chain.js');
      const { GridClient } = await import('../scheduler/client.js');
      const { Arbiter } = await import('../gateway/verify/arbiter.js');
      const { GridRerunner } = await import('../gateway/verify/grid-rerunner.js');
      const { createLogger } = await import('../net/logger.js');
      const { VoucherPayer } = await import('../gateway/payer/index.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      const logger = createLogger('gridpipe-arbiter');
      const chain = await openChain({ chainConfig: o.chainConfig, rpcUrl: o.rpc, wallet: o.wallet });
      try {
        const wallet = requireWallet(chain, 'resolving disputes');
        const dm = chain.contracts.disputeManager;
        if (!dm) throw new UsageError(`the chain config ${o.chainConfig} names no DisputeManager`);
        const role = await dm.arbiter();
        if (role.toLowerCase() !== wallet.address.toLowerCase()) throw new UsageError(`${wallet.address} is not the DisputeManager's arbiter (${role} is): the owner sets it with setArbiter`);
        // Pays re-runs on hosts that charge from the arbiter's escrow: exactly each charge, no credit window ahead.
        const payer = await VoucherPayer.open({ chain, dataDir: path.join(o.data, 'payer'), windowSteps: 0, logger });
        const client = await GridClient.connect({ bootstrap: o.bootstrap, network: chooseNetwork(o.network, o.bootstrap), logger, discovery: { lookupTimeoutMs: 5000 } })
          .catch(async (err: unknown) => { await payer.close(); throw err; });
        try {
          const rerunner = new GridRerunner(client, {
            logger, payer, priceLimits: { maxPricePerGflop: o.maxPricePerGflop, maxOverMedian: o.maxOverMedian }, ...(o.maxRerunCharge !== undefined ? { maxRerunCharge: o.maxRerunCharge } : {}),
          });
          const arbiter = new Arbiter({ disputeManager: dm, rerunner, referees: o.referees, logger });
          if (o.once) {
            const rulings = [...(await arbiter.sweep())].map(([id, r]) => ({ id: id.toString(), ...r }));
            const payments = rerunner.payments.map((p) => ({ ...p, charge: p.charge.toString() }));
            if (o.json) process.stdout.write(`${JSON.stringify({ rulings, payments })}\n`);
            else for (const r of rulings) process.stdout.write(`dispute ${r.id}: ${r.upheld ? 'upheld' : 'rejected'} (${r.reason})\n`);
            return;
          }
          arbiter.start(o.every * 1000);
          if (o.json) process.stdout.write(`${JSON.stringify({ ready: true, arbiter: wallet.address, disputeManager: await dm.getAddress(), peerId: client.host.peerId.toString() })}\n`);
          else process.stdout.write(`arbiter ${wallet.address} watching DisputeManager ${await dm.getAddress()} for open disputes\n`);
          await new Promise<void>((resolve) => {
            process.once('SIGINT', () => resolve());
            process.once('SIGTERM', () => resolve());
          });
          await arbiter.stop();
        } finally {
          await client.close();
          await payer.close();
        }
      } finally {
        chain.close();
      }
    });
}
