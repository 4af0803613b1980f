/**
 * Issue 6 end to end: a `gridpipe gateway` process in front of four `gridpipe supply` processes on 127.0.0.1
 * (every fragment of three models on two suppliers, no supplier holding a whole model), driven with the
 * official `openai` client and raw HTTP. Tokens equal a monolithic onnxruntime run; /v1/infer returns the
 * tensors of a local run; every bad request is a 4xx in OpenAI's shape and the gateway keeps serving.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import OpenAI from 'openai';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import type { GenerateOptions } from '../../scheduler/generate.js';
import { byteTokenizer } from '../../gateway/tokenizers/byte.js';
import { GridpipeClient } from '../../gateway/client.js';
import { TENSORS_MEDIA_TYPE, tensorsFromFrames, tensorsToFrames } from '../../gateway/tensors.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer, CHATML_TEMPLATE } from './fixtures.js';
import { localTokens } from '../helpers/local-run.js';

const tmp = tempDir();
const KEY = 'gp-test-main-key-0001';
const RATE_KEY = 'gp-test-rate-key-0001';
const BUDGET_KEY = 'gp-test-budget-key-001';
const CONTEXT = 64;

interface TestModel { file: string; dir: string; manifest: Manifest }
const models: Record<'gpt' | 'chat' | 'cnn', TestModel> = {} as Record<'gpt' | 'chat' | 'cnn', TestModel>;
const suppliers: { name: string; proc: RunningProcess; peerId: string; fragments: string; admin: string }[] = [];
let gateway: RunningProcess;
let url: string;
let openai: OpenAI;
let eosId: number;

async function buildAndFragment(name: keyof typeof models, options: Parameters<typeof buildModel>[0], tokenizer?: string): Promise<void> {
  const file = path.join(tmp.dir, `${name}.onnx`);
  await writeModel(buildModel(options), file);
  const dir = path.join(tmp.dir, `${name}-fragments`);
  const { manifest } = await fragmentModel(file, dir, { parts: 2, tokenizer });
  models[name] = { file, dir, manifest };
}

async function startSupplier(name: string, fragments: string, hosts: string[], bootstrap?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', ...hosts.flatMap((h) => ['--host', h]),
    '--fragments', fragments, '--price-per-gflop', '1000', '--admin-port', '0', '--json', ...(bootstrap ? ['--bootstrap', bootstrap] : [])]);
  const ready = (await proc.ready) as { peerId: string; addresses: string[]; admin: string };
  suppliers.push({ name, proc, peerId: ready.peerId, fragments, admin: ready.admin });
  return ready.addresses[0];
}

beforeAll(async () => {
  const tok = writeTestTokenizer(path.join(tmp.dir, 'hf-tokenizer'));
  eosId = tok.eosId;
  await buildAndFragment('gpt', { arch: 'gpt', layers: 2, dModel: 32, heads: 2, maxPositions: CONTEXT, kvCache: true, seed: 61, name: 'tiny-gpt' });
  await buildAndFragment('chat', { arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: tok.vocabSize, maxPositions: CONTEXT, kvCache: true, seed: 73, name: 'tiny-chat' }, tok.tokenizerFile);
  await buildAndFragment('cnn', { arch: 'cnn', layers: 3, channels: 8, imageSize: 16, seed: 63, name: 'tiny-cnn' });
  const first = await startSupplier('a', '0', [models.gpt.dir, models.chat.dir, models.cnn.dir]);
  const cids = await Promise.all(Object.values(models).map(async (m) => (await import('../../fragments/cid.js')).cidOfFile(path.join(m.dir, 'manifest.json'))));
  // Each fragment on two suppliers, none with a whole model: every route has two hops.
  await Promise.all([startSupplier('b', '1', cids, first), startSupplier('c', '0', cids, first), startSupplier('d', '1', cids, first)]);
  const keysFile = path.join(tmp.dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: {
    [KEY]: { name: 'main' },
    [RATE_KEY]: { name: 'rate', requestsPerMinute: 2 },
    [BUDGET_KEY]: { name: 'budget', budget: '1', payer: '0x00000000000000000000000000000000000000aa' },
  } }));
  // The chat model's tokenizer ships in its folder; --model serves it from there (the others are discovered).
  gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', first, '--keys', keysFile, '--model', models.chat.dir, '--data', path.join(tmp.dir, 'gateway-data'), '--json']);
  url = ((await gateway.ready) as { url: string }).url;
  openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
  // Suppliers announce themselves in the DHT as they come; wait until the gateway sees all three models.
  await waitFor(async () => (await openai.models.list()).data.length === 3, 'three servable models', 60_000, 500);
});

afterAll(async () => {
  await gateway?.stop('SIGTERM');
  await Promise.all(suppliers.map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

function textOptions(m: TestModel, promptIds: number[], maxTokens: number, extra: Partial<GenerateOptions> = {}): GenerateOptions {
  return {
    promptIds, maxTokens, kvCache: true, maxLength: CONTEXT,
    inputNames: m.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')), ...extra,
  };
}

/** The monolithic run: the whole model in one local onnxruntime session. */
function localIds(m: TestModel, options: GenerateOptions): Promise<number[]> {
  return localTokens(m.file, m.manifest.statefulPairs, options);
}

