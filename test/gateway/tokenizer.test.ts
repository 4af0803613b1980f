/**
 * A Hugging Face tokenizer that travels with its model over the grid: supplier A hosts the fragment folder,
 * supplier B hosts the same model fetched by manifest CID, and gateways given only a bootstrap address (no
 * --model folder) fetch tokenizer.json and tokenizer_config.json by CID from the model's hosts. Stored copies
 * that no longer match their CID are never served; with no valid copy anywhere the text endpoints answer 503
 * tokenizer_unavailable, and they recover once a host has the files again.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import OpenAI from 'openai';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { generate } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer, CHATML_TEMPLATE } from './fixtures.js';

const tmp = tempDir('gridpipe-gateway-tok-');
const CONTEXT = 64;
const NAME = 'tok-chat';

let modelFile: string;
let fragDir: string;
let manifest: Manifest;
let manifestCid: string;
let eosId: number;
const procs: RunningProcess[] = [];
let supplierA: string; // A's bootstrap address
const dataA = path.join(tmp.dir, 'a');
const dataB = path.join(tmp.dir, 'b');

function blobPath(dataDir: string, cid: string): string {
  return path.join(dataDir, 'blobs', cid);
}

async function startSupplier(data: string, host: string, bootstrap?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--host', host, '--fragments', '0,1',
    '--price-per-gflop', '1000', '--admin-port', '0', '--json', ...(bootstrap ? ['--bootstrap', bootstrap] : [])]);
  procs.push(proc);
  return ((await proc.ready) as { addresses: string[] }).addresses[0];
}

async function startGateway(name: string): Promise<{ proc: RunningProcess; openai: OpenAI; url: string }> {
  // Only a bootstrap address: the model, its manifest and its tokenizer are all found on the grid.
  const proc = startGridpipe(['gateway', '--port', '0', '--bootstrap', supplierA, '--data', path.join(tmp.dir, name), '--json']);
  procs.push(proc);
  const url = ((await proc.ready) as { url: string }).url;
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  await waitFor(async () => (await openai.models.list()).data.some((m) => m.id === NAME), `${name} to discover ${NAME}`, 60_000, 500);
  return { proc, openai, url };
}

const messages = [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: 'Say the thing.' }];

/** The expected reply: the whole model in one local onnxruntime session, tokenized with the shipped files. */
async function expectedReply(): Promise<string> {
  const tokenizer = new HfTokenizer(JSON.parse(readFileSync(path.join(fragDir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(path.join(fragDir, 'tokenizer_config.json'), 'utf8')));
  const prompt = new Template(CHATML_TEMPLATE).render({ messages, add_generation_prompt: true });
  const promptIds = tokenizer.encode(prompt, { add_special_tokens: false }).ids;
  const runner = await LocalModelRunner.open(modelFile, manifest.statefulPairs);
  const ids: number[] = [];
  try {
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    for await (const t of generate(runner, { promptIds, maxTokens: 10, kvCache: true, maxLength: CONTEXT, inputNames, stopTokens: [eosId], temperature: 1, seed: 11 })) ids.push(t.id);
  } finally {
    await runner.close();
  }
  expect(new Set(ids).size).toBeGreaterThan(3);
  return tokenizer.decode(ids.at(-1) === eosId ? ids.slice(0, -1) : ids, { skip_special_tokens: true });
}

function chat(openai: OpenAI): Promise<OpenAI.Chat.Completions.ChatCompletion> {
  return openai.chat.completions.create({ model: NAME, messages, max_tokens: 10, temperature: 1, seed: 11 });
}

beforeAll(async () => {
  const tok = writeTestTokenizer(path.join(tmp.dir, 'hf'));
  eosId = tok.eosId;
  modelFile = path.join(tmp.dir, 'chat.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: tok.vocabSize, maxPositions: CONTEXT, kvCache: true, seed: 73, name: NAME }), modelFile);
  fragDir = path.join(tmp.dir, 'frag');
  ({ manifest, manifestCid } = await fragmentModel(modelFile, fragDir, { parts: 2, tokenizer: tok.tokenizerFile }));
  supplierA = await startSupplier(dataA, fragDir);
  await startSupplier(dataB, manifestCid, supplierA);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('a Hugging Face tokenizer fetched from the grid by CID', () => {
  const tokCid = (): string => manifest.tokenizer.cid!;
  const configCid = (): string => manifest.tokenizer.config!.cid;

  it('the supplier that fetched the model by CID holds its tokenizer files', () => {
    expect(manifest.tokenizer.kind).toBe('hf');
    for (const cid of [tokCid(), configCid()]) {
      expect(existsSync(blobPath(dataA, cid)), `A has ${cid}`).toBe(true);
      expect(existsSync(blobPath(dataB, cid)), `B has ${cid}`).toBe(true);
    }
  });

  it('a gateway with no --model folder serves chat with the same tokens as a local run, from B\'s copy alone', async () => {
    // A's copy no longer matches its CID: A's store refuses to serve it (it re-verifies a changed file), so
    // whichever host the gateway asks first, the only valid tokenizer.json it can get is B's.
    const good = readFileSync(blobPath(dataA, tokCid()));
    const bad = Buffer.from(good);
    bad[bad.length >> 1] ^= 0x01;
    await writeFile(blobPath(dataA, tokCid()), bad);

    const { openai } = await startGateway('gateway-1');
    const listed = (await openai.models.list()).data.find((m) => m.id === NAME) as unknown as { gridpipe: { kind: string; tokenizer: string } };
    expect(listed.gridpipe).toMatchObject({ kind: 'text', tokenizer: 'hf' });
    const done = await chat(openai);
    expect(done.choices[0].message.content).toBe(await expectedReply());
  });

  it('with no valid copy on any host: 503 tokenizer_unavailable; once a host has it again, chat works', async () => {
    const good = readFileSync(path.join(fragDir, 'tokenizer.json'));
    const bad = Buffer.from(good);
    bad[0] ^= 0x01;
    await writeFile(blobPath(dataB, tokCid()), bad);

    const { openai, url } = await startGateway('gateway-2');
    const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: NAME, messages, max_tokens: 2 }) });
    const body = await res.json() as { error: { code: string; message: string } };
    expect(res.status, JSON.stringify(body)).toBe(503);
    expect(body.error.code).toBe('tokenizer_unavailable');
    expect(body.error.message).toContain(tokCid());

    // A host gets a valid copy back (as after a re-import): the gateway fetches it on a later request.
    await copyFile(path.join(fragDir, 'tokenizer.json'), blobPath(dataB, tokCid()));
    let reply: string | null | undefined;
    await waitFor(async () => {
      try {
        reply = (await chat(openai)).choices[0].message.content;
        return true;
      } catch (err) {
        if ((err as { status?: number }).status !== 503) throw err;
        return false;
      }
    }, 'the gateway to load the tokenizer once a host has it', 60_000, 500);
    expect(reply).toBe(await expectedReply());
  });
});
