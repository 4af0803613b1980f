/**
 * The paid half of `npm run bench -- pipeline` (issue 15): what payments cost on the serving path. Beside the
 * bench's unpaid grid it starts a paid one on a fresh anvil chain (the devnet's: contracts deployed, suppliers
 * staked, the payer's escrow filled): the same fragments and supplier flags, each supplier charging and
 * the bench paying with the gateway's VoucherPayer. Rounds of the same generation alternate between the
 * unpaid and the paid grid, so both see the same machine, and report
 * - paid_decode_tokens_per_s and paid_ratio (paid ÷ unpaid decode tokens/s, goal ≥ 0.9),
 * - paid_cpu_ratio: CPU ms per token of a paid run ÷ of an unpaid run, over all processes of the grid that
 *   served it (its suppliers' utime+stime from /proc/PID/stat, anvil's for the paid grid, and the bench's
 *   own process.cpuUsage()), goal ≤ 1.15,
 * - what the payer signed (vouchers per paid token) and the per-hop payment times (payer, supplier gate).
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Wallet } from 'ethers';
import { GridClient } from '../scheduler/client.js';
import type { GenerateOptions, StepRunner } from '../scheduler/generate.js';
import { generate } from '../scheduler/generate.js';
import type { HopTiming, PipelineSession } from '../scheduler/session.js';
import { VoucherPayer } from '../gateway/payer/index.js';
import { DEVNET_PASSPHRASE, startDevnetChain } from '../cli/devnet/chain.js';
import { spawnGridpipe } from '../cli/spawn.js';

/** The paid suppliers' price: base units per GFLOP (about 10^8 per decode step of a third of GPT-2 small). */
const PAID_PRICE = '1000000000';
/** Clock ticks per second of /proc/PID/stat (Linux's USER_HZ). */
const CLK_TCK = 100;

/** CPU ms (user + system) used so far by process `pid`; 0 when it is gone. */
function processCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ": state is field 3 of the man page, utime 14 and stime 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** CPU ms of the bench itself plus the processes `pids`. */
function cpuMs(pids: readonly (number | undefined)[]): number {
  const own = process.cpuUsage();
  return (own.user + own.system) / 1000 + pids.reduce<number>((s, p) => s + processCpuMs(p), 0);
}

/** A generation's per-token times (index 0: prefill) and hops. */
export interface TimedRun { ms: number[]; ids: number[]; hops: HopTiming[][] }

export interface PaidGrid {
  client: GridClient;
  payer: VoucherPayer;
  run(maxTokens: number): Promise<TimedRun>;
  /** PIDs of its suppliers and of anvil. */
  pids: number[];
  close(): Promise<void>;
}

/**
 * Starts anvil, the contracts and one paid supplier per fragment (`supplierFlags` as the unpaid grid's), and a
 * payer (`windowSteps`: its credit window; 0 signs a voucher per step, as before issue 15).
 */
