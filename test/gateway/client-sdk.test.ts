/**
 * The `gridpipe/client` SDK (gateway/client.ts) runs outside Node: nothing it imports, to the last module of
 * every package, is a Node builtin or one of the grid's server-side libraries (libp2p, ethers, onnxruntime),
 * and its browser bundle, evaluated where no require, process, Buffer or fs exists, lists a real gateway's
 * models and runs a model through it over 127.0.0.1 with the same results as a local onnxruntime run.
 *
 * Real Chromium is not used: this machine has neither /usr/bin/chromium nor playwright-core; a `vm` context
 * with only the web platform globals the SDK needs (fetch, text streams, URL) stands in for the page, its fetch
 * refusing to be called as a method of another object as a browser's does.
 */
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { build } from 'esbuild';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModel } from '../../fragments/builder/index.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { writeModel } from '../../fragments/onnx/write.js';
import type { GridpipeClient } from '../../gateway/client.js';
import { killAll, startGridpipe, type RunningProcess } from '../helpers/process.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const SDK = path.join(ROOT, 'gateway', 'client.ts');
/** Packages the SDK must never reach: the grid's networking, chain and runtime libraries. */
const SERVER_ONLY = /^(node:|libp2p$|@libp2p\/|@chainsafe\/|@multiformats\/|ethers$|onnxruntime-|fastify|pino$|classic-level$)/;
const BUILTINS = new Set(builtinModules);

function isForbidden(spec: string): boolean {
  return SERVER_ONLY.test(spec) || BUILTINS.has(spec) || BUILTINS.has(spec.split('/')[0]);
}

/** The module specifiers a source file imports at run time (type-only imports are erased). */
function runtimeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\s*from\s*)?['"]([^'"]+)['"]/gm)) if (!m[1]) specs.push(m[2]);
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) specs.push(m[1]);
  return specs;
}

/** A relative specifier as the project file it names (`x.js` is `x.ts` in the source tree, or generated `x.js`). */
function resolveProjectFile(from: string, spec: string): string {
  const target = path.resolve(path.dirname(from), spec);
  const ts = target.replace(/\.js$/, '.ts');
  return existsSync(ts) ? ts : target;
}

/** The browser bundle of the SDK (esbuild, platform browser), with its metafile. */
async function bundleSdk(): Promise<{ code: string; inputs: string[] }> {
  const result = await build({
    entryPoints: [SDK], bundle: true, platform: 'browser', format: 'iife', globalName: 'gridpipeSdk',
    write: false, metafile: true, logLevel: 'silent', target: 'es2022',
  });
  return { code: result.outputFiles[0].text, inputs: Object.keys(result.metafile.inputs) };
}

describe('gridpipe/client imports', () => {
  it('no module the SDK imports, transitively within the project, is a Node builtin or a server-side library', () => {
    const seen = new Set<string>();
    const packages = new Set<string>();
    const wrong: string[] = [];
    const walk = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const spec of runtimeImports(file)) {
        if (spec.startsWith('.')) walk(resolveProjectFile(file, spec));
        else if (isForbidden(spec)) wrong.push(`${path.relative(ROOT, file)} imports ${spec}`);
        else packages.add(spec);
      }
    };
    walk(SDK);
    expect(wrong).toEqual([]);
    // the walk really followed the SDK into the generated wire code and its runtime
    expect([...seen].map((f) => path.relative(ROOT, f))).toContain(path.join('proto', 'generated', 'grid.js'));
    expect([...packages]).toEqual(['protobufjs/minimal.js']);
  });

  it('its browser bundle pulls in no Node builtin and no server-side package', async () => {
    const { inputs } = await bundleSdk();
    const wrong = inputs.filter((f) => /(^|\/)node_modules\/(libp2p|@libp2p|@chainsafe|ethers|onnxruntime-node|fastify|pino)\//.test(f) || f.startsWith('node:'));
    expect(wrong).toEqual([]);
    expect(inputs.some((f) => f.includes('node_modules/protobufjs/'))).toBe(true);
  });
});

