/** `gridpipe peers`: the capacity records a client can find in the DHT. */
import { Command, Option } from 'commander';
import { collect, positiveNumber } from './args.js';
import { formatBytes } from './progress.js';
import { UsageError } from './errors.js';
import { GridpipeError } from '../errors/base.js';

/** The peers command. */
export function peersCommand(): Command {
  return new Command('peers')
    .description('List the suppliers\' capacity records found in the DHT')
    .option('--bootstrap <multiaddr>', 'peer to join through, with /p2p/<id> (repeatable)', collect, [])
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--timeout <seconds>', 'how long to search', positiveNumber, 15)
    .option('--json', 'machine-readable output', false)
    .action(async (o: { bootstrap: string[]; network: string; timeout: number; json: boolean }) => {
      // libp2p loads here (after its polyfill), not with the command tree.
      await import('../net/polyfill.js');
      const { createLogger } = await import('../net/logger.js');
      const { createGridHost } = await import('../net/host.js');
      const { findAllRecords } = await import('../net/capacity/dht.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      if (o.bootstrap.length === 0) throw new UsageError('give at least one --bootstrap address to join the grid through');
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      const logger = createLogger('gridpipe', 'warn');
      const host = await createGridHost({ network: chooseNetwork(o.network, o.bootstrap), bootstrap: o.bootstrap, clientMode: true, logger });
      try {
        const deadline = Date.now() + o.timeout * 1000;
        while (host.routingTableSize() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        if (host.routingTableSize() === 0) throw new GridpipeError('NO_PEERS', `no peer answered at ${o.bootstrap.join(', ')} within ${o.timeout} s`);
        const records = await findAllRecords(host, { timeoutMs: Math.max(1000, deadline - Date.now()) });
        const live = records.filter((r) => !r.withdrawn);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(live, null, 2)}\n`);
          return;
        }
        if (live.length === 0) { process.stdout.write('no supplier records found\n'); return; }
        for (const r of live) {
          const hw = r.hardware;
          const gpus = hw?.gpus.length ? hw.gpus.map((g) => g.name).join(', ') : 'no GPU';
          process.stdout.write(`${r.peerId}\n  ${gpus}; ${hw?.cpuCores ?? '?'} cores, ${formatBytes(hw?.memoryTotalBytes ?? 0)}; ${r.benchmark?.matmulGflops.toFixed(1) ?? '?'} GFLOP/s on ${r.benchmark?.executionProvider ?? '?'}\n`);
          process.stdout.write(`  ${r.fragments.length} fragment(s)${r.fragments.length ? `: ${r.fragments.map((f) => `#${f.index} of ${f.manifestCid.slice(0, 16)}…`).join(', ')}` : ''}; price ${r.pricePerGflop}/GFLOP${r.limits?.paused ? '; PAUSED' : ''}; expires ${new Date(r.expiresAtMs).toISOString()}\n`);
        }
      } finally {
        await host.stop();
      }
    });
}
