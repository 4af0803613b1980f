/**
 * The CLI starts fast because building its command tree loads only commander and small definition modules:
 * each action imports what it runs. Checked without timing anything (`npm run bench -- cli` measures): the
 * built CLI runs under a module-resolution hook that lists every module it imports, and the heavy packages
 * must not be among them for `--help`, `--version` and `model inspect` (which needs protobufjs, nothing more).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { CLI } from './helpers/cli.js';

/** Packages that only a command's action may load. */
const HEAVY = ['onnxruntime-node', 'libp2p', '@libp2p/kad-dht', '@libp2p/tcp', '@chainsafe/libp2p-noise', 'ethers', 'fastify', 'classic-level', 'pino', '@bufbuild/protobuf', 'onnx-buf', '@huggingface/tokenizers'];

let dir: string;
let model: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-cli-start-'));
  await writeFile(path.join(dir, 'hooks.mjs'), [
    "import { appendFileSync } from 'node:fs';",
    'export async function resolve(specifier, context, next) {',
    '  const result = await next(specifier, context);',
    "  appendFileSync(process.env.GRIDPIPE_TEST_MODULE_LOG, `${result.url}\\n`);",
    '  return result;',
    '}',
  ].join('\n'));
  await writeFile(path.join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(path.join(dir, 'hooks.mjs')).href)});\n`);
  model = path.join(dir, 'tiny.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: 64, seed: 1 }), model);
});

afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

/** The packages a run of `gridpipe ...args` imports (by their node_modules name). */
async function packagesLoaded(args: string[], name: string): Promise<Set<string>> {
  const log = path.join(dir, `${name}.log`);
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(path.join(dir, 'register.mjs')).href, CLI, ...args], {
    env: { ...process.env, GRIDPIPE_TEST_MODULE_LOG: log }, encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  const urls = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
  return new Set(urls.map((u) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1]).filter((p): p is string => !!p));
}

describe('CLI start', () => {
  it.each([['--help'], ['--version'], ['model', '--help'], ['supply', '--help']])('gridpipe %s loads commander and none of the heavy packages', async (...args) => {
    const loaded = await packagesLoaded(args, args.join('-').replace(/\W/g, ''));
    expect(loaded.has('commander')).toBe(true);
    expect(HEAVY.filter((p) => loaded.has(p))).toEqual([]);
  });

  it('gridpipe model inspect FILE loads protobufjs for the ONNX schema, and none of the heavy packages', async () => {
    const loaded = await packagesLoaded(['model', 'inspect', model], 'inspect');
    expect(loaded.has('protobufjs')).toBe(true);
    expect(HEAVY.filter((p) => loaded.has(p))).toEqual([]);
  });

  it('an action still loads what it runs: gridpipe model verify on fragments reaches onnxruntime', async () => {
    const log = path.join(dir, 'verify.log');
    const frags = path.join(dir, 'frags');
    expect(spawnSync(process.execPath, [CLI, 'model', 'fragment', model, '--parts', '2', '--out', frags], { encoding: 'utf8' }).status).toBe(0);
    spawnSync(process.execPath, ['--import', pathToFileURL(path.join(dir, 'register.mjs')).href, CLI, 'model', 'verify', frags], {
      env: { ...process.env, GRIDPIPE_TEST_MODULE_LOG: log }, encoding: 'utf8',
    });
    expect(await readFile(log, 'utf8')).toMatch(/node_modules\/onnxruntime-node\//);
  });
});
