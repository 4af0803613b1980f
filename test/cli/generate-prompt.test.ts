/**
 * `gridpipe generate --prompt` on a model that ships a Hugging Face tokenizer: the prompt is encoded and the
 * reply decoded by that tokenizer (the same TextTokenizer the gateway serves it with), whether the model is
 * given as its fragment folder (files read there) or by manifest CID (files fetched from its hosts by CID).
 * With no valid copy anywhere, --prompt fails on one line (exit 1) and --prompt-ids still prints the ids.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { generate } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { byteTokenizer } from '../../gateway/tokenizers/byte.js';
import { runCli } from '../helpers/cli.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer } from '../gateway/fixtures.js';

const tmp = tempDir('gridpipe-generate-prompt-');
const PROMPT = 'in the hat, the cat';
const MAX_TOKENS = 12;
const SAMPLING = ['--temperature', '1', '--seed', '11'];

let modelFile: string;
let fragDir: string;
let manifest: Manifest;
let manifestCid: string;
let eosId: number;
let tokenizer: HfTokenizer;
const suppliers: RunningProcess[] = [];
let bootstrap: string;

async function startSupplier(name: string, host: string, via?: string): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', host, '--fragments', '0,1',
    '--admin-port', '0', '--json', ...(via ? ['--bootstrap', via] : [])]);
  suppliers.push(proc);
  return ((await proc.ready) as { addresses: string[] }).addresses[0];
}

beforeAll(async () => {
  const tok = writeTestTokenizer(path.join(tmp.dir, 'hf'));
  eosId = tok.eosId;
  modelFile = path.join(tmp.dir, 'chat.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: tok.vocabSize, maxPositions: 64, kvCache: true, seed: 73, name: 'tok-generate' }), modelFile);
  fragDir = path.join(tmp.dir, 'frag');
  ({ manifest, manifestCid } = await fragmentModel(modelFile, fragDir, { parts: 2, tokenizer: tok.tokenizerFile }));
  tokenizer = new HfTokenizer(JSON.parse(readFileSync(path.join(fragDir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(path.join(fragDir, 'tokenizer_config.json'), 'utf8')));
  // A hosts the folder; B fetches the model by manifest CID through A (a DHT of two, as the gateway's tokenizer test).
  bootstrap = await startSupplier('a', fragDir);
  await startSupplier('b', manifestCid, bootstrap);
});

afterAll(async () => {
  await Promise.all(suppliers.map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

/** The reply of the whole model run locally (same prompt ids, sampling and stop id), decoded by the HF tokenizer. */
async function expectedText(): Promise<{ text: string; ids: number[] }> {
  const promptIds = tokenizer.encode(PROMPT).ids;
  const runner = await LocalModelRunner.open(modelFile, manifest.statefulPairs);
  const ids: number[] = [];
  try {
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    for await (const t of generate(runner, { promptIds, maxTokens: MAX_TOKENS, kvCache: true, inputNames, stopTokens: [eosId], temperature: 1, seed: 11 })) ids.push(t.id);
  } finally {
    await runner.close();
  }
  return { text: tokenizer.decode(ids, { skip_special_tokens: true }), ids };
}

describe('gridpipe generate --prompt with a Hugging Face tokenizer', () => {
  it('the prompt is one the byte tokenizer would encode differently (the test can tell them apart)', () => {
    expect(tokenizer.encode(PROMPT).ids).not.toEqual(byteTokenizer.encode(PROMPT));
  });

  it('given the fragment folder: prints the reply decoded by the model\'s tokenizer', async () => {
    const { text, ids } = await expectedText();
    expect(new Set(ids).size).toBeGreaterThan(3);
    const r = await runCli(['generate', '--manifest', fragDir, '--prompt', PROMPT, '--max-tokens', String(MAX_TOKENS), ...SAMPLING,
      '--bootstrap', bootstrap], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${text}\n`);
  });

  it('given the manifest CID: fetches the tokenizer from the model\'s hosts and prints the same reply', async () => {
    const { text, ids } = await expectedText();
    const r = await runCli(['generate', '--manifest', manifestCid, '--prompt', PROMPT, '--max-tokens', String(MAX_TOKENS), ...SAMPLING,
      '--bootstrap', bootstrap, '--json'], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { token?: number; text?: string; tokens?: number[] });
    const done = lines.pop()!;
    expect(done.tokens).toEqual(ids);
    expect(lines.map((l) => l.text)).toEqual(ids.map((id) => tokenizer.decode([id], { skip_special_tokens: true })));
    expect(tokenizer.decode(done.tokens!, { skip_special_tokens: true })).toBe(text);
  });

  it('with no valid copy of tokenizer.json anywhere: --prompt fails on one line, --prompt-ids prints ids with a note', async () => {
    const tokCid = manifest.tokenizer.cid!;
    const good = readFileSync(path.join(fragDir, 'tokenizer.json'));
    const bad = Buffer.from(good);
    bad[0] ^= 0x01;
    const badDir = path.join(tmp.dir, 'frag-bad');
    cpSync(fragDir, badDir, { recursive: true });
    writeFileSync(path.join(badDir, 'tokenizer.json'), bad);
    const blobs = ['a', 'b'].map((name) => path.join(tmp.dir, name, 'blobs', tokCid));
    for (const blob of blobs) writeFileSync(blob, bad);
    try {
      const text = await runCli(['generate', '--manifest', badDir, '--prompt', PROMPT, '--max-tokens', '2', '--bootstrap', bootstrap], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
      expect(text.code, text.stderr).toBe(1);
      expect(text.stderr).toMatch(/^gridpipe: error: cannot encode --prompt: tokenizer\.json in .* does not match its CID in the manifest; tokenizer\.json \(\S+\) could not be fetched from the grid: .*\n$/);
      expect(text.stderr).not.toMatch(/\n\s+at /);

      const ids = await runCli(['generate', '--manifest', badDir, '--prompt-ids', '1,2,3', '--max-tokens', '3', '--bootstrap', bootstrap], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
      expect(ids.code, ids.stderr).toBe(0);
      expect(ids.stdout).toMatch(/^(\d+ ){3}\n$/);
      expect(ids.stderr).toContain('gridpipe: note: the model\'s tokenizer could not be loaded');
    } finally {
      for (const blob of blobs) writeFileSync(blob, good);
    }
  });
});
