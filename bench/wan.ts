/**
 * `npm run bench -- wan` (issue 19): a pipeline across emulated internet links, where decode is bounded by
 * round trips, not compute. Four supplier processes (one fragment each of a small GPT with KV cache) and the
 * client each sit in their own network namespace; every connection crosses one link of 25 ms one way and
 * 100 Mbit/s (bench/wan-net.ts). The client decodes the same tokens as a star (it relays every tensor: 8
 * one-way trips a token) and as a chain (direct return: 5), alternating. latency_bound_tokens_per_s is
 * 1 / (sum of the chain route's one-way delays): what a chain with free compute would reach.
 * Goals: chain_tokens_per_s >= 1.6 x star_tokens_per_s, and >= 0.85 x latency_bound_tokens_per_s.
 * Needs root and iproute2 (network namespaces); elsewhere it says so and writes nothing.
 */
import '../net/polyfill.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { generate } from '../scheduler/generate.js';
import { LocalModelRunner } from '../scheduler/local-runner.js';
import { reportResult } from './report.js';
import { createWanTopology, generateInside, type TimedGeneration } from './wan-net.js';
import { chainBreakdown } from './wan-trace.js';

const STAGES = 4;
const ONE_WAY_MS = 25;
const RATE_BITS_PER_S = 100e6;
const PROMPT = [72, 101, 108, 108, 111, 32, 119, 97, 110];
const TOKENS = 25;
const ROUNDS = 2;
const PORT = 4001;

/** Decode tokens per second of a timed generation (the prefill's token excluded). */
function decodeTps(run: TimedGeneration): number {
  return (run.at.length - 1) / ((run.at[run.at.length - 1] - run.at[0]) / 1000);
}

