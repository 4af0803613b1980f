/**
 * The trained demo model (models/demo/target) served by the grid as a user hands it over: the export folder
 * fragmented with its tokenizer and generation config, two supplier processes each holding both fragments,
 * and a gateway. Asserts on real text: the greedy completion of a fixed prompt is the golden text checked in
 * (test/fixtures/kjv-demo-golden.json) and the local run's; seeded sampling through the grid equals the local
 * run, also with the publisher's defaults (generation_config.json); the end-of-text token stops generation;
 * SIGKILL of the supplier on the route mid-generation yields the same text; unimplemented request parameters
 * get a 400 naming them; `gridpipe generate --prompt` prints the local run's text.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { checkTokenizerFiles } from '../../gateway/tokenizers/check.js';
import { hfTextTokenizer, type TextTokenizer } from '../../gateway/tokenizers/index.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import type { SamplingOptions } from '../../policy/sampling.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { REPO_ROOT, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';

const tmp = tempDir('gridpipe-demo-grid-');
const DEMO = path.join(REPO_ROOT, 'models', 'demo', 'target');
const GOLDEN = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'kjv-demo-golden.json'), 'utf8')) as { prompt: string; max_tokens: number; text: string };
const NAME = 'kjv-demo';

let manifest: Manifest;
let fragDir: string;
let tokenizer: TextTokenizer;
let url: string;
let client: GridClient;
let model: OpenModel;
let bootstrap: string;
const suppliers = new Map<string, RunningProcess>();
const procs: RunningProcess[] = [];

async function startSupplier(name: string, host: string, extra: string[] = []): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', host, '--fragments', '0,1', '--admin-port', '0', '--json', ...extra]);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  suppliers.set(ready.peerId, proc);
  return ready.addresses[0];
}

function options(prompt: string, maxTokens: number, sampling: SamplingOptions): GenerateOptions {
  return {
    ...sampling, promptIds: tokenizer.encode(prompt, true), maxTokens, kvCache: true, stopTokens: manifest.generation?.eosTokenIds,
    inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
  };
}

/** The whole model in one local onnxruntime session: ids generated (the stop id included) and their text. */
async function local(prompt: string, maxTokens: number, sampling: SamplingOptions): Promise<{ ids: number[]; text: string }> {
  const runner = await LocalModelRunner.open(path.join(DEMO, 'model.onnx'), manifest.statefulPairs);
  const ids: number[] = [];
  try {
    for await (const t of generate(runner, options(prompt, maxTokens, sampling))) ids.push(t.id);
  } finally {
    await runner.close();
  }
  return { ids, text: tokenizer.decode(ids) };
}

interface Completion {
  choices: { text: string; finish_reason: string }[];
  usage: { completion_tokens: number };
  system_fingerprint: string;
  error: { message: string; param: string };
}

async function complete(body: Record<string, unknown>): Promise<{ status: number; json: Completion }> {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: NAME, ...body }) });
  return { status: res.status, json: await res.json() as Completion };
}

beforeAll(async () => {
  fragDir = path.join(tmp.dir, 'frag');
  let manifestCid: string;
  ({ manifest, manifestCid } = await fragmentModel(DEMO, fragDir, { parts: 2, checkTokenizer: checkTokenizerFiles }));
  tokenizer = hfTextTokenizer(JSON.parse(readFileSync(path.join(DEMO, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(path.join(DEMO, 'tokenizer_config.json'), 'utf8')));
  bootstrap = await startSupplier('a', fragDir);
  await startSupplier('b', manifestCid, ['--bootstrap', bootstrap]);
  const gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', bootstrap, '--model', fragDir, '--data', path.join(tmp.dir, 'gw'), '--json']);
  procs.push(gateway);
  url = ((await gateway.ready) as { url: string }).url;
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 } });
  model = await client.openModel(fragDir);
  await waitFor(async () => model.discovery.current.length === 2 || (await model.discovery.refresh()).length === 2, 'both suppliers in the swarm view', 30_000, 250);
  await waitFor(async () => (await complete({ prompt: 'And', max_tokens: 1 })).status === 200, 'the gateway to serve the model', 60_000, 500);
});

