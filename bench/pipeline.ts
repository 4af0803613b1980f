/**
 * `npm run bench -- pipeline`: a GPT-2-small-shaped model (12 layers, d 768, vocab 50257, KV cache)
 * split over 3 supplier processes on 127.0.0.1, against the monolithic onnxruntime run of the same
 * model in the same run. A 4th supplier replicates the middle fragment so a failover can be measured:
 * the middle fragment's current host is SIGKILLed mid-decode.
 * Goals: decode_ratio >= 0.9; failover_extra_ms <= 2 x prefill128_ms + 250; failed_requests 0;
 * paid_ratio >= 0.9 and paid_cpu_ratio <= 1.15 (bench/pipeline-paid.ts).
 * concurrent8_ratio >= 3.0 with the suppliers batching concurrent decode steps (concurrent8_ratio_unbatched:
 * solo sessions, which the same suppliers never batch, alternated in the same run). Bench flags --threads=N, --spin, --inline-runs,
 * --provider=cpu|cuda|webgpu, --max-batch=N, --batch-window-us=N go to every supplier.
 * Route modes (issue 19): each round also decodes in chain mode (direct return); decode_overhead_ms is a decode
 * token's time minus the servers' compute for it (p50), for the star and the chain; goal chain <= 2 ms.
 * --decode-only: only the decode rounds (mono, star, chain), written as bench/results/pipeline-decode.json.
 * --trace (with --decode-only): the servers and the client log every step (GRIDPIPE_STEP_TRACE) and the result adds
 * where a chain token's time goes (chain_trace_*, bench/pipeline-trace.ts); the logging itself costs a little time.
 */
import '../net/polyfill.js';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { GridClient } from '../scheduler/client.js';
import { generate, stepInputs, type GenerateOptions, type StepRunner } from '../scheduler/generate.js';
import type { HopTiming } from '../scheduler/session.js';
import type { RouteMode } from '../policy/route-mode.js';
import { LocalModelRunner } from '../scheduler/local-runner.js';
import { reportResult } from './report.js';
import { spawnGridpipe } from '../cli/spawn.js';
import { paidComparison, startPaidGrid } from './pipeline-paid.js';
import { chainTraceMetrics, readStepTraces, splitChainSteps } from './pipeline-trace.js';
import { BenchFlagError } from './flags.js';

const PROMPT = 16;
const DECODE = 48;
/** Monolithic and pipeline decodes alternate this many times; speeds are totals over all rounds (runs vary ±20 % on a shared 2-core VM). */
const ROUNDS = 3;

interface Supplier { child: ChildProcess; peerId: string; address: string; provider?: string }

async function startSupplier(args: string[], traceFolder?: string): Promise<Supplier> {
  const proc = spawnGridpipe(['supply', ...args, '--json'], { env: { GRIDPIPE_LOG_LEVEL: 'error', ...(traceFolder ? { GRIDPIPE_STEP_TRACE: traceFolder } : {}) } });
  const ready = (await proc.ready) as { peerId: string; addresses: string[]; provider?: string };
  return { child: proc.child, peerId: ready.peerId, address: ready.addresses[0], provider: ready.provider };
}

