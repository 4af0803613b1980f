/**
 * `npm run bench -- devnet`: how long `gridpipe devnet` (what `npm start` runs) takes to print its
 * "ready" line from an empty data folder (first start: build and fragment the demo model, chain,
 * suppliers fetching their fragments, gateway) and again with the same folder (warm start: cache
 * reused). Each run is stopped with SIGTERM, as Ctrl-C would, and its stop time measured too. While the warm
 * devnet is up, paid decode through its gateway is timed against the same model run whole (devnet-decode.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI_ENTRY } from '../cli/spawn.js';
import { reportResult } from './report.js';
import { devnetDecode, type DevnetDecode } from './devnet-decode.js';

interface DevnetRun { readyS: number; stopS: number }

/** Suppliers the benchmarked devnet runs (its default), one fragment each. */
const SUPPLIERS = 4;

/** Starts the devnet, waits for "ready", runs `whileReady`, stops it; times both (also used by demo-model.ts). */
export async function runDevnet(dataDir: string, model: string, whileReady?: () => Promise<void>): Promise<DevnetRun> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI_ENTRY, 'devnet', '--data', dataDir, '--model', model, '--suppliers', String(SUPPLIERS), '--port', '0'], {
    env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (/\bready\b/.test(out.trim().split('\n').at(-1) ?? '')) resolve();
    });
    void exited.then((code) => reject(new Error(`devnet exited (${code}) before ready:\n${out}\n${err}`)));
  });
  const readyS = (performance.now() - started) / 1000;
  try {
    await whileReady?.();
  } catch (err) {
    child.kill('SIGTERM');
    await exited;
    throw err;
  }
  const stopping = performance.now();
  child.kill('SIGTERM');
  const code = await exited;
  if (code !== 0) throw new Error(`devnet stopped with code ${code}:\n${err}`);
  return { readyS, stopS: (performance.now() - stopping) / 1000 };
}

/** The devnet benchmark. */
export async function devnetBench(flags: string[]): Promise<void> {
  const model = flags.find((f) => f.startsWith('--model='))?.slice('--model='.length) ?? 'small';
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-devnet-'));
  try {
    const first = await runDevnet(dataDir, model);
    let decode: DevnetDecode | undefined;
    const warm = await runDevnet(dataDir, model, async () => { decode = await devnetDecode(dataDir, model, SUPPLIERS); });
    reportResult('devnet', {
      first_ready_s: first.readyS,
      warm_ready_s: warm.readyS,
      first_stop_s: first.stopS,
      warm_stop_s: warm.stopS,
      paid_decode_tokens_per_s: decode!.paidTokensPerS,
      mono_decode_tokens_per_s: decode!.monoTokensPerS,
      paid_over_mono: decode!.paidTokensPerS / decode!.monoTokensPerS,
    }, `gridpipe devnet --model ${model} (default 4 suppliers) from an empty data folder, then again with the same folder; ` +
      `goals: first_ready_s <= 120, warm_ready_s <= 20. Excludes npm install and the TypeScript build that npm start runs first. ` +
      `Decode (warm devnet): paid = greedy completions through the devnet's gateway with its API key (vouchers to its 4 staked suppliers), ` +
      `(tokens of a 33-token request − tokens of a 1-token one) ÷ the difference in wall time, same 16-token prompt; mono = the same model ` +
      `as one onnxruntime session in the bench process, the same 32 decode tokens; median of ${decode!.rounds} alternating rounds; ` +
      `the devnet's suppliers, gateway, chain and this process share the machine's cores.`);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
