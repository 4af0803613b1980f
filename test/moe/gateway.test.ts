/**
 * Selective activation through the OpenAI-compatible API: a `gridpipe gateway` process in front of three supplier
 * processes serving a cut gpt-moe model (dense fragments and routers on one, experts 0-1 and 2-3 of both layers on
 * the others). With every expert live, `strict_experts: true` changes nothing: the monolithic tokens, no fallback.
 * With the host of experts 2-3 gone (its record withdrawn), the model stays listed; a strict request fails with 503
 * `expert_unavailable` naming the expert, and a lenient one falls back, shown in the response's route metadata,
 * the feed's `request.finished` and the gateway's metrics. `/v1/infer` takes `strict_experts` the same way (JSON
 * body field, or `?strict_experts=` for binary frames): strict with every expert live returns the monolithic
 * logits; with experts 2-3 gone it fails with 503 naming the expert, and a lenient call reports the fallback.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import ort from 'onnxruntime-node';
import { generate } from '../../scheduler/generate.js';
import { TENSORS_MEDIA_TYPE, tensorsToFrames } from '../../gateway/tensors.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { byteTokenizer } from '../../gateway/tokenizers/byte.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 6;
let manifest: Manifest;
let url: string;
let gateway: RunningProcess;
let expectedText: string;
/** The monolithic model's logits for PROMPT as one prefill: what /v1/infer must return. */
let expectedLogits: Float32Array;
const suppliers = new Map<string, RunningProcess>();

interface Body {
  choices?: { text: string }[];
  gridpipe?: { experts?: { calls: number; cost: string; fallbacks: { layer: number; expert: number; by?: number; tokens: number }[] } };
  error?: { message: string; code: string; type: string };
}

type FeedEvent = { event?: string } & NonNullable<Body['gridpipe']>;

async function complete(extra: Record<string, unknown>): Promise<{ status: number; body: Body }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny-moe', prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, ...extra }),
  });
  return { status: res.status, body: await res.json() as Body };
}

