/**
 * The grid client asks for a wire encoding (scheduler/wire-choice.ts) with real supplier processes on 127.0.0.1:
 * the encoding asked for is accepted and decoded on both ends, the route says which each link used, the outputs
 * stay within the encoding's bound of the exact run, a request for exact outputs is never compressed, and "auto"
 * compresses only once the measured link makes transfer dominate.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type ort from 'onnxruntime-node';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { cidOfFile } from '../../fragments/cid.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel, type SessionOptions } from '../../scheduler/client.js';
import { sessionWireEncoding, spanStepBytes } from '../../scheduler/wire-choice.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';
import { gptInputs } from '../helpers/decoder-inputs.js';

const tmp = tempDir();
let manifest: Manifest;
const suppliers: RunningProcess[] = [];
const peers: string[] = [];
let client: GridClient;
let model: OpenModel;
const PROMPT = [5, 17, 99, 3, 250, 41, 7, 12, 64, 1, 33, 8, 200, 150, 11, 2];

async function start(name: string, fragments: string, hostArg: string, extra: string[] = []): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', hostArg, '--fragments', fragments, '--json', ...extra]);
  suppliers.push(proc);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  peers.push(ready.peerId);
  return ready.addresses[0];
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 128, heads: 4, vocab: 512, kvCache: true, seed: 18 }), modelPath);
  const fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 2 })).manifest;
  const bootstrap = await start('a', '0', fragDir);
  await start('b', '1', await cidOfFile(path.join(fragDir, 'manifest.json')), ['--bootstrap', bootstrap]);
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 } });
  model = await client.openModel(fragDir);
  await waitFor(async () => model.discovery.current.length === 2 || (await model.discovery.refresh()).length === 2, 'both suppliers in the swarm view', 30_000, 250);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await Promise.all(suppliers.map((s) => s.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

/** The prefill's logits and the route, from a session opened with `options`. */
async function prefill(options: SessionOptions): Promise<{ logits: ort.Tensor; route: { peerId: string; wireEncoding: string }[] }> {
  const session = client.session(model, PROMPT.length + 4, options);
  try {
    const { outputs } = await session.step(gptInputs(PROMPT, 0), 0, PROMPT.length);
    return { logits: outputs.logits, route: session.route };
  } finally {
    await session.close();
  }
}

function relativeError(a: ort.Tensor, b: ort.Tensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    worst = Math.max(worst, Math.abs(x[i] - y[i]));
    scale = Math.max(scale, Math.abs(x[i]));
  }
  return worst / scale;
}

describe('the grid client asks for a wire encoding (2 supplier processes)', () => {
  it('fp16 and int8 are negotiated and decoded on both ends; the route says so; outputs within the bound; exact stays exact', async () => {
    const exact = await prefill({});
    expect(exact.route.map((r) => r.wireEncoding)).toEqual(['exact', 'exact']);
    expect(relativeError(exact.logits, (await prefill({})).logits)).toBe(0);
    for (const [encoding, bound] of [['fp16', 0.01], ['int8', 0.05]] as const) {
      const run = await prefill({ wireEncoding: encoding });
      expect(run.route.map((r) => r.wireEncoding), encoding).toEqual([encoding, encoding]);
      const error = relativeError(exact.logits, run.logits);
      expect(error, encoding).toBeGreaterThan(0); // compressed: not bit-identical
      expect(error, encoding).toBeLessThanOrEqual(bound);
      // A request that asks for exact outputs is never compressed, whatever the client prefers.
      const asked = await prefill({ wireEncoding: encoding, exact: true });
      expect(asked.route.map((r) => r.wireEncoding)).toEqual(['exact', 'exact']);
      expect(relativeError(exact.logits, asked.logits)).toBe(0);
    }
  });

  it('auto stays exact on a fast link and compresses once the measured link makes transfer dominate', async () => {
    const fast = await prefill({ wireEncoding: 'auto' });
    expect(fast.route.map((r) => r.wireEncoding)).toEqual(['exact', 'exact']);
    // What a slow link's replies would measure: 100 kB moved in 10 s beyond the round trip (80 kbit/s): moving a
    // prefill's hidden state then takes about a second, far more than the span's compute.
    for (const peer of peers) for (let i = 0; i < 3; i++) client.swarm.reportReply(peer, 10_010, 0, 0, 0, 100_000);
    const slow = await prefill({ wireEncoding: 'auto' });
    expect(slow.route.map((r) => r.wireEncoding).every((e) => e === 'fp16' || e === 'int8')).toBe(true);
    expect(relativeError(fast.logits, slow.logits)).toBeLessThanOrEqual(0.05);
    const asked = await prefill({ wireEncoding: 'auto', exact: true });
    expect(asked.route.map((r) => r.wireEncoding)).toEqual(['exact', 'exact']);
  });
});

describe('sessionWireEncoding', () => {
  it('counts the float tensors crossing a span and follows the measured link', () => {
    const bytes = spanStepBytes(manifest, 1, 2, 16);
    // the hidden state entering fragment 1: 16 positions × d 128 float32 (the KV cache stays on the server)
    expect(bytes.floatBytes).toBeGreaterThanOrEqual(16 * 128 * 4);
    const estimate = { rttMs: 1, secondsPerByte: 1e-9, secondsPerFlop: 1e-11, queueMs: 0, inflight: 0, bannedUntil: 0, failures: 0, samples: 3, bandwidthSamples: 3, pingSamples: 1 };
    const base = { manifest, start: 1, end: 2, tokens: 16, exact: false, preference: 'auto' as const };
    expect(sessionWireEncoding({ ...base, estimate }).encoding).toBe('exact');
    expect(sessionWireEncoding({ ...base, estimate: { ...estimate, secondsPerByte: 1e-5 } }).encoding).toBe('int8');
    expect(sessionWireEncoding({ ...base, estimate: { ...estimate, secondsPerByte: 1e-5, bandwidthSamples: 0 } }).encoding).toBe('exact');
    expect(sessionWireEncoding({ ...base, estimate: { ...estimate, secondsPerByte: 1e-5 }, exact: true }).encoding).toBe('exact');
    expect(sessionWireEncoding({ ...base, estimate, preference: 'fp16' }).encoding).toBe('fp16');
  });
});