const PROMPT = 'Hello grid, ';

async function post(pathname: string, body: string | object, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }): Promise<{ status: number; body: { error?: { message: string; type: string; param: string | null; code: string | null } } & Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${url}${pathname}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as never, headers: res.headers };
}

/** Asserts OpenAI's error shape with a 4xx status. */
function expectOpenAIError(r: Awaited<ReturnType<typeof post>>, status: number, code?: string): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body.error).toBeDefined();
  expect(typeof r.body.error!.message).toBe('string');
  expect(r.body.error!.message.length).toBeGreaterThan(0);
  expect(typeof r.body.error!.type).toBe('string');
  expect(r.body.error).toHaveProperty('param');
  expect(r.body.error).toHaveProperty('code');
  if (code) expect(r.body.error!.code).toBe(code);
}

type RouteField = { route: { peerId: string; fragments: [number, number]; wireEncoding?: string }[]; hops: { peerId: string; steps: number; wallMs: number }[]; failovers: number; cost: string; synthetic: boolean };

function expectTwoHopRoute(g: RouteField, steps: number): void {
  expect(g.route).toHaveLength(2);
  expect(g.route.map((r) => r.fragments)).toEqual([[0, 0], [1, 1]]);
  expect(new Set(g.route.map((r) => r.peerId)).size).toBe(2);
  for (const r of g.route) expect(suppliers.map((s) => s.peerId)).toContain(r.peerId);
  for (const r of g.route) expect(r.wireEncoding).toBe('exact'); // the gateway's default; `"exact": true` always
  expect(g.hops.reduce((a, h) => a + h.steps, 0)).toBe(2 * steps);
  for (const h of g.hops) expect(h.wallMs).toBeGreaterThan(0);
}