/** The prompt as the model's (non-cache) inputs, for /v1/infer. */
function promptTensors(): Record<string, ort.Tensor> {
  const ids = (values: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
  const all: Record<string, ort.Tensor> = { input_ids: ids(PROMPT), attention_mask: ids(PROMPT.map(() => 1)), position_ids: ids(PROMPT.map((_, i) => i)) };
  return Object.fromEntries(manifest.model.inputs.filter((i) => !i.name.startsWith('past_key_values')).map((i) => [i.name, all[i.name]]));
}

interface InferBody extends Body { outputs?: Record<string, { dims: number[]; data: number[] }> }

async function infer(extra: Record<string, unknown>): Promise<{ status: number; body: InferBody }> {
  const inputs = Object.fromEntries(Object.entries(promptTensors()).map(([name, t]) => [name, { dtype: 'int64', dims: t.dims, data: Array.from(t.data as BigInt64Array, Number) }]));
  const res = await fetch(`${url}/v1/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny-moe', inputs, ...extra }) });
  return { status: res.status, body: await res.json() as InferBody };
}

async function start(name: string, fragments: number[], bootstrap?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', path.join(tmp.dir, 'frags'),
    '--fragments', fragments.join(','), '--json', ...(bootstrap ? ['--bootstrap', bootstrap] : [])]);
  const ready = (await proc.ready) as { addresses: string[] };
  suppliers.set(name, proc);
  return ready.addresses[0];
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'moe.onnx');
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 64, heads: 4, experts: 4, topK: 2, vocab: 256, maxPositions: 64, kvCache: true, seed: 16, name: 'tiny-moe' }), modelPath);
  manifest = (await fragmentModel(modelPath, path.join(tmp.dir, 'frags'), { parts: 3, expertsPerFragment: 1 })).manifest;
  const experts = (list: number[]): number[] => manifest.expertGroups.flatMap((g) => list.map((e) => g.experts[e].fragments[0]));
  const first = await start('dense', manifest.fragments.filter((f) => f.moe?.role !== 'experts').map((f) => f.index));
  await Promise.all([start('experts-01', experts([0, 1]), first), start('experts-23', experts([2, 3]), first)]);
  gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', first, '--data', path.join(tmp.dir, 'gateway'), '--json']);
  url = ((await gateway.ready) as { url: string }).url;
  await waitFor(async () => {
    const models = await (await fetch(`${url}/v1/models`)).json() as { data: { id: string }[] };
    return models.data.some((m) => m.id === 'tiny-moe');
  }, 'the gateway to serve the model', 60_000, 500);
  const runner = await LocalModelRunner.open(modelPath, manifest.statefulPairs);
  expectedLogits = (await runner.step(promptTensors(), 0)).outputs.logits.data as Float32Array;
  const ids: number[] = [];
  for await (const t of generate(runner, { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) })) ids.push(t.id);
  await runner.close();
  expectedText = byteTokenizer.decode(ids);
});

afterAll(async () => {
  await gateway?.stop('SIGTERM');
  await Promise.all([...suppliers.values()].map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('strict_experts and fallbacks through the API', () => {
  it('rejects a strict_experts that is not a boolean', async () => {
    const { status, body } = await complete({ strict_experts: 'yes' });
    expect(status).toBe(400);
    expect(body.error!.message).toMatch(/strict_experts/);
  });

  it('with every expert live, strict_experts gives the monolithic text and no fallback', async () => {
    const { status, body } = await complete({ strict_experts: true });
    expect(status, JSON.stringify(body.error)).toBe(200);
    expect(body.choices![0].text).toBe(expectedText);
    expect(body.gridpipe!.experts!.fallbacks).toEqual([]);
    expect(body.gridpipe!.experts!.calls).toBeGreaterThan(0);
  });

  it('/v1/infer: strict_experts must be a boolean (JSON) or true/false (binary query)', async () => {
    const json = await infer({ strict_experts: 'yes' });
    expect(json.status).toBe(400);
    expect(json.body.error!.message).toMatch(/strict_experts/);
    const res = await fetch(`${url}/v1/infer?model=tiny-moe&strict_experts=maybe`, { method: 'POST', headers: { 'content-type': TENSORS_MEDIA_TYPE }, body: tensorsToFrames(promptTensors()) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Body).error!.message).toMatch(/strict_experts/);
  });

  it('/v1/infer with strict_experts and every expert live returns the monolithic logits, no fallback', async () => {
    const { status, body } = await infer({ strict_experts: true });
    expect(status, JSON.stringify(body.error)).toBe(200);
    const logits = body.outputs!.logits;
    expect(logits.dims).toEqual([1, PROMPT.length, 256]);
    expect(Math.max(...logits.data.map((v, i) => Math.abs(v - expectedLogits[i])))).toBeLessThan(1e-4);
    expect(body.gridpipe!.experts!.fallbacks).toEqual([]);
    expect(body.gridpipe!.experts!.calls).toBeGreaterThan(0);
  });

  it('experts 2-3 gone: strict fails naming the expert (503 expert_unavailable); lenient falls back, in metadata, feed and metrics', async () => {
    expect(await suppliers.get('experts-23')!.stop('SIGTERM')).toBe(0);
    suppliers.delete('experts-23');
    // Its record is withdrawn (or, until the gateway's next sweep, its calls fail): no live host of experts 2-3.
    const strict = await complete({ strict_experts: true });
    expect(strict.status, JSON.stringify(strict.body)).toBe(503);
    expect(strict.body.error!.code).toBe('expert_unavailable');
    expect(strict.body.error!.message).toMatch(/^model "tiny-moe" cannot be served right now: expert [23] of mixture-of-experts layer [01] \(fragment \d+\) has no live server/);

    const controller = new AbortController();
    const feed = await fetch(`${url}/v1/feed?replay=false`, { signal: controller.signal });
    const reader = feed.body!.pipeThrough(new TextDecoderStream()).getReader();
    const lenient = await complete({});
    expect(lenient.status, JSON.stringify(lenient.body.error)).toBe(200);
    const fallbacks = lenient.body.gridpipe!.experts!.fallbacks;
    expect(fallbacks.length).toBeGreaterThan(0);
    for (const f of fallbacks) {
      expect([2, 3]).toContain(f.expert);
      expect([0, 1]).toContain(f.by);
    }
    let buffer = '';
    let finished: FeedEvent | undefined;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (const event of buffer.split('\n\n')) {
        const data = event.split('\n').find((l) => l.startsWith('data: '));
        const parsed = data ? JSON.parse(data.slice(6)) as FeedEvent : undefined;
        if (parsed?.event === 'request.finished') finished = parsed;
      }
    }
    controller.abort();
    expect(finished!.experts!.fallbacks).toEqual(fallbacks);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const fellBack = fallbacks.reduce((n, f) => n + f.tokens, 0);
    expect(metrics).toContain(`gridpipe_gateway_expert_fallbacks_total{model="tiny-moe"} ${fellBack}`);

    // /v1/infer the same way: strict fails naming the expert (JSON field and binary query), lenient falls back.
    const strictInfer = await infer({ strict_experts: true });
    expect(strictInfer.status, JSON.stringify(strictInfer.body)).toBe(503);
    expect(strictInfer.body.error!.code).toBe('expert_unavailable');
    expect(strictInfer.body.error!.message).toMatch(/expert [23] of mixture-of-experts layer [01] \(fragment \d+\) has no live server/);
    const binary = await fetch(`${url}/v1/infer?model=tiny-moe&strict_experts=true`, { method: 'POST', headers: { 'content-type': TENSORS_MEDIA_TYPE }, body: tensorsToFrames(promptTensors()) });
    expect(binary.status).toBe(503);
    expect(((await binary.json()) as Body).error!.code).toBe('expert_unavailable');
    const lenientInfer = await infer({});
    expect(lenientInfer.status, JSON.stringify(lenientInfer.body.error)).toBe(200);
    expect(lenientInfer.body.gridpipe!.experts!.fallbacks.length).toBeGreaterThan(0);
    for (const f of lenientInfer.body.gridpipe!.experts!.fallbacks) expect([2, 3]).toContain(f.expert);
  });
});
