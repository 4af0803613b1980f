/**
 * Selective activation across supplier processes on 127.0.0.1: a gpt-moe model (2 MoE layers, 4 experts,
 * top-2) cut into dense, router and expert fragments; one supplier hosts the dense fragments and routers,
 * three host experts (experts 0-1 on two of them). Generation with a KV cache equals the monolithic run; the
 * messages are counted on both sides (the client's expert hops, each supplier's exec step counter): a token
 * goes only to its top-k experts' hosts, a prefill sends each expert all its tokens in one call, and each router
 * runs in the same call as the dense fragment before it. A killed
 * replica changes nothing; experts with no live host fall back to the next-ranked ones, reported per step;
 * strict mode fails naming the expert.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions, type StepRunner } from '../../scheduler/generate.js';
import type { PipelineSession, StepOutcome } from '../../scheduler/session.js';
import { ExpertUnavailableError } from '../../scheduler/expert-router.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { runCli } from '../helpers/cli.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { localTokens } from '../helpers/local-run.js';

const tmp = tempDir();
let modelPath: string;
let fragDir: string;
let manifest: Manifest;
const suppliers = new Map<string, { proc: RunningProcess; name: string; admin: string }>();
let client: GridClient;
let bootstrapAddress: string;
let model: OpenModel;
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 8;
const TOP_K = 2;

function options(): GenerateOptions {
  return {
    promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true,
    inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
  };
}

async function start(name: string, fragments: number[], bootstrap?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir,
    '--fragments', fragments.join(','), '--admin-port', '0', '--json', ...(bootstrap ? ['--bootstrap', bootstrap] : [])]);
  const ready = (await proc.ready) as { peerId: string; addresses: string[]; admin: string };
  suppliers.set(ready.peerId, { proc, name, admin: ready.admin });
  return ready.addresses[0];
}

/** Exec steps a supplier answered, from its own metrics endpoint. */
async function stepsAnswered(peerId: string): Promise<number> {
  const text = await (await fetch(`${suppliers.get(peerId)!.admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('gridpipe_exec_steps_total{outcome="ok"}'));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

const peerNamed = (name: string): string => [...suppliers.entries()].find(([, s]) => s.name === name)![0];

/** Generates on the grid, recording every step's outcome. */
async function generateOnGrid(opts: { strict?: boolean; onToken?: (n: number, steps: StepOutcome[]) => Promise<void> | void } = {}): Promise<{ tokens: number[]; steps: StepOutcome[] }> {
  const session: PipelineSession = client.session(model, PROMPT.length + MAX_TOKENS, { strictExperts: opts.strict });
  const steps: StepOutcome[] = [];
  const recorder: StepRunner = { step: async (...a) => { const r = await session.step(...a); steps.push(r); return r; } };
  const tokens: number[] = [];
  try {
    for await (const t of generate(recorder, options())) {
      tokens.push(t.id);
      await opts.onToken?.(tokens.length, steps);
    }
    return { tokens, steps };
  } finally {
    await session.close();
  }
}

let expected: number[];
beforeAll(async () => {
  modelPath = path.join(tmp.dir, 'moe.onnx');
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 64, heads: 4, experts: 4, topK: TOP_K, kvCache: true, seed: 16 }), modelPath);
  fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 3, expertsPerFragment: 1 })).manifest;
  const expertFragment = (layer: number, e: number): number => manifest.expertGroups[layer].experts[e].fragments[0];
  const dense = manifest.fragments.filter((f) => f.moe?.role !== 'experts').map((f) => f.index);
  const experts = (list: number[]): number[] => [0, 1].flatMap((layer) => list.map((e) => expertFragment(layer, e)));
  const bootstrap = await start('dense', dense);
  bootstrapAddress = bootstrap;
  await Promise.all([start('experts-01', experts([0, 1]), bootstrap), start('experts-01-replica', experts([0, 1]), bootstrap), start('experts-23', experts([2, 3]), bootstrap)]);
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 }, logger: testLogger() });
  model = await client.openModel(fragDir);
  await waitFor(async () => model.discovery.current.length >= 4 || (await model.discovery.refresh()).length >= 4, 'all suppliers in the swarm view', 30_000, 250);
  expected = await localTokens(modelPath, manifest.statefulPairs, options());
});

afterAll(async () => {
  await client?.close();
  await Promise.all([...suppliers.values()].map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('selective activation across supplier processes', () => {
  it('generates the monolithic tokens; each token reaches only its top-k experts\' hosts, counted on both sides', async () => {
    const before = new Map(await Promise.all([...suppliers.keys()].map(async (id) => [id, await stepsAnswered(id)] as const)));
    const { tokens, steps } = await generateOnGrid();
    expect(tokens).toEqual(expected);
    expect(steps).toHaveLength(MAX_TOKENS);
    const expertHost = (id: string): boolean => suppliers.get(id)!.name.startsWith('experts');
    for (const [s, step] of steps.entries()) {
      const positions = s === 0 ? PROMPT.length : 1;
      expect(step.experts!.fallbacks).toEqual([]);
      for (const layer of [0, 1]) {
        const hops = step.experts!.hops.filter((h) => h.layer === layer);
        const routerFragment = manifest.expertGroups[layer].routerFragment!;
        const expertCalls = hops.filter((h) => h.experts.length > 0);
        // The router runs in the same call as the dense fragment before it (one host has both): no hop of its own.
        expect(hops.filter((h) => h.fragment === routerFragment)).toEqual([]);
        expect(step.hops.filter((h) => h.start <= routerFragment && routerFragment < h.end && h.start < routerFragment).map((h) => suppliers.get(h.peerId)!.name)).toEqual(['dense']);
        // Every token goes to exactly k experts, each expert gets one call with all of its tokens.
        expect(expertCalls.reduce((n, h) => n + h.tokens, 0)).toBe(positions * TOP_K);
        expect(new Set(expertCalls.map((h) => h.experts[0])).size).toBe(expertCalls.length);
        if (positions === 1) expect(expertCalls).toHaveLength(TOP_K);
        for (const h of expertCalls) {
          expect(expertHost(h.peerId)).toBe(true);
          expect(manifest.fragments[h.fragment].moe).toEqual({ group: layer, role: 'experts', experts: h.experts });
        }
      }
    }
    // The suppliers' own counters: each expert host answered exactly the calls the client made to it.
    for (const [id, s] of suppliers) {
      if (!s.name.startsWith('experts')) continue;
      const sent = steps.flatMap((st) => st.experts!.hops).filter((h) => h.peerId === id).length;
      expect(await stepsAnswered(id) - before.get(id)!, s.name).toBe(sent);
    }
    // Decode steps used half the experts: at most 2 of 4 expert fragments per layer and token.
    const decodeExpertCalls = steps.slice(1).flatMap((st) => st.experts!.hops.filter((h) => h.experts.length > 0));
    expect(decodeExpertCalls).toHaveLength((MAX_TOKENS - 1) * 2 * TOP_K);
  });

  it('a killed expert host mid-generation: its replica takes over and the tokens stay the same', async () => {
    let killed = '';
    const { tokens, steps } = await generateOnGrid({
      onToken: async (n, sofar) => {
        if (n !== 3) return;
        // The host experts 0-1 were last served by.
        const last = sofar.at(-1)!.experts!.hops.filter((h) => suppliers.get(h.peerId)!.name.startsWith('experts-01')).at(-1);
        killed = last?.peerId ?? peerNamed('experts-01');
        suppliers.get(killed)!.proc.child.kill('SIGKILL');
        await suppliers.get(killed)!.proc.exited;
      },
    });
    suppliers.delete(killed);
    expect(tokens).toEqual(expected);
    const after = steps.slice(3).flatMap((s) => s.experts!.hops);
    expect(after.some((h) => h.peerId === killed)).toBe(false);
    expect(steps.flatMap((s) => s.experts!.fallbacks)).toEqual([]);
  });

  it('strict mode: with experts 2 and 3 gone, the step fails naming the expert', async () => {
    const gone = peerNamed('experts-23');
    suppliers.get(gone)!.proc.child.kill('SIGKILL');
    await suppliers.get(gone)!.proc.exited;
    suppliers.delete(gone);
    const err = await generateOnGrid({ strict: true }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ExpertUnavailableError);
    expect((err as Error).message).toMatch(/expert [23] of mixture-of-experts layer [01] \(fragment \d+\) has no live server/);
  });

  it('without strict mode, tokens that chose experts 2 or 3 fall back to the next-ranked live expert, reported per step', async () => {
    const { tokens, steps } = await generateOnGrid();
    expect(tokens).toHaveLength(MAX_TOKENS);
    const fallbacks = steps.flatMap((s) => s.experts!.fallbacks);
    expect(fallbacks.length).toBeGreaterThan(0);
    for (const f of fallbacks) {
      expect([2, 3]).toContain(f.expert);
      expect([0, 1]).toContain(f.by);
      expect(f.tokens).toBeGreaterThan(0);
    }
    // Still k experts per token, all on live hosts.
    for (const [s, step] of steps.entries()) {
      const calls = step.experts!.hops.filter((h) => h.experts.length > 0);
      expect(calls.reduce((n, h) => n + h.tokens, 0)).toBe((s === 0 ? PROMPT.length : 1) * TOP_K * 2);
      for (const h of calls) expect(h.experts[0]).toBeLessThan(2);
    }
  });

  it('gridpipe generate: --strict-experts fails naming the expert (exit 1); without it the summary counts the fallbacks', async () => {
    const args = ['generate', '--manifest', fragDir, '--prompt-ids', PROMPT.join(','), '--max-tokens', '4', '--bootstrap', bootstrapAddress, '--json'];
    const strict = await runCli([...args, '--strict-experts'], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(strict.code).toBe(1);
    expect(strict.stderr).toMatch(/expert [23] of mixture-of-experts layer [01] \(fragment \d+\) has no live server/);
    const lenient = await runCli(args, { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(lenient.code, lenient.stderr).toBe(0);
    const done = JSON.parse(lenient.stdout.trim().split('\n').at(-1)!) as { tokens: number[]; experts: { calls: number; fallbacks: number } };
    expect(done.tokens).toHaveLength(4);
    expect(done.experts.fallbacks).toBeGreaterThan(0);
    expect(done.experts.calls).toBeGreaterThan(0);
  });
});