afterAll(async () => {
  await client?.close();
  await Promise.all([...procs, ...suppliers.values()].map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('the trained demo model on the grid', () => {
  it('the greedy completion of a fixed prompt is the golden text, through the gateway and locally', async () => {
    const { status, json } = await complete({ prompt: GOLDEN.prompt, max_tokens: GOLDEN.max_tokens, temperature: 0 });
    expect(status, JSON.stringify(json)).toBe(200);
    expect(json.choices[0].text).toBe(GOLDEN.text);
    expect((await local(GOLDEN.prompt, GOLDEN.max_tokens, { temperature: 0 })).text).toBe(GOLDEN.text);
    expect(json.system_fingerprint).not.toBe('gridpipe-synthetic');
  });

  it('seeded sampling through the grid equals the local run; unset parameters take generation_config.json\'s', async () => {
    const prompt = 'And the LORD spake unto Moses, saying,';
    const given = await complete({ prompt, max_tokens: 32, temperature: 1.1, top_p: 0.9, seed: 7 });
    const expected = await local(prompt, 32, { temperature: 1.1, topP: 0.9, seed: 7 });
    expect(given.json.choices[0].text).toBe(expected.text);
    // No temperature or top_p in the request: the publisher's 0.8 and 0.95 apply.
    const defaulted = await complete({ prompt, max_tokens: 32, seed: 7 });
    const withDefaults = await local(prompt, 32, { temperature: 0.8, topP: 0.95, seed: 7 });
    expect(defaulted.json.choices[0].text).toBe(withDefaults.text);
    expect(withDefaults.text).not.toBe(expected.text);
  });

  it('the end-of-text token ends the completion (finish_reason "stop"), as in the local run', async () => {
    // The last verse of the Bible; with these defaults and seed the model ends the chapter within 48 tokens.
    const prompt = 'The grace of our Lord Jesus Christ be with you all. Amen.\n';
    const expected = await local(prompt, 48, { temperature: 0.8, topP: 0.95, seed: 9 });
    expect(expected.ids.at(-1)).toBe(0);
    expect(expected.ids.length).toBeLessThan(48);
    const { json } = await complete({ prompt, max_tokens: 48, seed: 9 });
    expect(json.choices[0].finish_reason).toBe('stop');
    expect(json.choices[0].text).toBe(expected.text);
    expect(json.usage.completion_tokens).toBe(expected.ids.length);
  });

  it('refuses request parameters it does not implement with a 400 naming them; /v1/models lists what it supports', async () => {
    const ok = { prompt: 'And', max_tokens: 2 };
    const refused: [string, Record<string, unknown>][] = [
      ['response_format', { response_format: { type: 'json_object' } }], ['tool_choice', { tool_choice: 'auto' }],
      ['tools', { tools: [{ type: 'function', function: { name: 'f' } }] }], ['logprobs', { logprobs: 2 }],
      ['presence_penalty', { presence_penalty: 0.5 }], ['frequency_penalty', { frequency_penalty: 1 }], ['repetition_penalty', { repetition_penalty: 1.2 }],
      ['min_p', { min_p: 0.1 }],
    ];
    for (const [name, extra] of refused) {
      const { status, json } = await complete({ ...ok, ...extra });
      expect(status, name).toBe(400);
      expect(json.error.param, name).toBe(name);
      expect(json.error.message, name).toContain(`"${name}" is not supported`);
    }
    const chat = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: NAME, messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'json_schema', json_schema: {} } }),
    });
    expect(chat.status).toBe(400);
    expect(((await chat.json()) as { error: { param: string } }).error.param).toBe('response_format');
    const n = await complete({ ...ok, n: 2 });
    expect([n.status, n.json.error.param]).toEqual([400, 'n']);
    // Neutral values are accepted (clients often send them).
    expect((await complete({ ...ok, presence_penalty: 0, logit_bias: {}, echo: false })).status).toBe(200);

    type Listed = { id: string; supported_parameters: Record<string, string[]>; generation_defaults: unknown; gridpipe: { synthetic: boolean } };
    const models = await (await fetch(`${url}/v1/models`)).json() as { data: Listed[] };
    const listed = models.data.find((m) => m.id === NAME)!;
    expect(listed.supported_parameters.completions).toEqual(expect.arrayContaining(['prompt', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'stream']));
    expect(listed.supported_parameters.chat).toContain('messages');
    expect(listed.supported_parameters.chat).not.toContain('response_format');
    expect(listed.generation_defaults).toEqual({ eosTokenIds: [0], temperature: 0.8, topP: 0.95 });
    expect(listed.gridpipe.synthetic).toBe(false);
  });

  it('`gridpipe generate --prompt` with the BPE tokenizer prints the local run\'s text', async () => {
    const r = await runCli(['generate', '--manifest', fragDir, '--bootstrap', bootstrap, '--prompt', GOLDEN.prompt, '--max-tokens', String(GOLDEN.max_tokens)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(GOLDEN.text.trim());
  });

  it('SIGKILL of the supplier on the route mid-generation yields the same text', async () => {
    const prompt = 'And it came to pass';
    const sampling = { temperature: 0.9, topP: 0.95, seed: 3 };
    const expected = await local(prompt, 40, sampling);
    const session = client.session(model, 80);
    const ids: number[] = [];
    let killed = '';
    try {
      for await (const t of generate(session, options(prompt, 40, sampling))) {
        ids.push(t.id);
        if (ids.length === 10) {
          killed = session.route[0].peerId;
          suppliers.get(killed)!.child.kill('SIGKILL');
          await suppliers.get(killed)!.exited;
        }
      }
    } finally {
      await session.close();
    }
    expect(killed).not.toBe('');
    expect(session.failovers).toBeGreaterThanOrEqual(1);
    expect(session.route.map((r) => r.peerId)).not.toContain(killed);
    expect(tokenizer.decode(ids)).toBe(expected.text);
    suppliers.delete(killed);
  });
});