export async function startPaidGrid(work: string, fragDir: string, fragments: number, supplierFlags: string[], options: GenerateOptions, promptLength: number, windowSteps?: number): Promise<PaidGrid> {
  const chain = await startDevnetChain({ dir: path.join(work, 'paid-chain'), suppliers: fragments });
  const children: ChildProcess[] = [];
  let client: GridClient | undefined;
  let payer: VoucherPayer | undefined;
  const close = async (): Promise<void> => {
    await client?.close().catch(() => undefined);
    await payer?.close().catch(() => undefined);
    for (const c of children) c.kill('SIGKILL');
    await chain.stop();
  };
  try {
    const start = async (f: number, bootstrap?: string): Promise<{ address: string }> => {
      const args = ['supply', '--data', path.join(work, `paid-s${f}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', String(f),
        '--wallet', chain.suppliers[f].keystore, '--chain-config', chain.configPath, '--price-per-gflop', PAID_PRICE, ...(bootstrap ? ['--bootstrap', bootstrap] : []), ...supplierFlags, '--json'];
      const proc = spawnGridpipe(args, { env: { GRIDPIPE_LOG_LEVEL: 'error', GRIDPIPE_PASSPHRASE: DEVNET_PASSPHRASE } });
      children.push(proc.child);
      const ready = (await proc.ready) as { addresses: string[] };
      return { address: ready.addresses[0] };
    };
    const first = await start(0);
    await Promise.all(Array.from({ length: fragments - 1 }, (_, i) => start(i + 1, first.address)));
    client = await GridClient.connect({
      bootstrap: [first.address], network: 'local',
      stakeCheck: { rpcUrl: chain.config.rpcUrl, chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry },
    });
    const model = await client.openModel(fragDir);
    const developerKey = chain.anvil.accounts[1].privateKey;
    payer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: new Wallet(developerKey) }, dataDir: path.join(work, 'paid-gateway'), windowSteps });
    const paying = payer;
    const opened = client;
    const run = async (maxTokens: number): Promise<TimedRun> => {
      const session = opened.session(model, promptLength + maxTokens + 1, { payer: paying });
      try {
        return await timedRun(session, { ...options, maxTokens });
      } finally {
        await session.close();
      }
    };
    return { client, payer, run, pids: [...children.map((c) => c.pid!), chain.anvil.pid], close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Runs one generation on `session`, timing each token and keeping each step's hops. */
export async function timedRun(session: Pick<PipelineSession, 'step'>, options: GenerateOptions): Promise<TimedRun> {
  const hops: HopTiming[][] = [];
  const recorder: StepRunner = { step: async (inputs, position, tokens, hints) => { const r = await session.step(inputs, position, tokens, hints); hops.push(r.hops); return r; } };
  const ids: number[] = [];
  const ms: number[] = [];
  let last = performance.now();
  for await (const t of generate(recorder, options)) {
    const now = performance.now();
    ids.push(t.id);
    ms.push(now - last);
    last = now;
  }
  return { ids, ms, hops };
}

const sum = (v: number[]): number => v.reduce((a, b) => a + b, 0);
const median = (v: number[]): number => (v.length ? [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] : 0);

/**
 * `rounds` alternations of one unpaid (`unpaid`, its processes `unpaidPids`) and one paid generation of
 * `decode` tokens after the prompt; the metrics of the paid half of the bench.
 */
export async function paidComparison(grid: PaidGrid, unpaid: (maxTokens: number) => Promise<TimedRun>, unpaidPids: number[], rounds: number, decode: number, expectedIds: string): Promise<Record<string, number>> {
  await grid.run(4); // warm-up: sessions load their fragments, the first vouchers are signed
  const measured = async (fn: () => Promise<TimedRun>, pids: number[]): Promise<TimedRun & { cpuMs: number }> => {
    const before = cpuMs(pids);
    const r = await fn();
    return { ...r, cpuMs: cpuMs(pids) - before };
  };
  const unpaidRuns: (TimedRun & { cpuMs: number })[] = [];
  const paidRuns: (TimedRun & { cpuMs: number })[] = [];
  const signedBefore = grid.payer.signedCount;
  for (let round = 0; round < rounds; round++) {
    unpaidRuns.push(await measured(() => unpaid(decode + 1), unpaidPids));
    paidRuns.push(await measured(() => grid.run(decode + 1), grid.pids));
  }
  const decodeMs = (runs: TimedRun[]): number => sum(runs.flatMap((r) => r.ms.slice(1)));
  const tokens = (runs: TimedRun[]): number => sum(runs.map((r) => r.ms.length));
  const unpaidTps = (rounds * decode) / (decodeMs(unpaidRuns) / 1000);
  const paidTps = (rounds * decode) / (decodeMs(paidRuns) / 1000);
  const cpuPerToken = (runs: (TimedRun & { cpuMs: number })[]): number => sum(runs.map((r) => r.cpuMs)) / tokens(runs);
  const paidDecodeHops = paidRuns.flatMap((r) => r.hops.slice(1));
  return {
    paid_decode_tokens_per_s: paidTps,
    paid_unpaid_decode_tokens_per_s: unpaidTps,
    paid_ratio: paidTps / unpaidTps,
    paid_cpu_ms_per_token: cpuPerToken(paidRuns),
    paid_unpaid_cpu_ms_per_token: cpuPerToken(unpaidRuns),
    paid_cpu_ratio: cpuPerToken(paidRuns) / cpuPerToken(unpaidRuns),
    paid_vouchers_per_token: (grid.payer.signedCount - signedBefore) / tokens(paidRuns),
    paid_decode_payer_ms_p50: median(paidDecodeHops.map((h) => sum(h.map((x) => x.payerMs)))),
    paid_decode_supplier_payment_ms_p50: median(paidDecodeHops.map((h) => sum(h.map((x) => x.paymentMs)))),
    paid_tokens_identical: Number([...unpaidRuns, ...paidRuns].every((r) => r.ids.join() === expectedIds)),
  };
}