/** Times each token of a generation; returns per-token ms (index 0 = prefill). */
async function timedGeneration(runner: StepRunner, options: GenerateOptions, onToken?: (n: number) => Promise<void> | void): Promise<{ ids: number[]; ms: number[] }> {
  const ids: number[] = [];
  const ms: number[] = [];
  let last = performance.now();
  for await (const t of generate(runner, options)) {
    const now = performance.now();
    ids.push(t.id);
    ms.push(now - last);
    last = now;
    await onToken?.(ids.length);
  }
  return { ids, ms };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const sum = (v: number[]): number => v.reduce((a, b) => a + b, 0);

/** Runs the benchmark. */
export async function pipelineBench(flags: string[] = []): Promise<void> {
  const spin = flags.includes('--spin');
  // --threads=N: onnxruntime intra-op threads per supplier (default: the supplier's share limit).
  const threads = flags.find((f) => f.startsWith('--threads='))?.slice('--threads='.length);
  // --inline-runs: suppliers run onnxruntime on their own thread (no worker thread per fragment).
  const inline = flags.includes('--inline-runs');
  const supplierFlags = [...(spin ? ['--spin'] : []), ...(inline ? ['--inline-runs'] : []), ...(threads ? ['--threads', threads] : []), ...onnxruntimeFlags(flags)];
  if (flags.includes('--trace') && !flags.includes('--decode-only')) throw new BenchFlagError('--trace goes with --decode-only (its rounds are the ones it splits)');
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-pipeline-'));
  const traceFolder = flags.includes('--trace') ? path.join(work, 'trace') : undefined;
  const tracedBefore = process.env.GRIDPIPE_STEP_TRACE;
  const suppliers: Supplier[] = [];
  let client: GridClient | undefined;
  try {
    const modelPath = path.join(work, 'gpt2-small.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 12, dModel: 768, heads: 12, vocab: 50257, maxPositions: 1024, kvCache: true, seed: 5, name: 'gpt2-small-shaped' }), modelPath);
    const fragDir = path.join(work, 'frags');
    const { manifest } = await fragmentModel(modelPath, fragDir, { parts: 3 });
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % 50257);
    const options: GenerateOptions = { promptIds: prompt, maxTokens: DECODE + 1, kvCache: true, inputNames };

    // Three suppliers, one fragment each; a fourth replicates the middle fragment.
    if (traceFolder) {
      await mkdir(traceFolder);
      process.env.GRIDPIPE_STEP_TRACE = traceFolder; // this process's chain steps (sessions read it when made)
    }
    const first = await startSupplier(['--data', path.join(work, 's0'), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', '0', ...supplierFlags], traceFolder);
    suppliers.push(first);
    const rest = await Promise.all([['1', 's1'], ['2', 's2'], ['1', 's3']].map(([f, d]) => startSupplier(['--data', path.join(work, d), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', f, '--bootstrap', first.address, ...supplierFlags], traceFolder)));
    suppliers.push(...rest);
    client = await GridClient.connect({ bootstrap: [first.address], network: 'local' });
    const model = await client.openModel(fragDir);
    let failed = 0;

    // solo: the servers never batch this session's steps with others' (OpenSession.solo), for the unbatched figures.
    const runSession = async (maxTokens = options.maxTokens, onToken?: (n: number, route: string[]) => Promise<void> | void, routeMode: RouteMode = 'star', solo = false): Promise<{ ids: number[]; ms: number[]; failovers: number; hops: HopTiming[][] }> => {
      const session = client!.session(model, PROMPT + maxTokens + 1, { routeMode, ...(solo ? { solo } : {}) });
      // Keep each step's hops: where a decode token's time goes (server compute, the wire and queues, the client).
      const hops: HopTiming[][] = [];
      const recorder: StepRunner = { step: async (inputs, position, tokens, hints) => { const r = await session.step(inputs, position, tokens, hints); hops.push(r.hops); return r; } };
      try {
        const run = await timedGeneration(recorder, { ...options, maxTokens }, (n) => onToken?.(n, session.route.map((r) => r.peerId)));
        return { ...run, failovers: session.failovers, hops };
      } catch (err) {
        failed++;
        throw err;
      } finally {
        await session.close();
      }
    };

    // Monolithic baseline: the whole model in one onnxruntime session in this process, measured in rounds
    // alternating with the pipeline's so both see the same machine (suppliers up and idle meanwhile).
    const mono = await LocalModelRunner.open(modelPath, manifest.statefulPairs);
    await timedGeneration(mono, { ...options, maxTokens: 4 }); // warm-up
    await runSession(4); // warm-up: sessions load their fragments
    await runSession(4, undefined, 'chain'); // warm-up: the servers' forwarding streams
    const monoRuns: { ids: number[]; ms: number[] }[] = [];
    const gridRuns: Awaited<ReturnType<typeof runSession>>[] = [];
    const chainRuns: Awaited<ReturnType<typeof runSession>>[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      monoRuns.push(await timedGeneration(mono, options));
      gridRuns.push(await runSession());
      chainRuns.push(await runSession(options.maxTokens, undefined, 'chain'));
    }
    await mono.close();
    const decodeMs = (runs: { ms: number[] }[]): number[] => runs.flatMap((r) => r.ms.slice(1));
    const monoDecodeTps = (ROUNDS * DECODE) / (sum(decodeMs(monoRuns)) / 1000);
    const decodeTps = (ROUNDS * DECODE) / (sum(decodeMs(gridRuns)) / 1000);
    const roundRatios = gridRuns.map((g, i) => sum(decodeMs([monoRuns[i]])) / sum(decodeMs([g])));
    const monoIds = monoRuns[0].ids.join();
    const identical = [...monoRuns, ...gridRuns].every((r) => r.ids.join() === monoIds);
    const decodeHops = gridRuns.flatMap((g) => g.hops.slice(1));
    const decodeTokenMs = decodeMs(gridRuns);
    // What the grid adds to a decode token beyond the servers' compute (wire, framing, queues, the client).
    const overheadMs = (runs: typeof gridRuns): number => {
      const tokenMs = decodeMs(runs);
      const compute = runs.flatMap((g) => g.hops.slice(1)).map((h) => sum(h.map((x) => x.computeMs)));
      return median(tokenMs.map((ms, i) => ms - compute[i]));
    };
    const chainDecodeTps = (ROUNDS * DECODE) / (sum(decodeMs(chainRuns)) / 1000);
    const routeModes = {
      decode_overhead_ms: overheadMs(gridRuns),
      decode_overhead_ms_chain: overheadMs(chainRuns),
      decode_tokens_per_s_chain: chainDecodeTps,
      decode_ratio_chain: chainDecodeTps / monoDecodeTps,
      decode_ms_p50_chain: median(decodeMs(chainRuns)),
      decode_server_compute_ms_p50_chain: median(chainRuns.flatMap((g) => g.hops.slice(1)).map((h) => sum(h.map((x) => x.computeMs)))),
      chain_tokens_identical: Number(chainRuns.every((r) => r.ids.join() === monoIds)),
    };
    if (flags.includes('--decode-only')) {
      reportResult('pipeline-decode', {
        decode_tokens_per_s: decodeTps, mono_decode_tokens_per_s: monoDecodeTps, decode_ratio: decodeTps / monoDecodeTps,
        decode_ms_p50: median(decodeTokenMs), mono_decode_ms_p50: median(decodeMs(monoRuns)),
        decode_server_compute_ms_p50: median(decodeHops.map((h) => sum(h.map((x) => x.computeMs)))),
        tokens_identical: Number(identical), ...routeModes,
        ...(traceFolder ? chainTraceMetrics(splitChainSteps(await readStepTraces(traceFolder))) : {}),
      }, `${traceFolder ? 'Traced (--trace: every step logged, which costs a little time; chain_trace_*: medians over the chain steps of the split in bench/pipeline-trace.ts, per-server parts summed over the 3 servers). ' : ''}Decode rounds only (--decode-only): gpt 12L d768 vocab 50257 (124M params) with KV cache, 3 fragments on 3 supplier processes on 127.0.0.1, 2 cores shared by all processes; prompt ${PROMPT} tokens, ${DECODE} decode tokens x ${ROUNDS} rounds alternating monolithic, star and chain (direct return) decodes; greedy.`);
      return;
    }

    // Payments (issue 15): a paid grid of the same fragments on a local chain, alternating with this one.
    // --pay-window=N: the payer's credit window in steps (0: a voucher per step, as before issue 15).
    const payWindow = flags.find((f) => f.startsWith('--pay-window='))?.slice('--pay-window='.length);
    // --no-paid: skip the paid grid (a machine without the anvil binary, e.g. a GPU machine reached without npm).
    const paid = flags.includes('--no-paid') ? {} : await (async () => {
      const paidGrid = await startPaidGrid(work, fragDir, 3, supplierFlags, options, PROMPT, payWindow === undefined ? undefined : Number(payWindow));
      return paidComparison(paidGrid, (n) => runSession(n), suppliers.map((s) => s.child.pid!), ROUNDS, DECODE, monoIds).finally(() => paidGrid.close());
    })();

    // Prefill of 128 tokens through the pipeline.
    const prefillSession = client.session(model, 200);
    const t0 = performance.now();
    await prefillSession.step(stepInputs(inputNames, Array.from({ length: 128 }, (_, i) => (i * 31) % 50257), 0), 0, 128);
    const prefill128Ms = performance.now() - t0;
    await prefillSession.close();

    // Concurrency: 8 sessions at once vs 1, batched sessions alternating with solo (never batched) ones on this grid.
    const concurrency = await compareConcurrency((n) => runSession(n), (n) => runSession(n, undefined, 'star', true));
    const concurrentIdentical = concurrency.identical;

    // Failover: kill the middle fragment's current host after 16 tokens.
    let killedAt = -1;
    const failover = await runSession(options.maxTokens, async (n, route) => {
      if (n !== 16) return;
      const victim = suppliers.find((s) => s.peerId === route[1]);
      if (!victim) return;
      killedAt = n;
      victim.child.kill('SIGKILL');
      await new Promise((r) => victim.child.once('exit', r));
    });
    const failoverStep = failover.ms[killedAt]; // the token produced right after the kill
    const failoverExtraMs = failoverStep - median(failover.ms.slice(1));

    reportResult('pipeline', {
      // Suppliers whose probe ran on a GPU provider (a --provider that fails to load falls back to CPU, silently before).
      suppliers_gpu_probe: suppliers.filter((s) => s.provider && s.provider !== 'cpu').length,
      suppliers_spin: Number(spin),
      suppliers_inline_runs: Number(inline),
      supplier_threads: threads ? Number(threads) : 0,
      decode_tokens_per_s: decodeTps,
      mono_decode_tokens_per_s: monoDecodeTps,
      decode_ratio: decodeTps / monoDecodeTps,
      decode_ratio_round_min: Math.min(...roundRatios),
      decode_ratio_round_max: Math.max(...roundRatios),
      decode_ms_p50: median(decodeTokenMs),
      decode_server_compute_ms_p50: median(decodeHops.map((h) => sum(h.map((x) => x.computeMs)))),
      decode_server_queue_ms_p50: median(decodeHops.map((h) => sum(h.map((x) => x.queueMs)))),
      decode_wire_ms_p50: median(decodeHops.map((h) => sum(h.map((x) => x.wallMs - x.computeMs - x.queueMs)))),
      decode_client_ms_p50: median(decodeHops.map((h, i) => decodeTokenMs[i] - sum(h.map((x) => x.wallMs)))),
      mono_decode_ms_p50: median(decodeMs(monoRuns)),
      prefill128_ms: prefill128Ms,
      failover_extra_ms: failoverExtraMs,
      failover_budget_ms: 2 * prefill128Ms + 250,
      failovers: failover.failovers,
      failover_tokens_identical: Number(failover.ids.join() === monoIds),
      failed_requests: failed,
      ...concurrency.figures,
      tokens_identical: Number(identical && concurrentIdentical),
      ...routeModes,
      paid_window_steps: payWindow === undefined ? 16 : Number(payWindow),
      ...paid,
    }, `${concurrency.description} gpt 12L d768 vocab 50257 (124M params) with KV cache, 3 fragments on 3 supplier processes (+1 replica of fragment 1) on 127.0.0.1, 2 cores shared by all processes; prompt ${PROMPT} tokens, ${DECODE} decode tokens x ${ROUNDS} rounds alternating monolithic and pipeline (speeds = totals over the rounds); greedy; suppliers with ${threads ? `${threads} onnxruntime thread(s)` : 'all cores as onnxruntime threads'}, ${spin ? 'spinning during a step (--spin)' : 'no spinning'}, ${inline ? 'onnxruntime on the supplier\'s own thread (--inline-runs)' : 'onnxruntime in a worker thread per fragment'}; monolithic = one onnxruntime session (onnxruntime defaults, spinning) of the whole model in the bench process; failover = SIGKILL of the host of fragment 1 after 16 tokens, extra = that token's time minus the median decode token; paid = the same 3 fragments on 3 more supplier processes with the same flags, charging 1e9 base units/GFLOP on an anvil chain, paid by a VoucherPayer in the bench process, ${ROUNDS} generations alternating with as many on the unpaid grid (paid_cpu_ratio: CPU ms per token over the bench process and the serving grid's suppliers, plus anvil for the paid one).`);
  } finally {
    if (tracedBefore === undefined) delete process.env.GRIDPIPE_STEP_TRACE;
    else process.env.GRIDPIPE_STEP_TRACE = tracedBefore;
    await client?.close().catch(() => undefined);
    for (const s of suppliers) s.child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Supplier flags the bench carries from its own: `--provider=cpu|cuda|webgpu` (so the same bench runs on a GPU
 * machine), `--max-batch=N` and `--batch-window-us=N` (server-side batching).
 */
function onnxruntimeFlags(flags: readonly string[]): string[] {
  const value = (name: string): string | undefined => flags.find((f) => f.startsWith(`--${name}=`))?.slice(name.length + 3);
  const out: string[] = [];
  for (const name of ['provider', 'max-batch', 'batch-window-us']) {
    const v = value(name);
    if (v !== undefined) out.push(`--${name}`, v);
  }
  return out;
}

type SessionRun = (maxTokens: number) => Promise<{ ids: number[]; ms: number[] }>;

/**
 * One session alone, then 8 at once, batched (the servers merge concurrent sessions' steps) and solo (the same
 * servers run each session's steps alone), alternating for CONCURRENCY_ROUNDS rounds (speeds are totals over the
 * rounds). Every session must produce the same tokens.
 */
async function compareConcurrency(batched: SessionRun, unbatched: SessionRun): Promise<{ figures: Record<string, number>; identical: boolean; description: string }> {
  const TOKENS = 24;
  // Rounds are cheap (about 10 s each) and one round's ratio moves ±15 % on this shared machine: five of them.
  const CONCURRENCY_ROUNDS = 5;
  const totals = { batched: { single: 0, eight: 0 }, unbatched: { single: 0, eight: 0 } };
  const roundRatios: number[] = [];
  const ids = new Set<string>();
  // Warm-up: 8 sessions at once of each kind first, so the measured rounds see servers that have run batches of
  // these shapes before (the single session had its warm-up when the grid started).
  for (const run of [batched, unbatched]) await Promise.all(Array.from({ length: 8 }, () => run(4)));
  for (let round = 0; round < CONCURRENCY_ROUNDS; round++) {
    for (const [name, run] of [['batched', batched], ['unbatched', unbatched]] as const) {
      const single = await run(TOKENS);
      totals[name].single += sum(single.ms);
      ids.add(single.ids.join());
      // Both figures run from a session's start to its last token (the 8 start together: the slowest one's time),
      // closing the sessions after that counts in neither.
      const eight = await Promise.all(Array.from({ length: 8 }, () => run(TOKENS)));
      const eightMs = Math.max(...eight.map((r) => sum(r.ms)));
      totals[name].eight += eightMs;
      if (name === 'batched') roundRatios.push((8 * sum(single.ms)) / eightMs);
      for (const r of eight) ids.add(r.ids.join());
    }
  }
  const tps = (ms: number, sessions: number): number => (CONCURRENCY_ROUNDS * sessions * TOKENS) / (ms / 1000);
  const singleTps = tps(totals.batched.single, 1);
  const eightTps = tps(totals.batched.eight, 8);
  const singleUnbatchedTps = tps(totals.unbatched.single, 1);
  const eightUnbatchedTps = tps(totals.unbatched.eight, 8);
  return {
    figures: {
      single_tokens_per_s: singleTps,
      concurrent8_tokens_per_s: eightTps,
      concurrent8_ratio: eightTps / singleTps,
      concurrent8_ratio_round_min: Math.min(...roundRatios),
      concurrent8_ratio_round_max: Math.max(...roundRatios),
      single_tokens_per_s_unbatched: singleUnbatchedTps,
      concurrent8_tokens_per_s_unbatched: eightUnbatchedTps,
      concurrent8_ratio_unbatched: eightUnbatchedTps / singleUnbatchedTps,
      concurrent8_batching_speedup: eightTps / eightUnbatchedTps,
    },
    identical: ids.size === 1,
    description: `Concurrency: ${TOKENS} tokens, 1 session then 8 at once (after one 8-session warm-up of each kind), ${CONCURRENCY_ROUNDS} rounds alternating sessions the suppliers batch (concurrent8_ratio) and solo sessions they never batch (OpenSession.solo; concurrent8_ratio_unbatched) on the same 4 suppliers; speeds are totals over the rounds, each session timed from its start to its last token (the 8: the slowest of them).`,
  };
}