describe('gridpipe gateway over a 4-supplier grid', () => {
  it('lists the three models (id = manifest name), labelled, with health', async () => {
    const list = await openai.models.list();
    const byId = Object.fromEntries(list.data.map((m) => [m.id, m as unknown as { gridpipe: Record<string, unknown> }]));
    expect(Object.keys(byId).sort()).toEqual(['tiny-chat', 'tiny-cnn', 'tiny-gpt']);
    expect(byId['tiny-gpt'].gridpipe).toMatchObject({ kind: 'text', synthetic: true, fragments: 2, contextLength: CONTEXT, tokenizer: 'byte' });
    expect(byId['tiny-chat'].gridpipe).toMatchObject({ kind: 'text', tokenizer: 'hf' });
    expect(byId['tiny-cnn'].gridpipe).toMatchObject({ kind: 'tensor', tokenizer: 'none' });
    const health = await (await fetch(`${url}/healthz`)).json();
    expect(health).toMatchObject({ ok: true, models: 3 });
    // The manifest CID names a model too.
    const cid = byId['tiny-gpt'].gridpipe.manifestCid as string;
    expect((await openai.models.retrieve(cid)).id).toBe('tiny-gpt');
    const byCid = await openai.completions.create({ model: cid, prompt: PROMPT, max_tokens: 2, temperature: 0 });
    expect(byCid.model).toBe('tiny-gpt');
  });

  it('completions (not streamed): the tokens of the monolithic run, usage, route header and field', async () => {
    const promptIds = byteTokenizer.encode(PROMPT);
    const expected = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 12)));
    // `exact` (a gridpipe field, docs/api.md): activations never travel compressed.
    const body = { model: 'tiny-gpt', prompt: PROMPT, max_tokens: 12, temperature: 0, exact: true };
    const { data, response } = await openai.completions.create(body as Parameters<typeof openai.completions.create>[0] & { stream?: false }).withResponse();
    expect(data.choices[0].text).toBe(expected);
    expect(data.choices[0].finish_reason).toBe('length');
    expect(data.usage).toEqual({ prompt_tokens: promptIds.length, completion_tokens: 12, total_tokens: promptIds.length + 12 });
    expect(data.system_fingerprint).toBe('gridpipe-synthetic');
    expect(response.headers.get('x-gridpipe-synthetic')).toBe('true');
    const g = (data as unknown as { gridpipe: RouteField }).gridpipe;
    expectTwoHopRoute(g, 12);
    expect(BigInt(g.cost)).toBeGreaterThan(0n);
    const header = JSON.parse(response.headers.get('x-gridpipe-route')!);
    expect(header.route.map((r: [string, number, number]) => r[0])).toEqual(g.route.map((r) => r.peerId));
  });

  it('completions streamed over SSE: the same text, [DONE], the route in the last chunk', async () => {
    const promptIds = byteTokenizer.encode(PROMPT);
    const expected = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 12)));
    const stream = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: unknown;
    let g: RouteField | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
      g = (chunk as unknown as { gridpipe?: RouteField }).gridpipe ?? g;
    }
    expect(text).toBe(expected);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: 12 });
    expectTwoHopRoute(g!, 12);
    // Raw SSE: OpenAI's framing, ending with data: [DONE].
    const raw = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body: JSON.stringify({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 4, temperature: 0, stream: true }) });
    expect(raw.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(JSON.parse(raw.headers.get('x-gridpipe-route')!).route).toHaveLength(2);
    const body = await raw.text();
    expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const events = body.split('\n\n').filter(Boolean).map((e) => e.replace(/^data: /, ''));
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks.every((c) => c.object === 'text_completion' && c.id === chunks[0].id)).toBe(true);
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 4))));
  });

  it('chat with a Hugging Face tokenizer and its chat template, streamed and not, equals the local run', async () => {
    const tokenizer = new HfTokenizer(JSON.parse(readFileSync(path.join(models.chat.dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(path.join(models.chat.dir, 'tokenizer_config.json'), 'utf8')));
    const messages = [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: 'Say the thing.' }];
    const prompt = new Template(CHATML_TEMPLATE).render({ messages, add_generation_prompt: true });
    const promptIds = tokenizer.encode(prompt, { add_special_tokens: false }).ids;
    // Sampled (seeded) rather than greedy: the synthetic weights repeat one token under greedy decoding.
    const sampling = { temperature: 1, seed: 11 };
    const ids = await localIds(models.chat, textOptions(models.chat, promptIds, 10, { stopTokens: [eosId], ...sampling }));
    expect(new Set(ids).size).toBeGreaterThan(3);
    const stoppedAtEos = ids.at(-1) === eosId;
    const expected = tokenizer.decode(stoppedAtEos ? ids.slice(0, -1) : ids, { skip_special_tokens: true });

    const done = await openai.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 10, temperature: 1, seed: 11 });
    expect(done.choices[0].message.content).toBe(expected);
    expect(done.choices[0].message.role).toBe('assistant');
    expect(done.choices[0].finish_reason).toBe(stoppedAtEos ? 'stop' : 'length');
    expect(done.usage).toMatchObject({ prompt_tokens: promptIds.length, completion_tokens: ids.length });
    expectTwoHopRoute((done as unknown as { gridpipe: RouteField }).gridpipe, ids.length);

    const stream = await openai.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 10, temperature: 1, seed: 11, stream: true });
    let text = '';
    let role: string | undefined;
    let g: RouteField | undefined;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      text += chunk.choices[0]?.delta.content ?? '';
      g = (chunk as unknown as { gridpipe?: RouteField }).gridpipe ?? g;
    }
    expect(role).toBe('assistant');
    expect(text).toBe(expected);
    expect(g?.route).toHaveLength(2);
  });

  it('chat on a byte-level model uses the plain fallback template', async () => {
    const promptIds = byteTokenizer.encode('user: hi there\nassistant:');
    const expected = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 6)));
    const done = await openai.chat.completions.create({ model: 'tiny-gpt', messages: [{ role: 'user', content: 'hi there' }], max_tokens: 6, temperature: 0 });
    expect(done.choices[0].message.content).toBe(expected);
    expect(done.system_fingerprint).toBe('gridpipe-synthetic');
  });

  it('stop strings end the text before them, also when split over tokens, streamed or not', async () => {
    const promptIds = byteTokenizer.encode(PROMPT);
    const full = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 16)));
    // A 3-character stop string from the middle of the greedy text spans three byte tokens.
    const stop = [...full].slice(5, 8).join('');
    const expected = full.slice(0, full.indexOf(stop));
    const done = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 16, temperature: 0, stop });
    expect(done.choices[0].text).toBe(expected);
    expect(done.choices[0].finish_reason).toBe('stop');
    const stream = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 16, temperature: 0, stop: [stop, 'never-there'], stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) { text += chunk.choices[0]?.text ?? ''; finish = chunk.choices[0]?.finish_reason ?? finish; }
    expect(text).toBe(expected);
    expect(finish).toBe('stop');
  });

  it('temperature, top_p and seed sample exactly as the local run with the same seed', async () => {
    const promptIds = byteTokenizer.encode(PROMPT);
    const sampling = { temperature: 0.9, topP: 0.8, seed: 4242 };
    const expected = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 10, sampling)));
    const greedy = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 10)));
    const a = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 10, temperature: 0.9, top_p: 0.8, seed: 4242 });
    expect(a.choices[0].text).toBe(expected);
    expect(expected).not.toBe(greedy);
  });

  it('/v1/infer runs the cnn split over two suppliers and returns the local run\'s tensors (JSON and binary)', async () => {
    const pixels = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
    const session = await ort.InferenceSession.create(models.cnn.file);
    const local = (await session.run({ pixel_values: new ort.Tensor('float32', pixels, [2, 3, 16, 16]) })).logits;
    await session.release();
    const localValues = Array.from(local.data as Float32Array);

    const json = await post('/v1/infer', { model: 'tiny-cnn', inputs: { pixel_values: { dtype: 'float32', dims: [2, 3, 16, 16], data: Array.from(pixels) } } });
    expect(json.status, JSON.stringify(json.body)).toBe(200);
    const out = (json.body.outputs as Record<string, { dtype: string; dims: number[]; data: number[] }>).logits;
    expect(out.dims).toEqual([2, 10]);
    expect(out.dtype).toBe('float32');
    out.data.forEach((v, i) => expect(v).toBeCloseTo(localValues[i], 5));
    expectTwoHopRoute(json.body.gridpipe as RouteField, 1);

    const res = await fetch(`${url}/v1/infer?model=tiny-cnn`, {
      method: 'POST', headers: { 'content-type': TENSORS_MEDIA_TYPE, accept: TENSORS_MEDIA_TYPE, authorization: `Bearer ${KEY}` },
      body: tensorsToFrames({ pixel_values: new ort.Tensor('float32', pixels, [2, 3, 16, 16]) }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(TENSORS_MEDIA_TYPE);
    expect(JSON.parse(res.headers.get('x-gridpipe-route')!).route).toHaveLength(2);
    const binary = tensorsFromFrames(new Uint8Array(await res.arrayBuffer()));
    expect(binary.logits.dims).toEqual([2, 10]);
    Array.from(binary.logits.data as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(localValues[i], 5));

    const viaClient = await new GridpipeClient({ baseUrl: url, apiKey: KEY }).infer('tiny-cnn', { pixel_values: { dtype: 'float32', dims: [2, 3, 16, 16], data: pixels } });
    Array.from(viaClient.outputs.logits.data as ArrayLike<number>).forEach((v, i) => expect(v).toBeCloseTo(localValues[i], 5));
  });

  it('every bad request is a 4xx in OpenAI\'s shape, and the gateway keeps serving', async () => {
    const ok = { model: 'tiny-gpt', prompt: PROMPT, max_tokens: 2, temperature: 0 };
    expectOpenAIError(await post('/v1/completions', '{"model": "tiny-gpt", "prompt": '), 400);
    expectOpenAIError(await post('/v1/chat/completions', '[1, 2]'), 400);
    expectOpenAIError(await post('/v1/completions', { ...ok, max_tokens: 'ten' }), 400, 'invalid_type');
    expectOpenAIError(await post('/v1/completions', { ...ok, temperature: 'hot' }), 400, 'invalid_type');
    expectOpenAIError(await post('/v1/completions', { ...ok, temperature: 7 }), 400);
    expectOpenAIError(await post('/v1/completions', { ...ok, prompt: 42 }), 400);
    expectOpenAIError(await post('/v1/completions', { ...ok, stop: [1] }), 400);
    expectOpenAIError(await post('/v1/chat/completions', { model: 'tiny-gpt', messages: 'hi' }), 400);
    expectOpenAIError(await post('/v1/chat/completions', { model: 'tiny-gpt', messages: [{ role: 'wizard', content: 'x' }] }), 400);
    expectOpenAIError(await post('/v1/completions', { ...ok, n: 2 }), 400, 'unsupported_value');
    expectOpenAIError(await post('/v1/completions', { ...ok, model: 'no-such-model' }), 404, 'model_not_found');
    expectOpenAIError(await post('/v1/completions', { ...ok, max_tokens: CONTEXT }), 400, 'context_length_exceeded');
    // An id beyond the vocabulary is refused before it reaches a supplier (onnxruntime would fail there, which
    // looked like a broken server: both hosts of fragment 0 were banned and the requests below got 503).
    expectOpenAIError(await post('/v1/completions', { ...ok, prompt: [1, 2, 1_000_000] }), 400, 'invalid_value');
    expectOpenAIError(await post('/v1/completions', { ...ok, model: 'tiny-cnn' }), 400);
    expectOpenAIError(await post('/v1/completions', ok, {}), 401, 'missing_api_key');
    expectOpenAIError(await post('/v1/completions', ok, { authorization: 'Bearer gp-not-a-key-at-all' }), 401, 'invalid_api_key');
    expectOpenAIError(await post('/v1/infer', { model: 'tiny-cnn', inputs: { pixel_values: { dtype: 'float32', dims: [1, 3, 8, 8], data: Array(192).fill(0) } } }), 400);
    expectOpenAIError(await post('/v1/infer', { model: 'tiny-cnn', inputs: { image: { dtype: 'float32', dims: [1], data: [0] } } }), 400);
    const garbage = await fetch(`${url}/v1/infer?model=tiny-cnn`, { method: 'POST', headers: { 'content-type': TENSORS_MEDIA_TYPE, authorization: `Bearer ${KEY}` }, body: new Uint8Array([0, 0, 0, 9, 1, 2]) });
    expect(garbage.status).toBe(400);

    // Rate: two requests a minute for this key, then 429 with Retry-After.
    for (let i = 0; i < 2; i++) expect((await post('/v1/completions', ok, { authorization: `Bearer ${RATE_KEY}` })).status).toBe(200);
    const limited = await post('/v1/completions', ok, { authorization: `Bearer ${RATE_KEY}` });
    expectOpenAIError(limited, 429, 'rate_limit_exceeded');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);

    // Budget: 1 base unit; the request may cost more (suppliers advertise 1000 per GFLOP): refused up front, nothing run.
    const refused = await post('/v1/completions', ok, { authorization: `Bearer ${BUDGET_KEY}` });
    expectOpenAIError(refused, 402, 'insufficient_quota');
    expect(refused.body.error!.message).toMatch(/may cost up to \d+ base units .* has 1 left of its budget of 1/);

    // The official client maps them to its typed errors.
    await expect(openai.completions.create({ ...ok, model: 'no-such-model' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(new OpenAI({ baseURL: `${url}/v1`, apiKey: 'gp-wrong-key-0000', maxRetries: 0 }).models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    const after = await openai.completions.create(ok);
    expect(after.choices[0].text.length).toBeGreaterThan(0);
  });

  it('/metrics counts requests by route and status, tokens, and hop timings per peer on the route', async () => {
    const done = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 3, temperature: 0 });
    const route = (done as unknown as { gridpipe: RouteField }).gridpipe.route;
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).toMatch(/gridpipe_gateway_requests_total\{route="\/v1\/completions",status="200"\} \d+/);
    expect(text).toMatch(/gridpipe_gateway_requests_total\{route="\/v1\/completions",status="400"\} \d+/);
    expect(text).toMatch(/gridpipe_gateway_tokens_total\{model="tiny-gpt",kind="completion"\} \d+/);
    for (const r of route) expect(text).toContain(`gridpipe_gateway_hop_seconds_count{peer="${r.peerId}"}`);
    expect(text).toMatch(/gridpipe_gateway_request_seconds_bucket/);
    // Keys by a short id (the first 8 hex digits of the secret's SHA-256), never by name.
    expect(text).toMatch(/gridpipe_gateway_cost_base_units_total\{model="tiny-gpt",key="[0-9a-f]{8}"\} \d+/);
    expect(text).not.toContain('key="main"');
  });

  it('the live feed streams request events with route, tokens and cost', async () => {
    const controller = new AbortController();
    const res = await fetch(`${url}/v1/feed?replay=false`, { signal: controller.signal });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const done = await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 3, temperature: 0 });
    let buffer = '';
    let finished: Record<string, unknown> | undefined;
    while (!finished) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += value;
      for (const event of buffer.split('\n\n')) {
        const data = event.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        const parsed = JSON.parse(data.slice(6));
        if (parsed.event === 'request.finished' && parsed.requestId === done.id) finished = parsed;
      }
    }
    controller.abort();
    expect(finished).toMatchObject({ model: 'tiny-gpt', status: 200, usage: { completionTokens: 3 } });
    expect(finished).not.toHaveProperty('key'); // the feed is public: no key names
    expect((finished!.route as unknown[]).length).toBe(2);
    expect(BigInt(finished!.cost as string)).toBeGreaterThan(0n);
  });

  it('the TypeScript client and `gridpipe call` stream the same completion', async () => {
    const promptIds = byteTokenizer.encode(PROMPT);
    const expected = byteTokenizer.decode(await localIds(models.gpt, textOptions(models.gpt, promptIds, 8)));
    const client = new GridpipeClient({ baseUrl: `${url}/v1`, apiKey: KEY });
    expect((await client.models()).map((m) => m.id).sort()).toEqual(['tiny-chat', 'tiny-cnn', 'tiny-gpt']);
    const whole = await client.complete({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 8, temperature: 0 });
    expect(whole.text).toBe(expected);
    let streamed = '';
    let last;
    for await (const chunk of client.stream({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 8, temperature: 0 })) { streamed += chunk.text; last = chunk; }
    expect(streamed).toBe(expected);
    expect(last?.gridpipe?.route).toHaveLength(2);
    expect(last?.usage?.completion_tokens).toBe(8);

    const cli = await runCli(['call', '--model', 'tiny-gpt', '--url', url, '--key', KEY, '--temperature', '0', '--max-tokens', '8', PROMPT]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toBe(`${expected}\n`);
    expect(cli.stderr).toMatch(/route: .+ → .+/);
    const refused = await runCli(['call', '--model', 'tiny-gpt', '--url', url, '--key', 'gp-bad-key-000000', PROMPT]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/401/);
  });

  it('a client that leaves mid-stream ends the generation: the suppliers close its sessions', async () => {
    const openSessions = async (): Promise<number> => {
      let total = 0;
      for (const sup of suppliers) {
        const text = await (await fetch(new URL('/metrics', sup.admin))).text();
        total += Number(/^gridpipe_exec_sessions_open (\d+)/m.exec(text)?.[1] ?? 0);
      }
      return total;
    };
    await waitFor(async () => (await openSessions()) === 0, 'no open sessions before the test', 30_000, 200);
    const controller = new AbortController();
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST', signal: controller.signal, headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: CONTEXT - PROMPT.length, temperature: 0, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    expect(await openSessions()).toBe(2);
    controller.abort();
    // Closed sessions, not ones that idle out: the supplier's idle TTL is far longer than this wait.
    await waitFor(async () => (await openSessions()) === 0, 'the left stream\'s sessions to close', 30_000, 200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^gridpipe_gateway_requests_inflight 0$/m);
    expect((await openai.completions.create({ model: 'tiny-gpt', prompt: PROMPT, max_tokens: 2, temperature: 0 })).choices[0].text.length).toBeGreaterThan(0);
  });

  it('with every host of a fragment gone: 503 naming the fragment; then SIGTERM stops the gateway cleanly', async () => {
    for (const s of suppliers.filter((x) => x.fragments === '1')) expect(await s.proc.stop('SIGTERM')).toBe(0);
    const r = await post('/v1/completions', { model: 'tiny-gpt', prompt: PROMPT, max_tokens: 2, temperature: 0 });
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.error!.message).toMatch(/fragment 1/);
    expect(r.body.error!.type).toBe('service_unavailable');
    const health = await (await fetch(`${url}/healthz`)).json() as { ok: boolean };
    expect(health.ok).toBe(true);
    expect(await gateway.stop('SIGTERM')).toBe(0);
  });
});
