/**
 * `gridpipe supply`: run a supplier node until SIGINT/SIGTERM. `--host <manifest CID>` without
 * `--fragments` lets placement choose the span (weakest coverage that fits --max-memory, capped by
 * --max-fragments) and move it when the swarm is badly balanced; `--fragments` fixes it.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { byteSize, collect, nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { createProgress } from './progress.js';
import type { ProviderChoice } from '../node/exec/executor.js';
import { UsageError } from './errors.js';
import { tuneHeapForServing } from './heap-tuning.js';
import { isEvmAddress } from '../contracts/address.js';

/** Seconds (decimals allowed, 0 included) as milliseconds. */
function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || value.trim() === '') throw new InvalidArgumentError(`expected a number of seconds, got "${value}"`);
  return Math.round(n * 1000);
}

/** Each --host is a fragment folder or a manifest CID: said before anything starts (the probe takes seconds). */
async function checkHostSources(sources: string[]): Promise<void> {
  const { parseBlobCid } = await import('../net/store/fragment-store.js');
  for (const source of sources) {
    if (existsSync(source) && statSync(source).isDirectory()) continue;
    try {
      parseBlobCid(source);
    } catch {
      throw new UsageError(`--host ${source}: neither a fragment folder nor a manifest CID`);
    }
  }
}

/** How long the reachability line waits for the capacity record that advertises the new addresses. */
const ADVERTISE_WAIT_MS = 10_000;

/**
 * Says how others reach the supplier each time that changes (a relay slot reserved behind NAT): a JSON line
 * `{"reachability", "addresses", "advertised"}` with --json, else one line of text, once the capacity record
 * naming the new addresses is published (`advertised: true`) or ADVERTISE_WAIT_MS have passed (`false`: the
 * publisher keeps trying, as after any failed publication). Returns the unsubscribe.
 */
function reportReachability(supplier: import('../node/supplier.js').Supplier, json: boolean): () => void {
  let said = supplier.host.reachability();
  let chain = Promise.resolve();
  const onUpdate = (): void => {
    chain = chain.then(async () => {
      const now = supplier.host.reachability();
      if (now === said) return;
      said = now;
      // the record names the new addresses first (not while paused: then no record is out)
      let advertised = false;
      if (supplier.publisher.isRunning) {
        let timer: NodeJS.Timeout | undefined;
        const waited = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ADVERTISE_WAIT_MS); });
        advertised = await Promise.race([supplier.publisher.publishNow().then((r) => r.ok, () => false), waited]);
        clearTimeout(timer);
      }
      const addresses = supplier.addresses();
      if (json) process.stdout.write(`${JSON.stringify({ reachability: now, addresses, advertised })}\n`);
      else process.stdout.write(`reachable: ${now}${now === 'relayed' ? ` (${addresses.filter((a) => a.includes('/p2p-circuit')).join(', ')})` : ''}\n`);
    });
  };
  supplier.host.node.addEventListener('self:peer:update', onUpdate);
  return () => supplier.host.node.removeEventListener('self:peer:update', onUpdate);
}

