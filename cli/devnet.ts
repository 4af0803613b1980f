/**
 * `gridpipe devnet` (what `npm start` runs): the whole grid on one machine. A local EVM chain (anvil)
 * with the contracts deployed, a developer and the suppliers funded and staked; the demo model built
 * (or reused from the cache), cut into one fragment per supplier and verified; the suppliers as
 * separate processes, each with its own identity, wallet and data folder, charging for their work (the
 * first imports the fragment folder, the others fetch their fragment by manifest CID over the grid);
 * the OpenAI-compatible gateway paying them with vouchers from the developer's escrow. It waits until a
 * request goes through, prints how to call it and writes DATA_DIR/devnet.json, then a line with
 * "ready". Ctrl-C (or SIGTERM) stops the gateway, then the suppliers (which redeem their vouchers),
 * then the chain; a failure on the way stops whatever had started.
 */
import { Command } from 'commander';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { portNumber, positiveInt } from './args.js';
import { reportFailure } from './errors.js';
import { ensureDataDir, ensurePortFree } from './devnet/preflight.js';
import { writePrivateFile } from './devnet/private-file.js';
import type { DevnetChain } from './devnet/chain.js';
import { startArbiterProcess, startGatewayProcess, startSupplier, stopProcesses, type RunningSupplier } from './devnet/processes.js';
import { checkRequest, printUsage, type DevnetInfo } from './devnet/usage.js';

/** Price per GFLOP the devnet's suppliers ask, in base units (10^-6 GRID): a demo request costs a visible fraction of a GRID. */
const DEVNET_PRICE_PER_GFLOP = '1000000000000';
const DEFAULT_PORT = 8640;

interface DevnetOptions { suppliers: number; model: string; data: string; port: number }

/** The developer's API key: made once and kept in DATA_DIR/keys.json, so scripts keep working across restarts. */
async function devnetKeys(dir: string, payer: string): Promise<{ file: string; apiKey: string }> {
  const file = path.join(dir, 'keys.json');
  let apiKey: string | undefined;
  if (existsSync(file)) {
    try {
      apiKey = Object.keys((JSON.parse(readFileSync(file, 'utf8')) as { keys: Record<string, unknown> }).keys)[0];
    } catch {
      apiKey = undefined; // a broken file is rewritten below
    }
  }
  apiKey ??= `gp-devnet-${randomBytes(12).toString('hex')}`;
  const budget = (100n * 10n ** 18n).toString();
  await writePrivateFile(file, `${JSON.stringify({ keys: { [apiKey]: { name: 'developer', payer, budget, requestsPerMinute: 600 } } }, null, 2)}\n`);
  return { file, apiKey };
}