/** Runs the benchmark. */
export async function wanBench(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('wan: network namespaces need root and iproute2; not run\n');
    return;
  }
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-wan-'));
  const topology = createWanTopology(STAGES + 1); // host 0: the client; hosts 1..4: the suppliers
  const stops: (() => void)[] = [];
  try {
    const modelPath = path.join(work, 'gpt.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed: 25 }), modelPath);
    const fragDir = path.join(work, 'frags');
    const { manifest } = await fragmentModel(modelPath, fragDir, { parts: STAGES });
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    const runner = await LocalModelRunner.open(modelPath, manifest.statefulPairs);
    const local: number[] = [];
    for await (const t of generate(runner, { promptIds: PROMPT, maxTokens: TOKENS, kvCache: true, inputNames })) local.push(t.id);
    await runner.close();

    const shape = { delayMs: ONE_WAY_MS, rateBitsPerS: RATE_BITS_PER_S };
    const traceFile = path.join(work, 'links.trace');
    const hub = await topology.startLinks(Array.from({ length: STAGES }, (_, s) => ({ host: s + 1, port: PORT })), shape, traceFile);
    stops.push(() => hub.child.kill('SIGKILL'));
    const supplier = (s: number, extra: string[]): ReturnType<typeof topology.gridpipe> => {
      const host = s + 1;
      const proc = topology.gridpipe(host, ['supply', '--data', path.join(work, `s${s}`), '--listen', `/ip4/${topology.hostIp(host)}/tcp/${PORT}`,
        '--announce', `/ip4/${topology.linkIp(host)}/tcp/${PORT}`, '--host', fragDir, '--fragments', String(s), '--network', 'local', '--threads', '1', '--json', ...extra]);
      stops.push(() => proc.child.kill('SIGKILL'));
      return proc;
    };
    const first = (await supplier(0, []).ready) as { peerId: string };
    const bootstrap = `/ip4/${topology.linkIp(1)}/tcp/${PORT}/p2p/${first.peerId}`;
    await Promise.all(Array.from({ length: STAGES - 1 }, (_, s) => supplier(s + 1, ['--bootstrap', bootstrap]).ready));

    const args = (mode: string, tokens = TOKENS): string[] => ['--manifest', fragDir, '--prompt-ids', PROMPT.join(','), '--max-tokens', String(tokens), '--bootstrap', bootstrap, '--network', 'local', '--wait', '60', '--route-mode', mode];
    // A short warm-up generation first: each supplier's first step starts its onnxruntime worker, which on a
    // loaded machine can outlast the client's 5 s step deadline (a failover with no spare ends the run).
    for (let attempt = 0; attempt < 3; attempt++) {
      const warm = await generateInside(topology.hosts[0], args('star', 2));
      if (warm.code === 0) break;
      process.stderr.write(`wan: warm-up generation exited ${warm.code}; again\n`);
    }
    const runs: Record<'star' | 'chain', TimedGeneration[]> = { star: [], chain: [] };
    let retries = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of ['star', 'chain'] as const) {
        // A failed generation is run once more and counted (generation_retries): on a loaded machine a supplier
        // sometimes leaves a new connection's streams or a step unanswered for seconds (see docs/chain-mode.md).
        let run = await generateInside(topology.hosts[0], args(mode));
        if (run.code !== 0) {
          retries++;
          process.stderr.write(`wan: generate --route-mode ${mode} exited ${run.code}: ${run.stderr.slice(-600)}; once more\n`);
          run = await generateInside(topology.hosts[0], args(mode));
        }
        if (run.code !== 0) throw new Error(`generate --route-mode ${mode} exited ${run.code}: ${run.stderr.slice(-2000)}`);
        runs[mode].push(run);
      }
    }
    const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
    const star = mean(runs.star.map(decodeTps));
    const chain = mean(runs.chain.map(decodeTps));
    const bound = 1000 / ((STAGES + 1) * ONE_WAY_MS);
    const tokenMsP50 = (list: TimedGeneration[]): number => {
      const gaps = list.flatMap((r) => r.at.slice(1).map((t, i) => t - r.at[i])).sort((a, b) => a - b);
      return gaps[gaps.length >> 1];
    };
    // Where a chain step's time goes, from the hub's trace of every chunk (bench/wan-trace.ts).
    const epoch = performance.timeOrigin;
    const steps = await chainBreakdown(traceFile, topology.hosts.map((_, i) => topology.hostIp(i)), STAGES,
      runs.chain.map((r) => ({ from: epoch + r.at[0] - 1, to: epoch + r.at[r.at.length - 1] })));
    const p50 = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1] ?? NaN;
    const serverMs = p50(steps.flatMap((s) => s.serverMs));
    const identical = [...runs.star, ...runs.chain].every((r) => r.tokens.join() === local.join());
    reportResult('wan', {
      star_tokens_per_s: star,
      chain_tokens_per_s: chain,
      latency_bound_tokens_per_s: bound,
      star_latency_bound_tokens_per_s: 1000 / (2 * STAGES * ONE_WAY_MS),
      star_token_ms_p50: tokenMsP50(runs.star),
      chain_token_ms_p50: tokenMsP50(runs.chain),
      chain_over_star: chain / star,
      chain_over_bound: chain / bound,
      chain_steps: mean(runs.chain.map((r) => r.summary?.chainedSteps ?? 0)),
      route_stages: mean(runs.chain.map((r) => r.summary?.route.length ?? 0)),
      tokens_identical: Number(identical),
      generation_retries: retries,
      chain_traced_steps: steps.length,
      chain_step_ms_p50: p50(steps.map((s) => s.stepMs)),
      chain_step_link_ms_p50: p50(steps.map((s) => s.linkMs)),
      chain_step_emulator_late_ms_p50: p50(steps.map((s) => s.emulatorLateMs)),
      chain_step_servers_ms_p50: p50(steps.map((s) => s.serverMs.reduce((a, b) => a + b, 0))),
      chain_server_ms_p50: serverMs,
      chain_step_client_ms_p50: p50(steps.map((s) => s.clientMs)),
      chain_step_ms_min: Math.min(...steps.map((s) => s.stepMs)),
      // the best ratio a chain can have over a star with this compute: (8 d + n c) / ((n + 1) d + n c)
      chain_over_star_bound_at_measured_compute: (2 * STAGES * ONE_WAY_MS + STAGES * serverMs) / ((STAGES + 1) * ONE_WAY_MS + STAGES * serverMs),
    }, `${STAGES} supplier processes (gpt 4L d64 with KV cache, one fragment each, one onnxruntime thread each: five emulated machines share this one's cores) and the client (gridpipe generate) each in its own network namespace; every connection crosses one emulated link of ${ONE_WAY_MS} ms one way and ${RATE_BITS_PER_S / 1e6} Mbit/s (a user-space TCP forwarder in a hub namespace, at a higher scheduling priority than the nodes: this kernel has no netem). ${TOKENS} tokens (greedy) per generation, ${ROUNDS} rounds alternating star and chain (--route-mode); tokens/s over decode tokens (first token's line to last), mean over rounds; the prefill runs as a star in both (fresh sessions). latency bound = 1 / (${STAGES + 1} one-way delays of the chain route); a star's is 1 / (${2 * STAGES} one-way delays). chain_step_*: each decode step's critical path split from the hub's trace of every chunk (bench/wan-trace.ts): link = configured delay, emulator_late = the forwarder's timers firing late, servers = step delivered to output leaving, summed over the route (chain_server_ms_p50: one server), client = last reply delivered to the next step leaving.`);
  } finally {
    for (const stop of stops) stop();
    topology.destroy();
    // GRIDPIPE_BENCH_KEEP=1 keeps the folder (the link trace, links.trace, included) to look into a run.
    if (process.env.GRIDPIPE_BENCH_KEEP === '1') process.stderr.write(`wan: kept ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
}