/** The supply command. */
export function supplyCommand(): Command {
  return new Command('supply')
    .description('Run a supplier node: join the grid, host fragments and run them for clients')
    .option('--data <dir>', 'data folder (identity, datastore, fragments)', path.join(os.homedir(), '.gridpipe', 'supplier'))
    .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect, [])
    .option('--announce <multiaddr>', 'address to announce instead (repeatable)', collect, [])
    .option('--bootstrap <multiaddr>', 'peer to join through, with /p2p/<id> (repeatable)', collect, [])
    .option('--host <dir-or-cid>', 'fragment folder or manifest CID to host (repeatable)', collect, [])
    .option('--fragments <list>', 'fragment indices to host, e.g. 0,1, or "all" (default: all of a folder; for a manifest CID, the span placement chooses)', (v: string): number[] | 'all' => (v === 'all' ? 'all' : v.split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--fragments takes indices like 0,1,2 or "all", got "${v}"`);
      return n;
    })))
    .option('--place', 'placement: choose the span also for a fragment folder (which is imported whole and shared with others; default for a folder: host all of it)', false)
    .option('--max-fragments <n>', 'placement: host at most this many fragments (default: as many as fit in --max-memory)', positiveInt)
    .option('--kv-tokens <n>', 'placement: KV-cache positions budgeted per hosted fragment', positiveInt, 4096)
    .addOption(new Option('--join-jitter <seconds>', 'placement: wait a random time up to this before choosing a span').argParser(seconds).default(5000, '5'))
    .addOption(new Option('--rebalance-every <seconds>', 'placement: mean time between checks of the swarm\'s balance').argParser(seconds).default(60_000, '60'))
    .option('--no-rebalance', 'placement: keep the first span chosen (no moves)')
    .option('--balance-quality <q>', 'placement: move when the bottleneck would grow beyond 1/q of itself (0..1)', (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`expected a number in [0, 1], got "${v}"`);
      return n;
    }, 0.75)
    .addOption(new Option('--drain <seconds>', 'placement: how long sessions on a span left behind may go on').argParser(seconds).default(60_000, '60'))
    .option('--gflops <n>', 'compute rate (GFLOP/s) to advertise and place with, instead of the probe\'s', positiveNumber)
    .option('--max-memory <bytes>', 'memory lent (e.g. 8GiB): KV caches and activations, and for placement the span\'s weights plus KV budget (default: a quarter of RAM)', byteSize)
    .option('--max-sessions <n>', 'sessions served at once', positiveInt)
    .option('--max-sessions-per-peer <n>', 'sessions one remote peer may hold at once (default: half of --max-sessions)', positiveInt)
    .option('--threads <n>', 'onnxruntime threads', positiveInt)
    .option('--gpu-share <f>', 'share of the GPU lent, in (0, 1]', positiveNumber)
    .option('--hours <window>', 'serve only during this daily window, e.g. 22:00-08:00 (local time)')
    .option('--paused', 'start paused (resume with SIGUSR2 or POST /resume on the admin port)', false)
    .option('--price-per-gflop <base-units>', 'price per GFLOP, a whole number of the payment token\'s base units (10^-18 token for GridToken)', '0')
    .addOption(new Option('--price <base-units>', 'old name of --price-per-gflop').hideHelp())
    // `<address>`, not `<0x...>`: commander reads a placeholder ending in "..." as variadic (an array).
    .option('--staking-address <address>', 'EVM address that stakes for this supplier (with --wallet: the wallet\'s)')
    .option('--stake-binding <file>', 'the staking key\'s signed binding to this peer (gridpipe stake bind), for a supplier without --wallet')
    .option('--chain-config <file>', 'charge for steps: the chain config JSON (payments need it with --wallet)')
    .option('--rpc <url>', 'EVM JSON-RPC URL (default: the chain config\'s)')
    .option('--wallet <keystore>', 'charge for steps: the supplier\'s staking account, an encrypted keystore (passphrase in GRIDPIPE_PASSPHRASE); vouchers must pay it')
    .option('--credit-limit <tokens>', 'unpaid work allowed per payer, in tokens (decimals allowed, e.g. 0.01)')
    .option('--credit-per-peer <tokens>', 'unpaid work allowed over all payers one remote peer names, in tokens (default: the credit limit)')
    .option('--credit-total <tokens>', 'unpaid work allowed over all payers, in tokens (default: 16 × the credit limit)')
    .option('--redeem-threshold <tokens>', 'redeem vouchers once this much is unredeemed, in tokens (decimals allowed, e.g. 1)')
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--mdns', 'discover peers on the LAN', false)
    .option('--relay', 'behind NAT: be reached through circuit relays, upgrade to direct connections by hole punching (DCUtR)', false)
    .option('--relay-server', 'offer circuit relay service to suppliers behind NAT (needs a public address)', false)
    .option('--admin-port <port>', 'local admin endpoint on 127.0.0.1 (0 = any free port)', (v: string) => Number(v))
    .addOption(new Option('--provider <ep>', 'execution provider to try first').choices(['auto', 'cpu', 'cuda', 'webgpu']))
    .option('--reprobe', 're-run the capacity probe instead of using the cached one', false)
    .option('--spin', 'let onnxruntime threads spin between the ops of a step (they park after it): faster steps on cores the supplier has to itself', false)
    .option('--inline-runs', 'run onnxruntime on the node\'s own thread, not a worker thread per fragment: ~0.5 ms faster per step, but a long run blocks the node (for trusted clients only)', false)
    .option('--inline-below-ms <ms>', 'runs measured shorter than this in the worker thread (a small span\'s decode steps) move to the node\'s own thread, skipping the hand-off (CPU fragments that load in under 250 ms); 0: never', nonNegativeInt, 20)
    .option('--max-batch <n>', 'most concurrent sessions\' steps on one span merged into one onnxruntime run (1: no batching)', positiveInt, 16)
    .option('--batch-window-us <n>', 'longest wait (µs) for other active sessions\' steps to batch with (also at most half a session\'s interval between steps); a lone session never waits', nonNegativeInt, 200000)
    .option('--peer-garbage-limit <n>', 'malformed exec/blob messages a peer may send per minute before it is hung up on and refused for a while', positiveInt, 16)
    .option('--peer-stream-limit <n>', 'streams a peer may open per 10 s before it is hung up on and refused for a while', positiveInt, 600)
    .option('--peer-refuse <seconds>', 'how long a peer that flooded or sent garbage is refused the first time (doubled per repeat offence, at most 30 min)', positiveNumber, 60)
    .option('--explorer [port]', 'serve the network explorer (web page and API) on 127.0.0.1:PORT (default: any free port)')
    .option('--json', 'print one JSON line when ready (for scripts)', false)
    .action(async (o: {
      data: string; listen: string[]; announce: string[]; bootstrap: string[]; host: string[]; fragments?: number[] | 'all';
      place: boolean; maxFragments?: number; kvTokens: number; joinJitter: number; rebalanceEvery: number; rebalance: boolean; balanceQuality: number;
      drain: number; gflops?: number;
      maxMemory?: number; maxSessions?: number; maxSessionsPerPeer?: number; threads?: number; gpuShare?: number; hours?: string; paused: boolean;
      pricePerGflop: string; price?: string; stakingAddress?: string; stakeBinding?: string; network: string;
      chainConfig?: string; rpc?: string; wallet?: string; creditLimit?: string; creditPerPeer?: string; creditTotal?: string; redeemThreshold?: string; mdns: boolean; relay: boolean; relayServer: boolean; adminPort?: number;
      provider?: ProviderChoice; reprobe: boolean; spin: boolean; inlineRuns: boolean; inlineBelowMs: number; maxBatch: number; batchWindowUs: number; json: boolean;
      peerGarbageLimit: number; peerStreamLimit: number; peerRefuse: number;
      explorer?: boolean | string;
    }) => {
      tuneHeapForServing();
      // The supplier (libp2p, onnxruntime, LevelDB, ethers) loads here, not with the command tree.
      const { Supplier } = await import('../node/supplier.js');
      const { ShareLimits } = await import('../node/limits.js');
      const { openChain } = await import('../contracts/chain.js');
      const { PAYMENT_DEFAULTS } = await import('../node/payments/supplier-payments.js');
      const { parseTokenAmount, formatTokens, tokenDecimals } = await import('./chain-args.js');
      const { readStakeBindingFile } = await import('../net/capacity/binding.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      const explorerPort = o.explorer === undefined ? undefined : o.explorer === true ? 0 : Number(o.explorer);
      if (explorerPort !== undefined && (!Number.isInteger(explorerPort) || explorerPort < 0 || explorerPort > 65535)) throw new UsageError(`--explorer takes a port number (0-65535), got "${String(o.explorer)}"`);
      if (o.rebalanceEvery <= 0) throw new UsageError('--rebalance-every must be more than 0 seconds (use --no-rebalance to turn moves off)');
      if (o.place && o.fragments !== undefined) throw new UsageError('--place lets placement choose the span; drop it or --fragments');
      if (o.fragments !== undefined && o.maxFragments !== undefined) throw new UsageError('--max-fragments applies when the supplier chooses its span; drop it or --fragments');
      const price = o.price ?? o.pricePerGflop;
      if (!/^\d+$/.test(price)) throw new UsageError(`--price-per-gflop must be a whole number of token base units, got "${price}"`);
      if ((o.chainConfig || o.rpc || o.creditLimit || o.creditPerPeer || o.creditTotal || o.redeemThreshold) && !o.wallet) throw new UsageError('charging for steps needs --wallet KEYSTORE (and --chain-config FILE)');
      if (o.wallet && !o.chainConfig) throw new UsageError('--wallet charges for steps and needs --chain-config FILE');
      if (o.stakingAddress && !isEvmAddress(o.stakingAddress)) throw new UsageError(`--staking-address must be a 0x-prefixed 20-byte address, got "${o.stakingAddress}"`);
      let stakeBinding;
      if (o.stakeBinding) {
        if (o.wallet) throw new UsageError('--stake-binding is for a supplier without its staking key; with --wallet the supplier signs its own binding');
        stakeBinding = await readStakeBindingFile(o.stakeBinding);
      }
      const limits = { maxMemoryBytes: o.maxMemory, maxSessions: o.maxSessions, maxSessionsPerPeer: o.maxSessionsPerPeer, threads: o.threads, gpuShare: o.gpuShare, hours: o.hours, paused: o.paused };
      try {
        new ShareLimits(limits, { memoryBytes: os.totalmem(), cores: os.cpus().length }); // checks the values before anything starts
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      await checkHostSources(o.host);
      checkMultiaddrs('--listen', o.listen);
      checkMultiaddrs('--announce', o.announce);
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      let network;
      try {
        network = chooseNetwork(o.network, [...o.listen, ...o.bootstrap]);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      let payments;
      if (o.wallet && o.chainConfig) {
        // Decrypt the wallet and read the token's decimals before anything starts: bad input fails fast.
        const chain = await openChain({ chainConfig: o.chainConfig, rpcUrl: o.rpc, wallet: o.wallet });
        try {
          const decimals = await tokenDecimals(chain);
          payments = {
            chain,
            creditLimit: o.creditLimit === undefined ? undefined : parseTokenAmount(o.creditLimit, decimals, '--credit-limit'),
            creditPerPeer: o.creditPerPeer === undefined ? undefined : parseTokenAmount(o.creditPerPeer, decimals, '--credit-per-peer'),
            creditTotal: o.creditTotal === undefined ? undefined : parseTokenAmount(o.creditTotal, decimals, '--credit-total'),
            redeemThreshold: o.redeemThreshold === undefined ? undefined : parseTokenAmount(o.redeemThreshold, decimals, '--redeem-threshold'),
          };
          // Clients route only to staked suppliers: say so now rather than wait for traffic that never comes.
          const listed = await chain.contracts.stakeRegistry.isListed(chain.address!);
          if (!listed) process.stderr.write(`gridpipe: warning: ${chain.address} is not staked (enough) in the StakeRegistry; clients will not route to this supplier until it is (gridpipe stake AMOUNT)\n`);
          if (!o.json) {
            process.stdout.write(`charging ${price} base units per GFLOP to ${chain.address}; credit limit ${formatTokens(payments.creditLimit ?? PAYMENT_DEFAULTS.creditLimit, decimals)}, redeem at ${formatTokens(payments.redeemThreshold ?? PAYMENT_DEFAULTS.redeemThreshold, decimals)} tokens\n`);
          }
        } catch (err) {
          chain.close();
          throw err;
        }
      }
      const progress = createProgress('fetching fragments', o.json);
      const supplier = await Supplier.start({
        dataDir: o.data, listen: o.listen.length ? o.listen : undefined, announce: o.announce.length ? o.announce : undefined,
        bootstrap: o.bootstrap, network, mdns: o.mdns, relay: o.relay, relayServer: o.relayServer,
        host: o.host, fragments: o.fragments === 'all' ? undefined : o.fragments,
        placement: o.fragments === 'all' ? false : {
          folders: o.place, maxFragments: o.maxFragments, kvTokens: o.kvTokens, joinJitterMs: o.joinJitter, rebalance: o.rebalance,
          checkEveryMs: o.rebalanceEvery, q: o.balanceQuality, drainMs: o.drain,
        },
        gflops: o.gflops,
        limits,
        pricePerGflop: price, stakingAddress: o.stakingAddress, stakeBinding, payments, adminPort: o.adminPort, provider: o.provider, rerunProbe: o.reprobe, spin: o.spin, inlineRuns: o.inlineRuns, inlineBelowMs: o.inlineBelowMs,
        maxBatch: o.maxBatch, batchWindowUs: o.batchWindowUs,
        peerGuard: { garbage: { limit: o.peerGarbageLimit, windowMs: 60_000 }, streams: { limit: o.peerStreamLimit, windowMs: 10_000 }, refuseMs: o.peerRefuse * 1000 },
        onFetchProgress: (done, total) => progress.update(done, total),
      });
      progress.stop();
      const explorer = explorerPort === undefined ? undefined
        : await (await import('./explorer.js')).nodeExplorer(supplier.host, { port: explorerPort, chainConfig: o.chainConfig, rpcUrl: o.rpc });
      if (supplier.stakeProblem) process.stderr.write(`gridpipe: warning: ${supplier.stakeProblem}\n`);
      const ready = {
        peerId: supplier.peerId, addresses: supplier.addresses(), admin: supplier.adminUrl,
        hosted: supplier.hosted.map((h) => ({ manifestCid: h.manifestCid, index: h.index, cid: h.cid })),
        ...(supplier.payments ? { payee: supplier.payments.payee, pricePerGflop: price } : {}),
        provider: supplier.probe.benchmark.executionProvider, gflops: Number(supplier.gflops.toFixed(2)), reachability: supplier.host.reachability(),
        placement: supplier.placement.map((p) => ({ manifestCid: p.manifestCid, span: p.span })),
        ...(explorer ? { explorer: explorer.url } : {}),
      };
      if (o.json) process.stdout.write(`${JSON.stringify({ ready: true, ...ready })}\n`);
      else {
        process.stdout.write(`supplier ${ready.peerId} ready\n${ready.addresses.map((a) => `  listening on ${a}`).join('\n')}\n`);
        for (const h of ready.hosted) process.stdout.write(`  hosting fragment ${h.index} of ${h.manifestCid}\n`);
        for (const note of supplier.probe.notes) process.stdout.write(`  note: ${note}\n`);
        if (ready.admin) process.stdout.write(`  admin: ${ready.admin} (POST /pause, POST /resume, GET /status, GET /metrics)\n`);
        if (explorer) process.stdout.write(`  explorer: ${explorer.url}\n`);
      }
      const stopReporting = reportReachability(supplier, o.json);
      process.on('SIGUSR1', () => { void supplier.pause(); });
      process.on('SIGUSR2', () => { void supplier.resume(); });
      await new Promise<void>((resolve) => {
        const shutdown = (): void => { resolve(); };
        process.once('SIGINT', shutdown);
        process.once('SIGTERM', shutdown);
      });
      await explorer?.close();
      stopReporting();
      await supplier.stop();
      payments?.chain.close();
      if (!o.json) process.stdout.write('supplier stopped\n');
    });
}
