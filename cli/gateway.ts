/**
 * `gridpipe gateway`: the developer endpoint. An OpenAI-compatible HTTP API (and /v1/infer for tensor models)
 * over the grid, with API keys, per-key rate and budget limits, Prometheus metrics and a live feed; runs until
 * SIGINT/SIGTERM.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import os from 'node:os';
import path from 'node:path';
import type { Payers } from '../gateway/payments.js';
import { baseUnitAmount, byteSize, collect, portNumber, positiveNumber } from './args.js';
import { DEFAULT_MAX_OVER_MEDIAN, DEFAULT_MAX_PRICE_PER_GFLOP } from '../policy/price-limits.js';
import { UsageError } from './errors.js';
import { tuneHeapForServing } from './heap-tuning.js';
import { DEFAULT_VERIFY_RATE } from '../policy/verification.js';

/** A share within 0..1. */
function shareOf(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`expected a share between 0 and 1, got "${value}"`);
  return n;
}

/** The gateway command. */
export function gatewayCommand(): Command {
  return new Command('gateway')
    .description('Serve the grid to developers: an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models) and /v1/infer for tensors')
    .option('--port <port>', 'HTTP port (0 = any free port)', portNumber, 8080)
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--bootstrap <multiaddr>', 'peer to join the grid through, with /p2p/<id> (repeatable)', collect, [])
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--listen <multiaddr>', 'libp2p address to listen on (repeatable; default: any port)', collect, [])
    .option('--relay-server', 'offer circuit relay service to suppliers behind NAT (needs a public --listen address)', false)
    .addOption(new Option('--route-mode <mode>', 'star: the gateway relays every tensor; chain: each supplier forwards to the next, the last answers; auto: chain where measured round trips say it saves time').choices(['star', 'chain', 'auto']).default('star'))
    .addOption(new Option('--wire-encoding <encoding>', 'how activations travel to and from suppliers: exact (the model\'s dtype), fp16, int8 (blocks), or auto (compress where the measured link makes transfer dominate); a request with "exact": true always travels exact').choices(['exact', 'fp16', 'int8', 'auto']).default('exact'))
    .option('--keys <file>', 'API keys (JSON: {"keys": {"<key>": {"name", "payer"?, "budget"?, "requestsPerMinute"?, "tokensPerMinute"?}}}); without it the gateway is open')
    .option('--model <dir-or-cid>', 'fragment folder or manifest CID to serve besides the models discovered on the grid (repeatable)', collect, [])
    .option('--chain-config <file>', 'chain config (contract addresses, chain id, RPC): pay suppliers that charge with signed vouchers')
    .option('--rpc <url>', 'RPC URL to use instead of the chain config\'s')
    .option('--wallet <keystore>', 'the paying wallet\'s keystore (passphrase in GRIDPIPE_PASSPHRASE)')
    .option('--data <dir>', 'data folder (payer ledgers, what each API key has spent)', path.join(os.homedir(), '.gridpipe', 'gateway'))
    .option('--max-price-per-gflop <base-units>', `never route to suppliers asking more per GFLOP (token base units; default ${DEFAULT_MAX_PRICE_PER_GFLOP}, i.e. 0.001 GRID)`, baseUnitAmount, DEFAULT_MAX_PRICE_PER_GFLOP)
    .option('--max-over-median <factor>', `refuse suppliers asking more than this many times the median price of a model's hosts (default ${DEFAULT_MAX_OVER_MEDIAN})`, positiveNumber, DEFAULT_MAX_OVER_MEDIAN)
    .option('--max-tensor-bytes <bytes>', 'largest /v1/infer request body', byteSize, 256 << 20)
    .option('--metrics-token <token>', 'Bearer token that lets other hosts read /metrics (default: loopback clients only; or GRIDPIPE_METRICS_TOKEN)')
    .option('--verify-rate <share>', `share (0..1) of each supplier's work re-run on another host to catch wrong outputs (docs/verification.md; default ${DEFAULT_VERIFY_RATE}, 0 = off)`, shareOf, DEFAULT_VERIFY_RATE)
    .option('--no-explorer', 'do not serve the network explorer (its page at /explorer/ and its API at /explorer/api/v1)')
    .option('--json', 'print one JSON line when ready (for scripts)', false)
    .action(async (o: {
      port: number; host: string; bootstrap: string[]; network: string; listen: string[]; relayServer: boolean; routeMode: 'star' | 'chain' | 'auto'; wireEncoding: 'exact' | 'fp16' | 'int8' | 'auto'; keys?: string; model: string[];
      chainConfig?: string; rpc?: string; wallet?: string; data: string; maxTensorBytes: number; metricsToken?: string; verifyRate: number; json: boolean;
      maxPricePerGflop: bigint; maxOverMedian: number; explorer: boolean;
    }) => {
      tuneHeapForServing();
      // The gateway (fastify, libp2p, ethers, pino) loads here, not with the command tree.
      const { startGateway } = await import('../gateway/server.js');
      const { readKeysFile, keysFileModeProblem } = await import('../gateway/keys.js');
      const { openPayers } = await import('../gateway/payments.js');
      const { createLogger } = await import('../net/logger.js');
      const { readChainConfig } = await import('../contracts/bindings.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      if (!o.bootstrap.length) throw new UsageError('give at least one --bootstrap address to join the grid through');
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      checkMultiaddrs('--listen', o.listen);
      if ((o.rpc || o.wallet) && !o.chainConfig) throw new UsageError('--rpc and --wallet go with --chain-config');
      const keys = o.keys ? await readKeysFile(o.keys) : undefined;
      const logger = createLogger('gridpipe-gateway');
      const modeProblem = o.keys ? await keysFileModeProblem(o.keys) : undefined;
      if (modeProblem) logger.warn(`INSECURE KEYS FILE: ${modeProblem}`);
      const metricsToken = o.metricsToken ?? process.env.GRIDPIPE_METRICS_TOKEN;
      if (metricsToken !== undefined && metricsToken.length < 16) throw new UsageError('--metrics-token must be at least 16 characters');
      let payers: Payers | undefined;
      let requireStake: { rpcUrl: string; chainId: number; stakeRegistry: string } | undefined;
      if (o.chainConfig) {
        try {
          const chain = readChainConfig(o.chainConfig);
          requireStake = { rpcUrl: o.rpc ?? chain.rpcUrl, chainId: chain.chainId, stakeRegistry: chain.stakeRegistry };
          payers = await openPayers({ chainConfig: o.chainConfig, rpcUrl: o.rpc, wallet: o.wallet, dataDir: path.join(o.data, 'payer'), logger }, keys);
        } catch (err) {
          throw new UsageError(`payments: ${(err as Error).message}`);
        }
      }
      const explorer = o.explorer ? await import('./explorer.js') : undefined;
      let attached: Awaited<ReturnType<NonNullable<typeof explorer>['gatewayExplorer']>> | undefined;
      const gateway = await startGateway({
        bootstrap: o.bootstrap, network: chooseNetwork(o.network, o.bootstrap), listen: o.listen.length ? o.listen : undefined, relayServer: o.relayServer, routeMode: o.routeMode, wireEncoding: o.wireEncoding,
        port: o.port, host: o.host, keys, models: o.model,
        payerFor: payers?.payerFor, verifierPayer: payers?.gatewayPayer, disputes: o.chainConfig && o.wallet ? { chain: { chainConfig: o.chainConfig, rpcUrl: o.rpc, wallet: o.wallet }, dataDir: o.data } : undefined, priceLimits: { maxPricePerGflop: o.maxPricePerGflop, maxOverMedian: o.maxOverMedian }, requireStake, maxTensorBytes: o.maxTensorBytes, verifyRate: o.verifyRate, metricsToken, logger, spendingDir: path.join(o.data, 'spending'),
        extraRoutes: explorer ? (app, ctx) => { attached = explorer.gatewayExplorer(app, ctx, { chainConfig: o.chainConfig, rpcUrl: o.rpc, logger }); } : undefined,
      });
      const explorerUrl = attached ? `${gateway.url}${attached.path}` : undefined;
      const models = gateway.context.catalog.servable().map((m) => m.id);
      if (o.json) {
        const { host } = gateway.context.client;
        process.stdout.write(`${JSON.stringify({ ready: true, url: gateway.url, models, open: gateway.context.keys.open, payments: Boolean(payers), peerId: host.peerId.toString(), addresses: host.addresses(), ...(explorerUrl ? { explorer: explorerUrl } : {}) })}\n`);
      } else {
        process.stdout.write(`gateway ready at ${gateway.url}/v1 (OpenAI-compatible)\n`);
        process.stdout.write(`  models: ${models.join(', ') || 'none servable yet (they appear as suppliers announce them)'}\n`);
        process.stdout.write(`  ${gateway.context.keys.open ? 'OPEN: no --keys, anyone who reaches it may call it' : `${gateway.context.keys.list().length} API keys`}; metrics at ${gateway.url}/metrics (${metricsToken ? 'loopback, or with the metrics token' : 'loopback clients only'}), feed at ${gateway.url}/v1/feed\n`);
        if (explorerUrl) process.stdout.write(`  explorer: ${explorerUrl}\n`);
      }
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      attached?.close();
      await gateway.close();
      await payers?.close();
      if (!o.json) process.stdout.write('gateway stopped\n');
    });
}
