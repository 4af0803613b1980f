/** `gridpipe supply`: run a supplier node until SIGINT/SIGTERM. */
import { Command, Option } from 'commander';
import os from 'node:os';
import path from 'node:path';
import { Supplier } from '../node/supplier.js';
import { byteSize, positiveInt, positiveNumber } from './args.js';
import { checkMultiaddrs, chooseNetwork, collect } from './network.js';
import { createProgress } from './progress.js';
import type { ProviderChoice } from '../node/exec/executor.js';
import { ShareLimits } from '../node/limits.js';
import { UsageError } from './errors.js';

/** The supply command. */
export function supplyCommand(): Command {
  return new Command('supply')
    .description('Run a supplier node: join the grid, host fragments and run them for clients')
    .option('--data <dir>', 'data folder (identity, datastore, fragments)', path.join(os.homedir(), '.gridpipe', 'supplier'))
    .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect, [])
    .option('--announce <multiaddr>', 'address to announce instead (repeatable)', collect, [])
    .option('--bootstrap <multiaddr>', 'peer to join through, with /p2p/<id> (repeatable)', collect, [])
    .option('--host <dir-or-cid>', 'fragment folder or manifest CID to host (repeatable)', collect, [])
    .option('--fragments <list>', 'fragment indices to host, e.g. 0,1 (default: all)', (v: string) => v.split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--fragments takes indices like 0,1,2, got "${v}"`);
      return n;
    }))
    .option('--max-memory <bytes>', 'memory lent for KV caches and activations (e.g. 8GiB)', byteSize)
    .option('--max-sessions <n>', 'sessions served at once', positiveInt)
    .option('--threads <n>', 'onnxruntime threads', positiveInt)
    .option('--gpu-share <f>', 'share of the GPU lent, in (0, 1]', positiveNumber)
    .option('--hours <window>', 'serve only during this daily window, e.g. 22:00-08:00 (local time)')
    .option('--paused', 'start paused (resume with SIGUSR2 or POST /resume on the admin port)', false)
    .option('--price <base-units>', 'price per GFLOP in the payment token\'s base units', '0')
    .option('--staking-address <0x...>', 'EVM address that stakes for this supplier')
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--mdns', 'discover peers on the LAN', false)
    .option('--relay', 'use circuit relays and hole punching when behind NAT', false)
    .option('--admin-port <port>', 'local admin endpoint on 127.0.0.1 (0 = any free port)', (v: string) => Number(v))
    .addOption(new Option('--provider <ep>', 'execution provider to try first').choices(['auto', 'cpu', 'cuda', 'webgpu']))
    .option('--reprobe', 're-run the capacity probe instead of using the cached one', false)
    .option('--json', 'print one JSON line when ready (for scripts)', false)
    .action(async (o: {
      data: string; listen: string[]; announce: string[]; bootstrap: string[]; host: string[]; fragments?: number[];
      maxMemory?: number; maxSessions?: number; threads?: number; gpuShare?: number; hours?: string; paused: boolean;
      price: string; stakingAddress?: string; network: string; mdns: boolean; relay: boolean; adminPort?: number;
      provider?: ProviderChoice; reprobe: boolean; json: boolean;
    }) => {
      if (!/^\d+$/.test(o.price)) throw new UsageError(`--price must be a whole number of token base units, got "${o.price}"`);
      if (o.stakingAddress && !/^0x[0-9a-fA-F]{40}$/.test(o.stakingAddress)) throw new UsageError(`--staking-address must be a 0x-prefixed 20-byte address, got "${o.stakingAddress}"`);
      const limits = { maxMemoryBytes: o.maxMemory, maxSessions: o.maxSessions, threads: o.threads, gpuShare: o.gpuShare, hours: o.hours, paused: o.paused };
      try {
        new ShareLimits(limits, { memoryBytes: os.totalmem(), cores: os.cpus().length }); // checks the values before anything starts
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      checkMultiaddrs('--listen', o.listen);
      checkMultiaddrs('--announce', o.announce);
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      let network;
      try {
        network = chooseNetwork(o.network, [...o.listen, ...o.bootstrap]);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      const progress = createProgress('fetching fragments', o.json);
      const supplier = await Supplier.start({
        dataDir: o.data, listen: o.listen.length ? o.listen : undefined, announce: o.announce.length ? o.announce : undefined,
        bootstrap: o.bootstrap, network, mdns: o.mdns, relay: o.relay,
        host: o.host, fragments: o.fragments,
        limits,
        pricePerGflop: o.price, stakingAddress: o.stakingAddress, adminPort: o.adminPort, provider: o.provider, rerunProbe: o.reprobe,
        onFetchProgress: (done, total) => progress.update(done, total),
      });
      progress.stop();
      const ready = {
        peerId: supplier.peerId, addresses: supplier.addresses(), admin: supplier.adminUrl,
        hosted: supplier.hosted.map((h) => ({ manifestCid: h.manifestCid, index: h.index, cid: h.cid })),
        provider: supplier.probe.benchmark.executionProvider, gflops: Number(supplier.probe.benchmark.matmulGflops.toFixed(2)),
      };
      if (o.json) process.stdout.write(`${JSON.stringify({ ready: true, ...ready })}\n`);
      else {
        process.stdout.write(`supplier ${ready.peerId} ready\n${ready.addresses.map((a) => `  listening on ${a}`).join('\n')}\n`);
        for (const h of ready.hosted) process.stdout.write(`  hosting fragment ${h.index} of ${h.manifestCid}\n`);
        for (const note of supplier.probe.notes) process.stdout.write(`  note: ${note}\n`);
        if (ready.admin) process.stdout.write(`  admin: ${ready.admin} (POST /pause, POST /resume, GET /status, GET /metrics)\n`);
      }
      process.on('SIGUSR1', () => { void supplier.pause(); });
      process.on('SIGUSR2', () => { void supplier.resume(); });
      await new Promise<void>((resolve) => {
        const shutdown = (): void => { resolve(); };
        process.once('SIGINT', shutdown);
        process.once('SIGTERM', shutdown);
      });
      await supplier.stop();
      if (!o.json) process.stdout.write('supplier stopped\n');
    });
}
