/**
 * `npm run bench -- selective`: selective activation against calling every expert, in the same run. An MoE
 * decoder (gpt-moe, 2 layers, E = 8 experts, top-2, KV cache) shaped like Mixtral: the experts hold ~95 % of the
 * parameters (Mixtral-8x7B: ~96 %), each expert 10.5·d² weights as Mixtral's SwiGLU experts (2 matrices with
 * d_ff = 5.25·d here, 3 with d_ff = 3.5·d there). Cut with --experts-per-fragment 1 over 5 supplier processes on
 * 127.0.0.1: one hosts the dense fragments and routers, four host two experts each (both layers). Rounds
 * alternate between selective (each token to its top-2 experts) and dense (every token to all 8 experts, weights
 * 0 for the unchosen: the same output). Per processed position: bytes the client sent to expert hosts, expert
 * FLOPs (manifest FLOPs of the called expert fragments × their tokens), and tokens/s (total, and the min/median
 * of the per-round ratios). Goals: bytes ≤ 0.3 × dense; tokens/s ≥ 1.5 × dense; FLOPs ≤ 0.35 × dense.
 */
import '../net/polyfill.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { positionsAtCostDims, type Manifest } from '../fragments/manifest.js';
import { GridClient, type OpenModel } from '../scheduler/client.js';
import { generate, type GenerateOptions, type StepRunner } from '../scheduler/generate.js';
import { PipelineSession, type StepOutcome } from '../scheduler/session.js';
import { LocalModelRunner } from '../scheduler/local-runner.js';
import { reportResult } from './report.js';
import { spawnGridpipe } from '../cli/spawn.js';

const EXPERTS = 8;
const TOP_K = 2;
const PROMPT = 32;
const DECODE = 16;
/** Rounds of each kind, alternating: the machine is shared, so more rounds average out others' bursts. */
const ROUNDS = 6;
/** Mixtral-shaped: d_ff = 5.25·d with 2 matrices gives each expert Mixtral's 10.5·d² weights (3 × d × 3.5·d). */
const SHAPE = { layers: 2, dModel: 768, heads: 12, dFf: 4032 };

interface Supplier { child: ChildProcess; address: string }

