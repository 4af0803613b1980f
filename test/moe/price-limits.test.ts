/**
 * The expert router honours the request's price limits as span routing does: a host whose advertised price the
 * limits refuse is no candidate for an expert call. Supplier processes on 127.0.0.1 serve a cut gpt-moe model
 * (2 MoE layers, 4 experts, top-2): one hosts the dense fragments and routers, one experts 0-1 for free, and a
 * rogue hosts every expert at 10^18 base units per GFLOP (1000 × the default ceiling). Under the default limits the
 * rogue gets no call (its own step counter says so): experts 0-1 go to the free host, tokens that chose 2 or 3 fall
 * back, and strict mode fails naming the expert and why its host was refused. Limits that admit the rogue send
 * experts 2-3 to it and give the monolithic tokens: the limit is what kept it out.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import type { PriceLimits } from '../../policy/price-limits.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import type { StepOutcome } from '../../scheduler/session.js';
import { ExpertUnavailableError } from '../../scheduler/expert-router.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { localTokens } from '../helpers/local-run.js';

const tmp = tempDir();
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 6;
const ROGUE_PRICE = 1_000_000_000_000_000_000n;
let manifest: Manifest;
let fragDir: string;
let client: GridClient;
let model: OpenModel;
let expected: number[];
const suppliers = new Map<string, { proc: RunningProcess; peerId: string; admin: string }>();

function options(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

async function start(name: string, fragments: number[], extra: string[] = [], bootstrap?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir,
    '--fragments', fragments.join(','), '--admin-port', '0', '--json', ...extra, ...(bootstrap ? ['--bootstrap', bootstrap] : [])]);
  const ready = (await proc.ready) as { peerId: string; addresses: string[]; admin: string };
  suppliers.set(name, { proc, peerId: ready.peerId, admin: ready.admin });
  return ready.addresses[0];
}

/** Exec steps a supplier answered, from its own metrics endpoint. */
async function stepsAnswered(name: string): Promise<number> {
  const text = await (await fetch(`${suppliers.get(name)!.admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('gridpipe_exec_steps_total{outcome="ok"}'));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

async function generateOnGrid(request: { priceLimits?: PriceLimits; strict?: boolean } = {}): Promise<{ tokens: number[]; steps: StepOutcome[] }> {
  const session = client.session(model, PROMPT.length + MAX_TOKENS, { priceLimits: request.priceLimits, strictExperts: request.strict });
  const steps: StepOutcome[] = [];
  const tokens: number[] = [];
  try {
    for await (const t of generate({ step: async (...a) => { const r = await session.step(...a); steps.push(r); return r; } }, options())) tokens.push(t.id);
    return { tokens, steps };
  } finally {
    await session.close();
  }
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'moe.onnx');
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 64, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 16 }), modelPath);
  fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 3, expertsPerFragment: 1 })).manifest;
  const experts = (list: number[]): number[] => manifest.expertGroups.flatMap((g) => list.map((e) => g.experts[e].fragments[0]));
  const bootstrap = await start('dense', manifest.fragments.filter((f) => f.moe?.role !== 'experts').map((f) => f.index));
  await Promise.all([
    start('experts-01', experts([0, 1]), [], bootstrap),
    start('rogue', experts([0, 1, 2, 3]), ['--price-per-gflop', ROGUE_PRICE.toString()], bootstrap),
  ]);
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 }, logger: testLogger() });
  model = await client.openModel(fragDir);
  await waitFor(async () => new Set((await model.discovery.refresh()).map((s) => s.peerId)).size === 3, 'the three suppliers in the swarm view', 30_000, 250);
  expected = await localTokens(modelPath, manifest.statefulPairs, options());
});

afterAll(async () => {
  await client?.close();
  await Promise.all([...suppliers.values()].map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('expert calls under the request\'s price limits', () => {
  it('default limits: the rogue-priced expert host gets no call; experts 0-1 go to the free host, 2-3 fall back', async () => {
    const before = await stepsAnswered('rogue');
    const { tokens, steps } = await generateOnGrid();
    expect(tokens).toHaveLength(MAX_TOKENS);
    const hops = steps.flatMap((s) => s.experts!.hops);
    expect(hops.length).toBeGreaterThan(0);
    expect(hops.filter((h) => h.peerId === suppliers.get('rogue')!.peerId)).toEqual([]);
    expect(hops.filter((h) => h.experts.length > 0).every((h) => h.peerId === suppliers.get('experts-01')!.peerId)).toBe(true);
    const fallbacks = steps.flatMap((s) => s.experts!.fallbacks);
    expect(fallbacks.length).toBeGreaterThan(0);
    for (const f of fallbacks) {
      expect([2, 3]).toContain(f.expert);
      expect([0, 1]).toContain(f.by);
    }
    expect(await stepsAnswered('rogue')).toBe(before);
  });

  it('strict mode under the default limits: the step fails naming the expert and why its only host was refused', async () => {
    const err = await generateOnGrid({ strict: true }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ExpertUnavailableError);
    const rogue = suppliers.get('rogue')!.peerId;
    expect((err as Error).message).toMatch(new RegExp(`^expert [23] of mixture-of-experts layer [01] \\(fragment \\d+\\) has no acceptable server: supplier ${rogue} is refused: it asks ${ROGUE_PRICE} base units per GFLOP, above this client's maximum`));
    expect((err as ExpertUnavailableError).refused).toBeDefined();
  });

  it('limits that admit the rogue send experts 2-3 to it, and the tokens equal the monolithic run', async () => {
    const before = await stepsAnswered('rogue');
    const { tokens, steps } = await generateOnGrid({ priceLimits: { maxPricePerGflop: ROGUE_PRICE, maxOverMedian: 4 }, strict: true });
    expect(tokens).toEqual(expected);
    const rogueCalls = steps.flatMap((s) => s.experts!.hops).filter((h) => h.peerId === suppliers.get('rogue')!.peerId);
    expect(rogueCalls.some((h) => h.experts.some((e) => e >= 2))).toBe(true);
    expect(await stepsAnswered('rogue') - before).toBe(rogueCalls.length);
  });
});
