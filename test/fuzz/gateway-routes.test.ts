/**
 * Issue 21, the HTTP API fuzzer: a real `gridpipe gateway` process (fastify, API keys) in front of a real
 * `gridpipe supply` process serving a tiny chat model with the test tokenizer (../gateway/fixtures.ts). Every
 * route gets fast-check inputs: valid bodies, the same with fields replaced by any JSON value, deleted or
 * added, the JSON text mutated byte by byte, wrong content types and keys, binary tensor frames mutated,
 * random ids and paths. Each answer must be a success or a 4xx in OpenAI's error shape with a message that
 * says what was wrong (never a 5xx), honest completions run in parallel must keep their exact text, and the
 * gateway's memory must stay bounded: its live heap after a full collection (the gateway runs with --expose-gc,
 * gateway/heap-probe.ts) may not grow by more than a few MiB, whatever the number of requests (RSS is logged and
 * loosely bounded too, but it also holds what the allocator keeps after a peak). The normal run sends a bounded
 * count per route; `npm run fuzz` 10,000.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWriteStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import ort from 'onnxruntime-node';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { TENSORS_MEDIA_TYPE, tensorsToFrames } from '../../gateway/tensors.js';
import { rssBytes, startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer } from '../gateway/fixtures.js';
import { FUZZ_RUNS, LONG_RUN, fuzzParameters, hostileBytes, reportFuzz } from './harness.js';

const tmp = tempDir('gridpipe-fuzz-http-');
const KEY = 'gp-fuzz-main-key-0021';
const CONTEXT = 64;
const MB = 1024 * 1024;
const TIMEOUT = LONG_RUN ? 7_200_000 : 300_000;
/** Requests per route in the normal run (each valid one generates tokens). */
const ROUTE_RUNS = LONG_RUN ? FUZZ_RUNS : Math.min(FUZZ_RUNS, 150);
/** Gateway memory a whole run may add after its warm-up. */
const RSS_GROWTH_LIMIT = 128 * MB;
/**
 * Live heap (after a full collection) a whole run may add after its warm-up, whatever its length: the first
 * thousands of requests add about 5 MiB (compiled code, caches), then it stays flat; a leak of 300 bytes per
 * request would pass the bound within the long run's 40,000 requests.
 */
const HEAP_GROWTH_LIMIT = 12 * MB;
/** The heap is also read every this many requests (the long run's growth curve). */
const HEAP_CHECKPOINT = 2500;

const suppliers: RunningProcess[] = [];
let gateway: RunningProcess;
let url: string;
let modelId: string;

interface Answer { status: number; body: string; contentType: string }