describe('gridpipe/client without Node', () => {
  const tmp = tempDir('gridpipe-sdk-');
  const suppliers: RunningProcess[] = [];
  let gateway: RunningProcess;
  let url: string;
  let modelFile: string;
  let sdk: { GridpipeClient: typeof GridpipeClient };
  let context: vm.Context;

  beforeAll(async () => {
    modelFile = path.join(tmp.dir, 'cnn.onnx');
    await writeModel(buildModel({ arch: 'cnn', layers: 3, channels: 8, imageSize: 16, seed: 63, name: 'tiny-cnn' }), modelFile);
    const dir = path.join(tmp.dir, 'cnn-fragments');
    await fragmentModel(modelFile, dir, { parts: 2 });
    // Two suppliers (the DHT needs a peer besides the publisher to hold a capacity record), each hosting the model.
    const supply = (name: string, bootstrap: string[]): RunningProcess => startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', dir, '--json', ...bootstrap]);
    suppliers.push(supply('a', []));
    const first = ((await suppliers[0].ready) as { addresses: string[] }).addresses[0];
    suppliers.push(supply('b', ['--bootstrap', first]));
    await suppliers[1].ready;
    gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', first, '--data', path.join(tmp.dir, 'gateway-data'), '--json']);
    url = ((await gateway.ready) as { url: string }).url;

    // A page's globals, nothing of Node's: no require, process, Buffer, module or import of node: modules.
    const { code } = await bundleSdk();
    context = vm.createContext({
      URL, TextEncoder, TextDecoder, TextDecoderStream, AbortController, AbortSignal, Headers, Request, Response, console,
    });
    // Node's fetch, with a browser's rule on top: window.fetch called on any other object is an "Illegal invocation".
    const pageGlobal: unknown = vm.runInContext('globalThis', context);
    context.fetch = function pageFetch(this: unknown, ...args: Parameters<typeof fetch>): ReturnType<typeof fetch> {
      if (this !== undefined && this !== pageGlobal) throw new TypeError("Failed to execute 'fetch' on 'Window': Illegal invocation");
      return fetch(...args);
    };
    vm.runInContext(code, context, { filename: 'gridpipe-client.bundle.js' });
    sdk = context.gridpipeSdk as typeof sdk;
  }, 120_000);

  afterAll(async () => {
    await gateway?.stop('SIGTERM');
    await Promise.all(suppliers.map((s) => s.stop('SIGTERM')));
    await killAll();
    tmp.cleanup();
  });

  it('the bundle sees no Node: require, process, Buffer and global are undefined where it runs', () => {
    expect(vm.runInContext('[typeof require, typeof process, typeof Buffer, typeof global, typeof module].join()', context)).toBe('undefined,undefined,undefined,undefined,undefined');
    expect(typeof sdk.GridpipeClient).toBe('function');
  });

  it('lists the gateway\'s models and runs a tensor model, matching a local onnxruntime run', async () => {
    const client = new sdk.GridpipeClient({ baseUrl: `${url}/v1` });
    await waitFor(async () => (await client.models()).some((m) => m.id === 'tiny-cnn'), 'the gateway to see tiny-cnn', 60_000, 250);
    expect((await client.models()).map((m) => m.id)).toEqual(['tiny-cnn']);

    const pixels = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
    const session = await ort.InferenceSession.create(modelFile);
    const local = Array.from((await session.run({ pixel_values: new ort.Tensor('float32', pixels, [2, 3, 16, 16]) })).logits.data as Float32Array);
    await session.release();

    const { outputs, route } = await client.infer('tiny-cnn', { pixel_values: { dtype: 'float32', dims: [2, 3, 16, 16], data: pixels } });
    expect(outputs.logits.dtype).toBe('float32');
    expect(outputs.logits.dims).toEqual([2, 10]);
    const values = Array.from(outputs.logits.data as ArrayLike<number>);
    expect(values).toHaveLength(local.length);
    values.forEach((v, i) => expect(v).toBeCloseTo(local[i], 5));
    expect((route as { route: unknown[] }).route.length).toBeGreaterThan(0);
  });
});