/** The devnet command. */
export function devnetCommand(): Command {
  return new Command('devnet')
    .description('Run the whole grid on one machine: local chain and contracts, supplier processes, the OpenAI-compatible gateway')
    .option('--suppliers <n>', 'supplier processes (one fragment each)', positiveInt, 4)
    .option('--model <name>', 'demo model: kjv (trained on the King James Bible), tiny, small, moe (synthetic), or a path to an .onnx file or export folder', 'kjv')
    .option('--port <port>', 'gateway port on 127.0.0.1 (0 = any free port)', portNumber, DEFAULT_PORT)
    .option('--data <dir>', 'data folder (model cache, wallets, supplier folders, devnet.json)', path.join(os.homedir(), '.gridpipe', 'devnet'))
    .action(async (o: DevnetOptions) => {
      // The fragments toolkit and the chain tools (ethers, anvil) load here, not with the command tree.
      const { checkModelChoice, prepareDemoModel } = await import('./devnet/demo-model.js');
      const { DEVNET_PASSPHRASE, startDevnetChain } = await import('./devnet/chain.js');
      checkModelChoice(o.model);
      const dir = path.resolve(o.data);
      ensureDataDir(dir);
      await ensurePortFree(o.port);

      const started = Date.now();
      const say = (line: string): void => { process.stdout.write(`${line}\n`); };
      const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1)} s`;
      const children: ChildProcess[] = [];
      let gatewayChild: ChildProcess | undefined;
      let chain: DevnetChain | undefined;
      let stopping = false;
      const shutdown = async (code: number): Promise<never> => {
        if (stopping) return new Promise<never>(() => undefined);
        stopping = true;
        say('stopping the devnet: gateway, suppliers (redeeming their vouchers), chain…');
        if (gatewayChild) await stopProcesses([gatewayChild]);
        await stopProcesses(children);
        await chain?.stop();
        say('devnet stopped');
        process.exit(code);
      };
      // `on`, not `once`: a second Ctrl-C must not fall through to the default action and orphan the children.
      process.on('SIGINT', () => { void shutdown(0); });
      process.on('SIGTERM', () => { void shutdown(0); });

      try {
        say(`[1/5] model (${o.model})`);
        const model = await prepareDemoModel(o.model, o.suppliers, dir, say);
        say(`      ${model.manifest.name}: ${model.manifest.fragments.length} fragments${model.cached ? ' (cached)' : ' verified against the whole model'}, manifest ${model.manifestCid} (${elapsed()})`);

        say('[2/5] local chain');
        // A fresh chain each run: payment state from an earlier run refers to a chain that is gone.
        for (let i = 0; i < o.suppliers; i++) await rm(path.join(dir, `supplier-${i}`, 'payments'), { recursive: true, force: true });
        await rm(path.join(dir, 'gateway', 'payer'), { recursive: true, force: true });
        await rm(path.join(dir, 'gateway', 'spending'), { recursive: true, force: true });
        chain = await startDevnetChain({ dir, suppliers: o.suppliers, onStep: (s) => say(`      ${s}`) });
        const env = { GRIDPIPE_PASSPHRASE: DEVNET_PASSPHRASE };
        const paidArgs = (i: number): string[] => [
          '--chain-config', chain!.configPath, '--wallet', chain!.suppliers[i].keystore, '--price-per-gflop', DEVNET_PRICE_PER_GFLOP,
        ];

        say(`[3/5] ${o.suppliers} suppliers, each hosting the span placement gives it`);
        // One at a time, without join jitter: each reads the records of those before it and takes the weakest span.
        const perSupplier = Math.ceil(model.manifest.fragments.length / o.suppliers);
        const supplierArgs = (i: number): string[] => [
          '--data', path.join(dir, `supplier-${i}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--max-fragments', String(perSupplier), '--join-jitter', '0',
          '--max-sessions', '64', '--admin-port', '0', ...paidArgs(i),
        ];
        const spanText = (s: RunningSupplier): string => (s.fragments.length === 1 ? `fragment ${s.fragments[0]}` : `fragments ${s.fragments.join(',')}`);
        const logFile = (name: string): string => path.join(dir, 'logs', `${name}.log`); // each process's log lines, kept for the operator
        const first = await startSupplier(0, [...supplierArgs(0), '--host', model.fragmentDir, '--place'], env, logFile('supplier-0'));
        children.push(first.child);
        say(`      supplier 0 ${first.peerId} hosts ${spanText(first)} (imported the fragment folder; shares every fragment), stakes ${chain.suppliers[0].address}`);
        const rest: RunningSupplier[] = [];
        for (let i = 1; i < o.suppliers; i++) {
          const s = await startSupplier(i, [...supplierArgs(i), '--host', model.manifestCid, '--bootstrap', first.address], env, logFile(`supplier-${i}`));
          children.push(s.child);
          rest.push(s);
          say(`      supplier ${i} ${s.peerId} hosts ${spanText(s)} (fetched by CID over the grid), stakes ${chain.suppliers[i].address}`);
        }
        const suppliers = [first, ...rest];
        for (const s of suppliers) {
          s.child.on('exit', (code, signal) => { if (!stopping) say(`supplier ${s.index} exited unexpectedly (${code ?? signal}); the grid routes around it where it can`); });
        }
        say(`      (${elapsed()})`);

        say('[4/5] gateway');
        const keys = await devnetKeys(dir, chain.developer.keystore);
        const gateway = await startGatewayProcess([
          '--port', String(o.port), '--bootstrap', first.address, '--keys', keys.file, '--model', model.fragmentDir,
          '--chain-config', chain.configPath, '--wallet', chain.developer.keystore, '--data', path.join(dir, 'gateway'),
        ], env, logFile('gateway'));
        gatewayChild = gateway.child;
        gateway.child.on('exit', (code, signal) => { if (!stopping) say(`the gateway exited unexpectedly (${code ?? signal})`); });
        say(`      ${gateway.url}/v1 (${elapsed()})${gateway.explorer ? `; explorer ${gateway.explorer}` : ''}`);
        // The arbiter service resolves the disputes the gateway's verifier files (docs/verification.md).
        const arbiter = await startArbiterProcess(['--chain-config', chain.configPath, '--wallet', chain.arbiter.keystore, '--bootstrap', first.address, '--data', path.join(dir, 'arbiter')], env, logFile('arbiter'));
        children.push(arbiter.child);
        say(`      arbiter ${arbiter.address} resolves disputes (gridpipe arbiter)`);

        say('[5/5] a check request through the gateway');
        const check = await checkRequest(gateway.url, keys.apiKey, model.manifest.name);
        say(`      ${check}`);

        const info: DevnetInfo = {
          gatewayUrl: `${gateway.url}/v1`, ...(gateway.explorer ? { explorerUrl: gateway.explorer } : {}), apiKey: keys.apiKey, model: model.manifest.name, modelLabel: model.label, rpcUrl: chain.anvil.rpcUrl, chainConfig: chain.configPath,
          passphraseEnv: `GRIDPIPE_PASSPHRASE=${DEVNET_PASSPHRASE}`,
          developer: { address: chain.developer.address, wallet: chain.developer.keystore },
          bootstrap: first.address, manifestCid: model.manifestCid, fragmentDir: model.fragmentDir, pid: process.pid,
          gatewayPid: gateway.child.pid, anvilPid: chain.anvil.pid,
          suppliers: suppliers.map((s) => ({
            peerId: s.peerId, address: s.address, fragments: s.fragments, pid: s.child.pid, admin: s.admin,
            stakingAddress: chain!.suppliers[s.index].address, wallet: chain!.suppliers[s.index].keystore, data: path.join(dir, `supplier-${s.index}`),
          })),
        };
        // It holds the API key: owner-only.
        await writePrivateFile(path.join(dir, 'devnet.json'), `${JSON.stringify(info, null, 2)}\n`);
        printUsage(info, path.join(dir, 'devnet.json'), say);
        say(`devnet ready in ${elapsed()} — Ctrl-C stops every process it started`);
      } catch (err) {
        await shutdown(reportFailure(err));
      }
      await new Promise(() => undefined); // run until a signal stops it
    });
}