/** One request; the whole answer read (an event stream too: the gateway ends it after the last token). */
async function request(method: string, pathname: string, body?: string | Uint8Array, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${url}${pathname}`, { method, headers, body: body as string | undefined, signal: AbortSignal.timeout(120_000) });
  return { status: res.status, body: await res.text(), contentType: res.headers.get('content-type') ?? '' };
}

/** A success, or a 4xx in OpenAI's error shape whose message says something; never a 5xx. */
function expectClearAnswer(a: Answer, what: string): 'ok' | number {
  const shown = `${what} → ${a.status} ${a.body.slice(0, 300)}`;
  expect(a.status, shown).toBeLessThan(500);
  if (a.status < 300) {
    expect(a.body, shown).not.toMatch(/"type":"server_error"|internal error/);
    return 'ok';
  }
  expect(a.status, shown).toBeGreaterThanOrEqual(400);
  const parsed = JSON.parse(a.body) as { error?: { message?: unknown; type?: unknown } };
  expect(typeof parsed.error?.message, shown).toBe('string');
  expect((parsed.error!.message as string).length, shown).toBeGreaterThan(8);
  expect(typeof parsed.error?.type, shown).toBe('string');
  return a.status;
}

const auth = { authorization: `Bearer ${KEY}` };
const jsonHeaders = { ...auth, 'content-type': 'application/json' };

/** A JSON body: valid, with a field replaced, deleted or added, or replaced whole. */
function hostileJson(valid: fc.Arbitrary<Record<string, unknown>>, fields: readonly string[]): fc.Arbitrary<string> {
  const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53, 1.5, '', 'x'.repeat(5000), null, true, [], {}));
  const edited = fc.tuple(valid, fc.constantFrom(...fields, 'unknown_field', '__proto__', 'constructor'), anyValue, fc.constantFrom('set', 'delete'))
    .map(([body, field, value, how]) => {
      const copy: Record<string, unknown> = { ...body };
      if (how === 'delete') delete copy[field];
      else copy[field] = value;
      return JSON.stringify(copy);
    });
  const text = valid.map((b) => new TextEncoder().encode(JSON.stringify(b)));
  return fc.oneof(
    { arbitrary: valid.map((b) => JSON.stringify(b)), weight: 1 },
    { arbitrary: edited, weight: 4 },
    { arbitrary: hostileBytes(text).map((b) => Buffer.from(b).toString('latin1')), weight: 2 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), weight: 1 },
  );
}

const contentTypes = fc.constantFrom('application/json', 'application/json', 'application/json', 'text/plain', 'application/x-www-form-urlencoded', TENSORS_MEDIA_TYPE, 'application/json; charset=latin1');
const keys = fc.oneof({ arbitrary: fc.constant(`Bearer ${KEY}`), weight: 8 }, { arbitrary: fc.constantFrom('', 'Bearer', `Basic ${KEY}`, `Bearer ${KEY}x`, 'Bearer gp-nope'), weight: 1 }, { arbitrary: fc.string({ maxLength: 40 }), weight: 1 });

function completionBody(): fc.Arbitrary<Record<string, unknown>> {
  return fc.record({
    model: fc.constant(modelId), prompt: fc.string({ maxLength: 24 }), max_tokens: fc.integer({ min: 1, max: 4 }),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }), top_p: fc.double({ min: 0.05, max: 1, noNaN: true }), seed: fc.nat(),
    stream: fc.boolean(), stop: fc.option(fc.string({ maxLength: 4 }), { nil: undefined }),
  }, { requiredKeys: ['model', 'prompt', 'max_tokens'] });
}

function chatBody(): fc.Arbitrary<Record<string, unknown>> {
  return fc.record({
    model: fc.constant(modelId),
    messages: fc.array(fc.record({ role: fc.constantFrom('system', 'user', 'assistant', 'developer'), content: fc.string({ maxLength: 24 }) }), { minLength: 1, maxLength: 3 }),
    max_completion_tokens: fc.integer({ min: 1, max: 4 }), temperature: fc.double({ min: 0, max: 2, noNaN: true }), stream: fc.boolean(), top_k: fc.integer({ min: 1, max: 40 }),
  }, { requiredKeys: ['model', 'messages', 'max_completion_tokens'] });
}

const COMPLETION_FIELDS = ['model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'n', 'user', 'logit_bias', 'echo'];
const CHAT_FIELDS = ['model', 'messages', 'max_completion_tokens', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'n', 'tools', 'response_format'];

/** Honest completions in a loop while a route is fuzzed: each must give `reference`'s text. */
function honestTraffic(reference: string): { stop: () => Promise<number> } {
  let running = true;
  let n = 0;
  const loop = (async () => {
    while (running) {
      expect(await honestCompletion()).toBe(reference);
      n++;
    }
  })();
  return { stop: async () => { running = false; await loop; return n; } };
}

async function honestCompletion(): Promise<string> {
  const a = await request('POST', '/v1/completions', JSON.stringify({ model: modelId, prompt: 'Hello grid, ', max_tokens: 6, temperature: 0 }), jsonHeaders);
  if (a.status !== 200) await reportHonestFailure(a);
  expect(a.status, a.body).toBe(200);
  return (JSON.parse(a.body) as { choices: { text: string }[] }).choices[0].text;
}

/** Fuzzes one route with honest traffic alongside; logs and returns the statuses seen. */
async function fuzzRoute<T>(name: string, inputs: fc.Arbitrary<T>, send: (input: T) => Promise<Answer>, runs = ROUTE_RUNS): Promise<Map<string, number>> {
  const reference = await honestCompletion();
  const curveFrom = Math.max(0, heapLog.length - 1); // the heap when the route starts: the last reading before it
  const traffic = honestTraffic(reference);
  const statuses = new Map<string, number>();
  let honest: number;
  try {
    await fc.assert(fc.asyncProperty(inputs, async (input) => {
      requestsSent++;
      const outcome = String(expectClearAnswer(await send(input), `${name} ${JSON.stringify(input).slice(0, 200)}`));
      if (requestsSent % HEAP_CHECKPOINT === 0) await logHeap();
      statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1);
    }), fuzzParameters(runs));
  } finally {
    honest = await traffic.stop();
  }
  console.log(`fuzz ${name}: ${[...statuses].map(([k, v]) => `${k} ${v}`).join(', ')}; ${honest} honest completions in parallel`);
  expect(honest).toBeGreaterThan(0);
  await logHeap();
  reportFuzz({
    target: `route: ${name}`, inputs: [...statuses.values()].reduce((a, b) => a + b, 0), outcomes: Object.fromEntries(statuses), honest,
    heapCurve: heapLog.slice(curveFrom).map((h) => [h.requests, h.heapMiB]),
  });
  return statuses;
}

/** Writes what the gateway's metrics said when honest traffic failed to the run's report (a long run's diagnostics). */
async function reportHonestFailure(a: Answer): Promise<void> {
  const metrics = await request('GET', '/metrics').then((m) => m.body, (err: unknown) => `unreadable: ${(err as Error).message}`);
  const said = metrics.split('\n').filter((l) => /^gridpipe_(capacity|peer|swarm|dht|route|pipeline_fail|grid)/.test(l) || /^libp2p_(connection|dialler|kad)/.test(l)).join('\n');
  reportFuzz({ target: 'honest traffic', inputs: requestsSent, outcomes: { [String(a.status)]: 1 }, failure: `${a.status} ${a.body.slice(0, 300)} after ${Math.round((Date.now() - startedAt) / 1000)} s\n${said}` });
}

/** Each process's stderr (warn lines and above) appended to GRIDPIPE_FUZZ_LOGS/<name>.log when set (a long run's diagnostics). */
function keepLog(name: string, proc: RunningProcess): void {
  const dir = process.env.GRIDPIPE_FUZZ_LOGS;
  if (dir) proc.child.stderr?.pipe(createWriteStream(path.join(dir, `${name}.log`), { flags: 'a' }));
}

let startedAt = Date.now();
let rssAtStart = 0;
let heapAtStart = 0;
/** Requests sent so far and the gateway's heap after a collection then, route by route (printed at the end). */
const heapLog: { requests: number; heapMiB: number; rssMiB: number }[] = [];
let requestsSent = 0;

/** The gateway's live heap after two full collections (gridpipe_heap_after_gc_bytes on its loopback /metrics). */
async function heapAfterGc(): Promise<number> {
  const text = (await request('GET', '/metrics')).body;
  const line = text.split('\n').find((l) => l.startsWith('gridpipe_heap_after_gc_bytes '));
  if (!line) throw new Error('the gateway does not report gridpipe_heap_after_gc_bytes: is it running with --expose-gc?');
  return Number(line.split(' ')[1]);
}

async function logHeap(): Promise<void> {
  heapLog.push({ requests: requestsSent, heapMiB: Math.round((await heapAfterGc()) / MB * 10) / 10, rssMiB: Math.round(rssBytes(gateway.child.pid!) / MB * 10) / 10 });
}

beforeAll(async () => {
  const tok = writeTestTokenizer(path.join(tmp.dir, 'hf-tokenizer'));
  const file = path.join(tmp.dir, 'chat.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: tok.vocabSize, maxPositions: CONTEXT, kvCache: true, seed: 73, name: 'fuzz-chat' }), file);
  const dir = path.join(tmp.dir, 'chat-fragments');
  await fragmentModel(file, dir, { parts: 1, tokenizer: tok.tokenizerFile });
  // Two suppliers of the same fragment: the DHT needs a peer to store capacity records on.
  const supply = (name: string, bootstrap: string[]): RunningProcess => startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', dir, '--fragments', '0', '--threads', '1', '--json', ...bootstrap]);
  suppliers.push(supply('s0', []));
  const ready = (await suppliers[0].ready) as { addresses: string[] };
  suppliers.push(supply('s1', ['--bootstrap', ready.addresses[0]]));
  await suppliers[1].ready;
  suppliers.forEach((s, i) => keepLog(`s${i}`, s));
  const keysFile = path.join(tmp.dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: { [KEY]: { name: 'fuzz' } } }), { mode: 0o600 });
  gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', ready.addresses[0], '--keys', keysFile, '--model', dir, '--data', path.join(tmp.dir, 'gw'), '--json'], { NODE_OPTIONS: '--expose-gc' });
  url = ((await gateway.ready) as { url: string }).url;
  keepLog('gateway', gateway);
  startedAt = Date.now();
  await waitFor(async () => {
    const a = await request('GET', '/v1/models', undefined, auth);
    const data = (JSON.parse(a.body) as { data?: { id: string }[] }).data ?? [];
    if (data.length) modelId = data[0].id;
    return data.length > 0;
  }, 'the model is servable', 60_000, 300);
  for (let i = 0; i < 5; i++) await honestCompletion(); // warm-up before the memory baseline
  rssAtStart = rssBytes(gateway.child.pid!);
  heapAtStart = await heapAfterGc();
  await logHeap();
}, 180_000);

afterAll(async () => {
  await gateway?.stop('SIGTERM');
  await Promise.all(suppliers.map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('every HTTP route of the gateway, fuzzed', () => {
  it('POST /v1/completions', async () => {
    await fuzzRoute('POST /v1/completions', fc.tuple(hostileJson(completionBody(), COMPLETION_FIELDS), contentTypes, keys),
      ([body, type, key]) => request('POST', '/v1/completions', body, { authorization: key, 'content-type': type }));
  }, TIMEOUT);

  it('POST /v1/chat/completions', async () => {
    await fuzzRoute('POST /v1/chat/completions', fc.tuple(hostileJson(chatBody(), CHAT_FIELDS), contentTypes, keys),
      ([body, type, key]) => request('POST', '/v1/chat/completions', body, { authorization: key, 'content-type': type }));
  }, TIMEOUT);

  it('POST /v1/infer, JSON and binary tensors', async () => {
    const ids = fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 6 });
    const jsonInfer = ids.map((t) => ({
      model: modelId,
      inputs: {
        input_ids: { dtype: 'int64', dims: [1, t.length], data: t },
        attention_mask: { dtype: 'int64', dims: [1, t.length], data: t.map(() => 1) },
        position_ids: { dtype: 'int64', dims: [1, t.length], data: t.map((_, i) => i) },
      },
    }) as Record<string, unknown>);
    const binary = ids.map((t) => new Uint8Array(tensorsToFrames({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(t.map(BigInt)), [1, t.length]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from(t.map(() => 1n)), [1, t.length]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(t.map((_, i) => BigInt(i))), [1, t.length]),
    })));
    const inputs = fc.oneof(
      fc.tuple(hostileJson(jsonInfer, ['model', 'inputs']), fc.constant('application/json'), keys).map(([body, type, key]) => ({ body: body as string | Uint8Array, type, key, query: '' })),
      fc.tuple(hostileBytes(binary), fc.constantFrom(TENSORS_MEDIA_TYPE, 'application/octet-stream'), keys, fc.constantFrom(`?model=${encodeURIComponent(modelId)}`, '', '?model=', '?model=nope'))
        .map(([body, type, key, query]) => ({ body: body as string | Uint8Array, type, key, query })),
    );
    await fuzzRoute('POST /v1/infer', inputs, ({ body, type, key, query }) => request('POST', `/v1/infer${query}`, body, { authorization: key, 'content-type': type }));
  }, TIMEOUT);

  it('GET /v1/models, /v1/models/:id, /healthz, /metrics, /v1/feed and unknown routes', async () => {
    const anyPath = fc.oneof(
      fc.constantFrom('/v1/models', '/healthz', '/metrics', '/v1/feed?replay=false'),
      fc.oneof(fc.constant(modelId), fc.string({ maxLength: 60 }), fc.webSegment()).map((id) => `/v1/models/${encodeURIComponent(id)}`),
      fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)),
      fc.tuple(fc.constantFrom('/v1/', '/v1/models/', '/explorer/', '/'), fc.webSegment(), fc.webQueryParameters()).map(([a, b, q]) => `${a}${b}?${q}`),
    );
    const methods = fc.constantFrom('GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS');
    await fuzzRoute('GET routes', fc.tuple(anyPath, methods, keys), async ([p, method, key]) => {
      if (p.startsWith('/v1/feed') && method === 'GET') {
        // an event stream that never ends: its status and type are the answer
        const controller = new AbortController();
        const res = await fetch(`${url}${p}`, { headers: { authorization: key }, signal: controller.signal });
        controller.abort();
        return { status: res.status, body: '', contentType: res.headers.get('content-type') ?? '' };
      }
      return request(method, p, method === 'GET' ? undefined : '{}', { authorization: key, 'content-type': 'application/json' });
    });
  }, TIMEOUT);

  it('the gateway\'s live heap after a collection stays bounded over the whole run (and its RSS loosely)', async () => {
    const heapGrowth = await heapAfterGc() - heapAtStart;
    const growth = rssBytes(gateway.child.pid!) - rssAtStart;
    console.log(`fuzz gateway: heap after GC grew ${(heapGrowth / MB).toFixed(2)} MiB, RSS ${(growth / MB).toFixed(1)} MiB over ${requestsSent} requests; by route: ${JSON.stringify(heapLog)}`);
    reportFuzz({ target: 'gateway heap, whole run', inputs: requestsSent, outcomes: {}, heapGrowthMiB: Math.round(heapGrowth / MB * 100) / 100, rssGrowthMiB: Math.round(growth / MB * 10) / 10, heapCurve: heapLog.map((h) => [h.requests, h.heapMiB]) });
    expect(heapGrowth).toBeLessThan(HEAP_GROWTH_LIMIT);
    expect(growth).toBeLessThan(RSS_GROWTH_LIMIT);
  });
});