async function startSupplier(args: string[]): Promise<Supplier> {
  const proc = spawnGridpipe(['supply', ...args, '--json'], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
  const ready = (await proc.ready) as { addresses: string[] };
  return { child: proc.child, address: ready.addresses[0] };
}

interface Totals {
  ms: number; generated: number; positions: number; expertBytes: number; expertFlops: number; expertCalls: number; ids: number[][];
  /** Decode steps (after the prefill), their wall time, and its parts: dense span calls (router included) and expert fan-outs (per layer, the slowest parallel call). */
  decodeSteps: number; decodeMs: number; denseMs: number; fanoutMs: number;
  /** Decode steps' expert calls: how many, their wall time, and what the hosts reported of it (queue + onnxruntime). */
  decodeExpertCalls: number; decodeExpertWallMs: number; decodeExpertServerMs: number;
  /** The same for the dense span calls (router fragments inside). */
  decodeDenseCalls: number; decodeDenseServerMs: number;
}

/** Runs the benchmark. */
export async function selectiveBench(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-selective-'));
  const suppliers: Supplier[] = [];
  let client: GridClient | undefined;
  try {
    const modelPath = path.join(work, 'moe.onnx');
    await writeModel(buildModel({ arch: 'gpt-moe', ...SHAPE, experts: EXPERTS, topK: TOP_K, vocab: 256, maxPositions: 256, kvCache: true, seed: 16, name: 'moe-e8-k2' }), modelPath);
    const fragDir = path.join(work, 'frags');
    const { manifest } = await fragmentModel(modelPath, fragDir, { parts: 3, expertsPerFragment: 1 });
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    const options: GenerateOptions = { promptIds: Array.from({ length: PROMPT }, (_, i) => (i * 37 + 11) % 256), maxTokens: DECODE, kvCache: true, inputNames };

    const expertFragments = (experts: number[]): number[] => manifest.expertGroups.flatMap((g) => experts.map((e) => g.experts[e].fragments[0]));
    const dense = manifest.fragments.filter((f) => f.moe?.role !== 'experts').map((f) => f.index);
    const common = (name: string): string[] => ['--data', path.join(work, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir];
    const first = await startSupplier([...common('dense'), '--fragments', dense.join(',')]);
    suppliers.push(first);
    suppliers.push(...await Promise.all([0, 1, 2, 3].map((h) => startSupplier([...common(`experts-${h}`), '--fragments', expertFragments([2 * h, 2 * h + 1]).join(','), '--bootstrap', first.address]))));
    client = await GridClient.connect({ bootstrap: [first.address], network: 'local' });
    const model = await client.openModel(fragDir);
    // Big fragments load for a while after a supplier says it is up: wait until every fragment has a host in view.
    for (let waited = 0; ; waited += 500) {
      const hosted = await model.discovery.refresh();
      if (manifest.fragments.every((f) => hosted.some((s) => s.start <= f.index && f.index < s.end))) break;
      if (waited > 300_000) throw new Error('the suppliers\' records do not cover every fragment after 5 minutes');
      await new Promise((resolve) => setTimeout(resolve, 500));
    }

    const runner = await LocalModelRunner.open(modelPath, manifest.statefulPairs);
    const monolithic: number[] = [];
    for await (const t of generate(runner, options)) monolithic.push(t.id);
    await runner.close();

    const run = (all: boolean): Promise<Totals> => generation(client!, model, manifest, options, all);
    await run(false); // warm-up: sessions, estimates, onnxruntime sessions on the suppliers
    await run(true);
    const selective: Totals[] = [];
    const everyExpert: Totals[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      selective.push(await run(false));
      everyExpert.push(await run(true));
    }
    const total = (runs: Totals[], key: Exclude<keyof Totals, 'ids'>): number => runs.reduce((s, t) => s + t[key], 0);
    const perDecodeStep = (runs: Totals[], key: 'decodeMs' | 'denseMs' | 'fanoutMs'): number => total(runs, key) / total(runs, 'decodeSteps');
    const perPosition = (runs: Totals[], key: 'expertBytes' | 'expertFlops'): number => total(runs, key) / total(runs, 'positions');
    const tps = (runs: Totals[]): number => total(runs, 'generated') / (total(runs, 'ms') / 1000);
    const roundRatios = selective.map((t, r) => (t.generated / t.ms) / (everyExpert[r].generated / everyExpert[r].ms)).sort((a, b) => a - b);
    const perCall = (runs: Totals[], key: 'decodeExpertWallMs' | 'decodeExpertServerMs'): number => total(runs, key) / total(runs, 'decodeExpertCalls');
    const shares = expertShares(manifest);
    const identical = [...selective, ...everyExpert].every((t) => t.ids.every((ids) => ids.join() === monolithic.join()));
    const metrics = {
      expert_bytes_sent_per_token: perPosition(selective, 'expertBytes'),
      dense_bytes_sent_per_token: perPosition(everyExpert, 'expertBytes'),
      bytes_ratio: perPosition(selective, 'expertBytes') / perPosition(everyExpert, 'expertBytes'),
      tokens_per_s: tps(selective),
      dense_tokens_per_s: tps(everyExpert),
      tokens_per_s_ratio: tps(selective) / tps(everyExpert),
      tokens_per_s_ratio_round_min: roundRatios[0],
      tokens_per_s_ratio_round_median: median(roundRatios),
      expert_flops_per_token: perPosition(selective, 'expertFlops'),
      dense_expert_flops_per_token: perPosition(everyExpert, 'expertFlops'),
      flops_ratio: perPosition(selective, 'expertFlops') / perPosition(everyExpert, 'expertFlops'),
      expert_calls_per_generation: total(selective, 'expertCalls') / ROUNDS,
      dense_expert_calls_per_generation: total(everyExpert, 'expertCalls') / ROUNDS,
      tokens_identical: Number(identical),
      // Where a decode step's time goes (ms per step): dense span calls (3, routers inside), the two layers' expert
      // fan-outs (slowest parallel call each), and the rest (routing, combining, sampling on the client).
      decode_step_ms: perDecodeStep(selective, 'decodeMs'),
      decode_dense_spans_ms: perDecodeStep(selective, 'denseMs'),
      decode_expert_fanout_ms: perDecodeStep(selective, 'fanoutMs'),
      decode_client_ms: perDecodeStep(selective, 'decodeMs') - perDecodeStep(selective, 'denseMs') - perDecodeStep(selective, 'fanoutMs'),
      dense_decode_step_ms: perDecodeStep(everyExpert, 'decodeMs'),
      dense_decode_dense_spans_ms: perDecodeStep(everyExpert, 'denseMs'),
      dense_decode_expert_fanout_ms: perDecodeStep(everyExpert, 'fanoutMs'),
      dense_decode_client_ms: perDecodeStep(everyExpert, 'decodeMs') - perDecodeStep(everyExpert, 'denseMs') - perDecodeStep(everyExpert, 'fanoutMs'),
      // Where one call's time goes (decode steps, ms per call): what the host reported (queue + onnxruntime), and
      // the rest (encoding, libp2p over TCP, both event loops).
      decode_expert_call_ms: perCall(selective, 'decodeExpertWallMs'),
      decode_expert_call_server_ms: perCall(selective, 'decodeExpertServerMs'),
      dense_decode_expert_call_ms: perCall(everyExpert, 'decodeExpertWallMs'),
      dense_decode_expert_call_server_ms: perCall(everyExpert, 'decodeExpertServerMs'),
      decode_dense_span_call_ms: total(selective, 'denseMs') / total(selective, 'decodeDenseCalls'),
      decode_dense_span_call_server_ms: total(selective, 'decodeDenseServerMs') / total(selective, 'decodeDenseCalls'),
      // The model's shape against Mixtral-8x7B (experts ~96 % of its parameters; ~89 % of a token's matmul FLOPs with 2 of 8 active).
      expert_params_share: shares.params,
      expert_active_flops_share: shares.activeFlops,
    };
    reportResult('selective', metrics, `gpt-moe ${SHAPE.layers} layers d${SHAPE.dModel}, ${EXPERTS} experts (d_ff ${SHAPE.dFf}: 10.5·d² weights each, as Mixtral's SwiGLU experts) top-${TOP_K}: experts hold ${(shares.params * 100).toFixed(1)} % of the weights (Mixtral-8x7B ~96 %) and ${(shares.activeFlops * 100).toFixed(1)} % of a token's FLOPs with ${TOP_K} active (Mixtral ~89 %), KV cache, cut with --parts 3 --experts-per-fragment 1 into ${manifest.fragments.length} fragments over 5 supplier processes on 127.0.0.1 (dense + routers on one, 2 experts of each layer on each of 4), 2 cores shared by all processes; prompt ${PROMPT} tokens + ${DECODE} generated, ${ROUNDS} rounds alternating selective and dense (every expert called for every token, unchosen weights 0: the same output) after one warm-up each; tokens_per_s_ratio is over all rounds, _round_min/_round_median over the per-round pairs; per-token figures are per processed position (prompt + decode); bytes = tensor bytes the client sent to expert hosts; FLOPs = manifest FLOPs of the expert fragments called × their tokens; tokens/s = generated tokens over wall time including the prefill; tokens_identical: every run equals the monolithic onnxruntime run.`);
  } finally {
    await client?.close().catch(() => undefined);
    for (const s of suppliers) s.child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
}

/** One generation, selective or calling every expert; sums what its steps sent and ran. */
async function generation(client: GridClient, model: OpenModel, manifest: Manifest, options: GenerateOptions, activateAllExperts: boolean): Promise<Totals> {
  const session = new PipelineSession({
    host: client.host, manifest, manifestCid: model.manifestCid, discovery: model.discovery, swarm: client.swarm,
    maxLength: options.promptIds.length + options.maxTokens, activateAllExperts, logger: client.logger,
    // A loaded shared machine can stall a step for seconds: a failover then would measure the failover, not the model.
    minStepTimeoutMs: 60_000,
  });
  const steps: StepOutcome[] = [];
  const stepMs: number[] = [];
  const recorder: StepRunner = { step: async (...a) => { const t0 = performance.now(); const r = await session.step(...a); stepMs.push(performance.now() - t0); steps.push(r); return r; } };
  const ids: number[] = [];
  const started = performance.now();
  try {
    for await (const t of generate(recorder, options)) ids.push(t.id);
  } finally {
    await session.close();
  }
  const ms = performance.now() - started;
  const perToken = positionsAtCostDims(manifest);
  const expertHops = steps.flatMap((s) => s.experts?.hops ?? []).filter((h) => h.experts.length > 0);
  const decodeExpertHops = steps.slice(1).flatMap((s) => s.experts?.hops ?? []).filter((h) => h.experts.length > 0);
  const decodeDenseHops = steps.slice(1).flatMap((s) => s.hops);
  return {
    ms, generated: ids.length, positions: options.promptIds.length + ids.length - 1,
    expertBytes: expertHops.reduce((n, h) => n + h.bytesSent, 0),
    expertFlops: expertHops.reduce((n, h) => n + (manifest.fragments[h.fragment].flops / perToken) * h.tokens, 0),
    expertCalls: expertHops.length,
    ids: [ids],
    decodeSteps: steps.length - 1,
    decodeMs: stepMs.slice(1).reduce((a, b) => a + b, 0),
    denseMs: steps.slice(1).reduce((n, s) => n + s.hops.reduce((m, h) => m + h.wallMs, 0), 0),
    fanoutMs: steps.slice(1).reduce((n, s) => {
      const byLayer = new Map<number, number>();
      for (const h of s.experts?.hops ?? []) byLayer.set(h.layer, Math.max(byLayer.get(h.layer) ?? 0, h.wallMs));
      return n + [...byLayer.values()].reduce((a, b) => a + b, 0);
    }, 0),
    decodeExpertCalls: decodeExpertHops.length,
    decodeExpertWallMs: decodeExpertHops.reduce((n, h) => n + h.wallMs, 0),
    decodeExpertServerMs: decodeExpertHops.reduce((n, h) => n + (h.queueMs ?? 0) + (h.computeMs ?? 0), 0),
    decodeDenseCalls: decodeDenseHops.length,
    decodeDenseServerMs: decodeDenseHops.reduce((n, h) => n + h.queueMs + h.computeMs, 0),
  };
}

function median(sorted: number[]): number {
  const m = sorted.length >> 1;
  return sorted.length % 2 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
}

/**
 * How much of the model the experts are, from the manifest: their share of the weight bytes, and of one token's
 * FLOPs when it uses k of E experts (the router, attention, embeddings and head make the rest).
 */
function expertShares(manifest: Manifest): { params: number; activeFlops: number } {
  const experts = manifest.fragments.filter((f) => f.moe?.role === 'experts');
  const others = manifest.fragments.filter((f) => f.moe?.role !== 'experts');
  const sum = (fs: typeof experts, key: 'weightBytes' | 'flops'): number => fs.reduce((n, f) => n + f[key], 0);
  const activeExpertFlops = sum(experts, 'flops') * (TOP_K / EXPERTS);
  return {
    params: sum(experts, 'weightBytes') / (sum(experts, 'weightBytes') + sum(others, 'weightBytes')),
    activeFlops: activeExpertFlops / (activeExpertFlops + sum(others, 'flops')),
  };
}
