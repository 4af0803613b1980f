/**
 * The exec protocol end to end: real libp2p hosts (TCP + Noise + Yamux on 127.0.0.1) and real onnxruntime.
 * Fragments of tiny builder models; results compared with local onnxruntime runs of the same graphs.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { Registry } from 'prom-client';
import type { Stream } from '@libp2p/interface';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { cidOfBytes } from '../../fragments/cid.js';
import type { Manifest } from '../../fragments/manifest.js';
import { gridRoot, PROTOCOLS } from '../../proto/grid.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ShareLimits, type ShareLimitOptions } from '../../node/limits.js';
import { ExecServer, ExecutorPool, FragmentExecutor, providerCandidates, truncateAxis, type ExecServerInit } from '../../node/exec/index.js';
import {
  ErrorCode, ExecClient, ExecError, FrameReader, ortToWire, wireToOrt, writeFrame,
  encodeStepReplyFrame, encodeStepRequestFrame, tensorCopyStats, type RemoteSession, type TensorMap,
} from '../../net/exec/index.js';
import { ExecRequestType, ExecResponseType, REFERENCE_BYTES, encodeFrame, type DecodedResponse } from '../../net/exec/codec.js';
import { sampleToken } from '../../policy/sampling.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { gptInputs, int64, argmaxLast, maxAbsDiff, referenceDecode } from '../helpers/decoder-inputs.js';

const tmp = tempDir('gridpipe-exec-');
const logger = testLogger();
const GPT = { arch: 'gpt' as const, layers: 2, dModel: 32, heads: 2, vocab: 64, maxPositions: 64, seed: 7 };
/** KV bytes per position of GPT: layers × (key, value) × heads × headDim × 4 bytes. */
const KV_BYTES_PER_POSITION = 2 * 2 * 2 * 16 * 4;

let kvModel: string;
let kvManifest: Manifest;
let kvDir: string;
let plainManifest: Manifest;
let plainDir: string;
const files = new Map<string, string>();
const hosts: GridHost[] = [];
const servers: ExecServer[] = [];
let client: GridHost;
const execClient = new ExecClient({ stepTimeoutMs: 60_000 });

function machine(): { memoryBytes: number; cores: number } {
  return { memoryBytes: 1 << 30, cores: 2 };
}

/** A host serving exec with a resolver over `cids` (all fragment files when absent). */
async function startServer(options: Partial<ExecServerInit> & { limits?: ShareLimits; limitOptions?: ShareLimitOptions; cids?: string[] } = {}): Promise<{ host: GridHost; server: ExecServer; limits: ShareLimits }> {
  const host = await createGridHost({ network: 'local', logger });
  hosts.push(host);
  const limits = options.limits ?? new ShareLimits(options.limitOptions ?? {}, machine());
  const allowed = options.cids ? new Set(options.cids) : undefined;
  const server = new ExecServer({
    logger,
    ...options,
    limits,
    resolve: (cid) => (allowed && !allowed.has(cid) ? undefined : files.get(cid)),
  });
  await server.start(host.node);
  servers.push(server);
  return { host, server, limits };
}

function refs(manifest: Manifest, cid: string, indices: number[]): { cid: string; manifestCid: string; index: number }[] {
  return indices.map((i) => ({ cid: manifest.fragments[i].cid, manifestCid: cid, index: i }));
}

let kvManifestCid: string;
let plainManifestCid: string;

beforeAll(async () => {
  kvModel = path.join(tmp.dir, 'gpt-kv.onnx');
  await writeModel(buildModel({ ...GPT, kvCache: true }), kvModel);
  ({ manifest: kvManifest, manifestCid: kvManifestCid, dir: kvDir } = await fragmentModel(kvModel, path.join(tmp.dir, 'gpt-kv'), { parts: 2 }));
  const plainModel = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ ...GPT, kvCache: false }), plainModel);
  ({ manifest: plainManifest, manifestCid: plainManifestCid, dir: plainDir } = await fragmentModel(plainModel, path.join(tmp.dir, 'gpt'), { parts: 2 }));
  for (const f of kvManifest.fragments) files.set(f.cid, path.join(kvDir, f.file));
  for (const f of plainManifest.fragments) files.set(f.cid, path.join(plainDir, f.file));
  files.set(kvManifestCid, path.join(kvDir, 'manifest.json'));
  files.set(plainManifestCid, path.join(plainDir, 'manifest.json'));
  client = await createGridHost({ network: 'local', logger });
  hosts.push(client);
});

afterAll(async () => {
  for (const s of servers) await s.stop().catch(() => undefined);
  await Promise.allSettled(hosts.map((h) => h.stop()));
  tmp.cleanup();
});

// ------------------------------------------------------------------------------------------------ helpers

/** The whole KV model run locally step by step with its own cache: logits per step. */
async function referenceGeneration(prompt: number[], steps: number): Promise<{ tokens: number[][]; logits: ort.Tensor[] }> {
  return referenceDecode(kvModel, { layers: GPT.layers, kvHeads: GPT.heads, headDim: GPT.dModel / GPT.heads }, prompt, steps);
}

async function expectExecError(p: Promise<unknown>, code: string): Promise<ExecError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(ExecError);
  expect((err as ExecError).code, (err as Error).message).toBe(code);
  return err as ExecError;
}

/** A raw exec stream from the client host, for sending hand-made frames. */
async function rawStream(host: GridHost): Promise<{ stream: Stream; reader: FrameReader; send: (chunks: Uint8Array[]) => Promise<DecodedResponse> }> {
  const stream = await client.node.dialProtocol(host.node.getMultiaddrs(), PROTOCOLS.exec);
  const reader = new FrameReader(stream, { maxFrameBytes: 64 << 20 });
  const send = async (chunks: Uint8Array[]): Promise<DecodedResponse> => {
    await writeFrame(stream, chunks);
    const e = await reader.next();
    if (!e || e.kind !== 'frame') throw new Error('no reply frame');
    return ExecResponseType.decode(e.bytes) as unknown as DecodedResponse;
  };
  return { stream, reader, send };
}

/** The length prefix of a frame. */
function readVarint(b: Uint8Array): { length: number; header: number } {
  let length = 0;
  for (let i = 0, scale = 1; i < 8; i++, scale *= 128) {
    length += (b[i] & 0x7f) * scale;
    if (b[i] < 0x80) return { length, header: i + 1 };
  }
  throw new Error('bad varint');
}

const PROMPT = [3, 14, 15, 9, 2, 6];
const STEPS = 20;

// ------------------------------------------------------------------------------------------------ units

describe('wire pieces', () => {
  it('error codes mirror ErrorCode in grid.proto', () => {
    const values = gridRoot.lookupEnum('gridpipe.v1.ErrorCode').values;
    expect(values).toEqual(ErrorCode);
  });

  it('hand-encoded step frames decode with protobufjs to the same message', () => {
    const data = new Float32Array([1.5, -2, 3.25, 4]);
    const t = { name: 'hidden', dtype: 1, dims: [1, 2, 2], data: new Uint8Array(data.buffer) };
    const big = { name: 'big', dtype: 2, dims: [4096], data: new Uint8Array(4096).map((_, i) => i % 251) };
    const req = encodeStepRequestFrame({ sessionId: 's-1', stepId: 2n ** 40n + 3n, position: 300, inputs: [t, big], replay: [{ position: 0, tensors: [t] }, { position: 7, tensors: [] }], draftTokens: 3, want: ['logits'] });
    const whole = Buffer.concat(req);
    const { length: len, header } = readVarint(whole);
    expect(whole.length).toBe(header + len);
    const m = ExecRequestType.toObject(ExecRequestType.decode(whole.subarray(header)), { longs: String, bytes: Array }) as Record<string, Record<string, unknown>>;
    expect(m.step).toMatchObject({ sessionId: 's-1', stepId: String(2n ** 40n + 3n), position: 300, draftTokens: 3, want: ['logits'] });
    const inputs = m.step.inputs as { name: string; dims: string[]; data: number[] }[];
    expect(inputs.map((i) => i.name)).toEqual(['hidden', 'big']);
    expect(inputs[1].data).toEqual([...big.data]);
    expect((m.step.replay as { position?: number }[]).map((c) => c.position ?? 0)).toEqual([0, 7]);

    const rep = Buffer.concat(encodeStepReplyFrame({ sessionId: 's', stepId: 9n, outputs: [big], queueMs: 0.25, computeMs: 1.5, paymentMs: 0.75, error: { code: ErrorCode.BUSY, message: 'x' }, replayOutputs: [{ position: 4, tensors: [t] }] }));
    const r = ExecResponseType.toObject(ExecResponseType.decode(rep.subarray(readVarint(rep).header)), { longs: String, bytes: Array }) as Record<string, Record<string, unknown>>;
    expect(r.step).toMatchObject({ sessionId: 's', stepId: '9', queueMs: 0.25, computeMs: 1.5, paymentMs: 0.75, error: { code: ErrorCode.BUSY, message: 'x' } });
    expect((r.step.replayOutputs as { position: number }[])[0].position).toBe(4);
    // a frame is one buffer unless a tensor reaches REFERENCE_BYTES: then its own memory is one of the chunks
    expect(encodeStepReplyFrame({ sessionId: 's', stepId: 1n, outputs: [big], queueMs: 0, computeMs: 0 })).toHaveLength(1);
    const huge = { name: 'huge', dtype: 1, dims: [REFERENCE_BYTES / 4], data: new Uint8Array(REFERENCE_BYTES) };
    const chunks = encodeStepReplyFrame({ sessionId: 's', stepId: 1n, outputs: [t, huge], queueMs: 2, computeMs: 0 });
    expect(chunks).toHaveLength(3);
    expect(chunks[1]).toBe(huge.data);
    const joined = Buffer.concat(chunks);
    const hugeReply = ExecResponseType.decode(joined.subarray(readVarint(joined).header)) as unknown as DecodedResponse;
    expect(hugeReply.step?.outputs?.map((o) => o.data?.byteLength)).toEqual([16, REFERENCE_BYTES]);
    expect(hugeReply.step?.queueMs).toBe(2);
  });

  it('wire → onnxruntime tensors are zero-copy when aligned and copied when not', () => {
    const backing = new Uint8Array(4 * 6 + 1);
    const values = new Float32Array([1, 2, 3, 4, 5, 6]);
    backing.set(new Uint8Array(values.buffer), 1); // offset 1: unaligned
    const before = { ...tensorCopyStats };
    const unaligned = wireToOrt({ name: 'x', dtype: 1, dims: [2, 3], data: backing.subarray(1) });
    expect([...(unaligned.data as Float32Array)]).toEqual([1, 2, 3, 4, 5, 6]);
    const alignedBytes = new Uint8Array(values.buffer);
    const aligned = wireToOrt({ name: 'x', dtype: 1, dims: [2, 3], data: alignedBytes });
    expect((aligned.data as Float32Array).buffer).toBe(values.buffer);
    expect(tensorCopyStats.copied - before.copied).toBe(1);
    expect(tensorCopyStats.aligned - before.aligned).toBe(1);
    const back = ortToWire('x', aligned);
    expect(back.data.buffer).toBe(values.buffer);
    expect(() => wireToOrt({ name: 'x', dtype: 1, dims: [2, 4], data: alignedBytes })).toThrow(/expected 32/);
    expect(() => wireToOrt({ name: 'x', dtype: 8, dims: [1], data: alignedBytes })).toThrow(/cannot be carried/);
  });

  it('truncates a KV tensor along its positions axis', () => {
    // [1, 2, 3, 2]: heads 2, positions 3, head dim 2
    const t = new ort.Tensor('float32', Float32Array.from({ length: 12 }, (_, i) => i), [1, 2, 3, 2]);
    const cut = truncateAxis(t, 2, 1);
    expect(cut.dims).toEqual([1, 2, 1, 2]);
    expect([...(cut.data as Float32Array)]).toEqual([0, 1, 6, 7]);
    expect(truncateAxis(t, 2, 0).dims).toEqual([1, 2, 0, 2]);
  });

  it('a run in a worker thread matches the inline run bit for bit, and a failed one leaves its KV feeds usable', async () => {
    const inline = await FragmentExecutor.load(kvModel, { provider: 'cpu', offThread: false });
    const worker = await FragmentExecutor.load(kvModel, { provider: 'cpu', offThread: true });
    try {
      expect(worker.offThread).toBe(true);
      const past: TensorMap = {};
      for (let l = 0; l < GPT.layers; l++) {
        for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, GPT.heads, 0, GPT.dModel / GPT.heads]);
      }
      const feeds = { ...gptInputs([5, 9, 2], 0), ...past };
      const a = await inline.run(feeds);
      const b = await worker.run(feeds);
      expect(Object.keys(b.outputs).sort()).toEqual(Object.keys(a.outputs).sort());
      for (const name in a.outputs) expect(maxAbsDiff(b.outputs[name], a.outputs[name])).toBe(0);
      // the KV the worker returned owns its buffers (transferred back and forth, never copied); feed it with a
      // bad input so onnxruntime fails after the transfer: the caller's tensors are whole again
      const kv: TensorMap = {};
      for (let l = 0; l < GPT.layers; l++) for (const kind of ['key', 'value']) kv[`past_key_values.${l}.${kind}`] = b.outputs[`present.${l}.${kind}`];
      const before = Array.from(kv['past_key_values.0.key'].data as Float32Array);
      expect(before.length).toBeGreaterThan(0);
      const bad = { ...gptInputs([1], 3), input_ids: new ort.Tensor('float32', new Float32Array(1), [1, 1]), ...kv };
      await expect(worker.run(bad)).rejects.toThrow(ExecError);
      expect(Array.from(kv['past_key_values.0.key'].data as Float32Array)).toEqual(before);
      const next = await worker.run({ ...gptInputs([1], 3), ...kv });
      const expected = await inline.run({ ...gptInputs([1], 3), ...Object.fromEntries(Object.entries(kv).map(([n]) => [n, a.outputs[n.replace('past_key_values', 'present')]])) });
      expect(maxAbsDiff(next.outputs.logits, expected.outputs.logits)).toBe(0);
    } finally {
      await Promise.all([inline.close(), worker.close()]);
    }
  });

  it('a fragment whose onnxruntime worker died fails its runs and is loaded again for the next user', async () => {
    const pool = new ExecutorPool(() => kvModel, { provider: 'cpu' });
    try {
      const first = await pool.get('gpt');
      // what a crash inside onnxruntime does to the thread (reached through the executor's private session)
      await (first as unknown as { session: { worker: { terminate(): Promise<number> } } }).session.worker.terminate();
      await waitFor(() => first.broken, 'the executor to notice its worker is gone');
      const past: TensorMap = {};
      for (let l = 0; l < GPT.layers; l++) {
        for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, GPT.heads, 0, GPT.dModel / GPT.heads]);
      }
      const feeds = { ...gptInputs([5, 9], 0), ...past };
      await expect(first.run(feeds)).rejects.toThrow(/onnxruntime worker exited/);
      const second = await pool.get('gpt');
      expect(second).not.toBe(first);
      expect((await second.run(feeds)).outputs.logits.dims).toEqual([1, 2, GPT.vocab]);
    } finally {
      await pool.close();
    }
  });

  it('picks CPU unless asked for more, and tries what is available for auto', () => {
    expect(providerCandidates('cpu')).toEqual(['cpu']);
    expect(providerCandidates('webgpu')).toEqual(['webgpu', 'cpu']);
    expect(providerCandidates('auto').at(-1)).toBe('cpu');
  });
});

// ------------------------------------------------------------------------------------------------ network

describe('exec over libp2p', () => {
  it('a step returns the tensors a local onnxruntime run of the same fragment returns', async () => {
    const registry = new Registry();
    const { host, server } = await startServer({ registry });
    const fragment = plainManifest.fragments[0];
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(plainManifest, plainManifestCid, [0]) });
    const inputs = gptInputs([1, 2, 3, 4, 5], 0);
    const remote = await session.step(inputs, { position: 0 });

    const local = await ort.InferenceSession.create(path.join(plainDir, fragment.file), { executionProviders: ['cpu'] });
    const expected = await local.run(inputs);
    await local.release();
    // only what later fragments read comes back (the manifest's `to`), and all of it
    const wanted = fragment.outputs.filter((o) => o.to.length || o.graphOutput).map((o) => o.name).sort();
    expect(Object.keys(remote.outputs).sort()).toEqual(wanted);
    for (const name of wanted) expect(maxAbsDiff(remote.outputs[name], expected[name])).toBe(0);
    expect(remote.computeMs).toBeGreaterThan(0);
    expect(remote.queueMs).toBeGreaterThanOrEqual(0);

    // `want` narrows the outputs
    const one = await session.step(inputs, { position: 0, want: [wanted[0]] });
    expect(Object.keys(one.outputs)).toEqual([wanted[0]]);
    await session.close();

    const text = await registry.metrics();
    expect(text).toMatch(/gridpipe_exec_steps_total\{outcome="ok"\} 2/);
    expect(text).toMatch(/gridpipe_exec_step_seconds_count 2/);
    await waitFor(() => server.sessions.size === 0, 'the closed session to be freed');
  });

  it('last_row_only returns just the newest position of an output, equal to the last row of the full output', async () => {
    const { host } = await startServer();
    const all = plainManifest.fragments.map((f) => f.index);
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(plainManifest, plainManifestCid, all) });
    const inputs = gptInputs([1, 2, 3, 4, 5], 0);
    const full = (await session.step(inputs, { position: 0 })).outputs.logits;
    const last = (await session.step(inputs, { position: 0, lastRowOnly: ['logits'] })).outputs.logits;
    const [batch, rows, vocab] = full.dims;
    expect(rows).toBe(5);
    expect(last.dims).toEqual([batch, 1, vocab]);
    expect(Array.from(last.data as Float32Array)).toEqual(Array.from((full.data as Float32Array).subarray((rows - 1) * vocab, rows * vocab)));
    await session.close();
  });

  it('sample: the node draws the token the client would draw from the row, and refuses settings out of range', async () => {
    const { host } = await startServer();
    const all = plainManifest.fragments.map((f) => f.index);
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(plainManifest, plainManifestCid, all) });
    const inputs = gptInputs([1, 2, 3, 4, 5], 0);
    const row = (await session.step(inputs, { position: 0, lastRowOnly: ['logits'] })).outputs.logits.data as Float32Array;
    const settings = [
      { temperature: 1, seed: 7 }, { temperature: 0.7, topP: 0.9, seed: -3 }, { temperature: 1.3, topK: 5, seed: 2 ** 40 }, { temperature: 0.05, seed: 1 },
    ];
    const draws = new Set<number>();
    for (const s of settings) {
      for (let position = 5; position < 25; position++) {
        const r = await session.step(inputs, { position: 0, lastRowOnly: ['logits'], sample: { ...s, position } });
        expect(Object.keys(r.outputs)).toEqual(['logits.sampled']);
        expect(r.outputs['logits.sampled'].dims).toEqual([1, 1, 1]);
        const id = Number((r.outputs['logits.sampled'].data as BigInt64Array)[0]);
        expect(id).toBe(sampleToken(row, position, s));
        draws.add(id);
      }
    }
    expect(draws.size).toBeGreaterThan(1); // the draws depend on position and settings (not a constant)
    for (const bad of [{ temperature: 0, seed: 1, position: 5 }, { temperature: 1, topP: 1.5, seed: 1, position: 5 }]) {
      await expect(session.step(inputs, { position: 0, lastRowOnly: ['logits'], sample: bad })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    }
    expect((await session.step(inputs, { position: 0, lastRowOnly: ['logits'] })).outputs.logits.dims[1]).toBe(1); // still serving
    await session.close();
  });

  it('keeps the KV cache on the node: 20 steps on a 2-fragment span match the whole model run locally', async () => {
    const reference = await referenceGeneration(PROMPT, STEPS);
    const { host } = await startServer();
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 });
    let position = 0;
    for (let s = 0; s < STEPS; s++) {
      const tokens = reference.tokens[s];
      const r = await session.step(gptInputs(tokens, position), { position });
      expect(Object.keys(r.outputs)).toEqual(['logits']); // never the KV cache
      expect(maxAbsDiff(r.outputs.logits, reference.logits[s])).toBeLessThan(1e-4);
      expect(argmaxLast(r.outputs.logits)).toBe(argmaxLast(reference.logits[s]));
      position += tokens.length;
    }
    await session.close();
  });

  it('runs the same generation across 2 nodes each hosting one fragment', async () => {
    const reference = await referenceGeneration(PROMPT, STEPS);
    const a = await startServer({ cids: [kvManifest.fragments[0].cid, kvManifestCid] });
    const b = await startServer({ cids: [kvManifest.fragments[1].cid, kvManifestCid] });
    // each node refuses the fragment it does not host
    await expectExecError(execClient.openSession(client.node, a.host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [1]), maxLength: 64 }), 'NOT_FOUND');
    const first = await execClient.openSession(client.node, a.host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [0]), maxLength: 64 });
    const second = await execClient.openSession(client.node, b.host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [1]), maxLength: 64 });
    const crossing = kvManifest.fragments[0].outputs.filter((o) => o.to.includes(1)).map((o) => o.name).sort();
    let position = 0;
    for (let s = 0; s < STEPS; s++) {
      const tokens = reference.tokens[s];
      const h = await first.step(gptInputs(tokens, position), { position });
      expect(Object.keys(h.outputs).sort()).toEqual(crossing);
      const r = await second.step(h.outputs, { position });
      expect(maxAbsDiff(r.outputs.logits, reference.logits[s])).toBeLessThan(1e-4);
      position += tokens.length;
    }
    await Promise.all([first.close(), second.close()]);
  });

  it('answers a repeated step id from its cache and recomputes identically after a rollback', async () => {
    const reference = await referenceGeneration(PROMPT, 8);
    const { host, server } = await startServer();
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 });
    const results = [];
    let position = 0;
    for (let s = 0; s < 8; s++) {
      const r = await session.step(gptInputs(reference.tokens[s], position), { position, stepId: s + 1 });
      results.push({ position, r });
      position += reference.tokens[s].length;
    }
    // retry of the last step id: same outputs, no computation, cache unchanged
    const retry = await session.step(gptInputs(reference.tokens[7], results[7].position), { position: results[7].position, stepId: 8 });
    expect(maxAbsDiff(retry.outputs.logits, results[7].r.outputs.logits)).toBe(0);
    expect(retry.computeMs).toBe(0);
    // an old step id that is no longer cached is refused rather than silently re-run
    await expectExecError(session.step(gptInputs(reference.tokens[2], results[2].position), { position: results[2].position, stepId: 3 }), 'BAD_REQUEST');

    // rollback: back to the position of step 4 (index 3), recompute it and go on
    const back = results[3].position;
    const again = await session.step(gptInputs(reference.tokens[3], back), { position: back, stepId: 20 });
    expect(maxAbsDiff(again.outputs.logits, results[3].r.outputs.logits)).toBeLessThan(1e-6);
    let pos = back + reference.tokens[3].length;
    for (let s = 4; s < 8; s++) {
      const r = await session.step(gptInputs(reference.tokens[s], pos), { position: pos });
      expect(maxAbsDiff(r.outputs.logits, reference.logits[s])).toBeLessThan(1e-4);
      pos += reference.tokens[s].length;
    }

    // speculative decoding: 3 draft tokens in one step, of which only the first is accepted
    const truth = reference.tokens;
    const specPos = results[5].position;
    const draft = [truth[5][0], 1, 2];
    const verify = await session.step(gptInputs(draft, specPos), { position: specPos, draftTokens: 2 });
    expect(verify.outputs.logits.dims).toEqual([1, 3, GPT.vocab]);
    // row 0 of the verification equals the reference logits of step 6 (index 5)
    const row0 = new ort.Tensor('float32', (verify.outputs.logits.data as Float32Array).slice(0, GPT.vocab), [1, 1, GPT.vocab]);
    expect(maxAbsDiff(row0, reference.logits[5])).toBeLessThan(1e-4);
    const accepted = await session.step(gptInputs(truth[6], specPos + 1), { position: specPos + 1 });
    expect(maxAbsDiff(accepted.outputs.logits, reference.logits[6])).toBeLessThan(1e-4);

    // a position ahead of the cache is refused and changes nothing
    await expectExecError(session.step(gptInputs([1], 40), { position: 40 }), 'BAD_REQUEST');
    const fine = await session.step(gptInputs(truth[7], specPos + 2), { position: specPos + 2 });
    expect(maxAbsDiff(fine.outputs.logits, reference.logits[7])).toBeLessThan(1e-4);
    expect(await server.metrics.steps.get().then((m) => m.values.find((v) => v.labels.outcome === 'cached')?.value)).toBe(1);
    await session.close();
  });

  it('replays a history chunk by chunk on a fresh session and returns every chunk\'s outputs', async () => {
    const reference = await referenceGeneration(PROMPT, 6);
    const { host } = await startServer();
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 });
    const replay = [];
    let position = 0;
    for (let s = 0; s < 5; s++) {
      replay.push({ position, inputs: gptInputs(reference.tokens[s], position) });
      position += reference.tokens[s].length;
    }
    const r = await session.step(gptInputs(reference.tokens[5], position), { position, replay });
    expect(maxAbsDiff(r.outputs.logits, reference.logits[5])).toBeLessThan(1e-4);
    expect(r.replayOutputs.map((c) => c.position)).toEqual(replay.map((c) => c.position));
    r.replayOutputs.forEach((c, i) => expect(maxAbsDiff(c.outputs.logits, reference.logits[i])).toBeLessThan(1e-4));
    await session.close();
  });

  it('answers malformed, oversized and wrong frames with error codes while a parallel session completes', async () => {
    const reference = await referenceGeneration(PROMPT, STEPS);
    const { host, server } = await startServer({ maxStepFrameBytes: 256 * 1024, maxControlFrameBytes: 4096 });
    const addrs = host.node.getMultiaddrs();

    const honest = (async () => {
      const session = await execClient.openSession(client.node, addrs, { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 });
      let position = 0;
      const diffs: number[] = [];
      for (let s = 0; s < STEPS; s++) {
        const r = await session.step(gptInputs(reference.tokens[s], position), { position });
        diffs.push(maxAbsDiff(r.outputs.logits, reference.logits[s]));
        position += reference.tokens[s].length;
        await new Promise((resolve) => setImmediate(resolve));
      }
      await session.close();
      return diffs;
    })();

    const abuse = (async () => {
      const raw = await rawStream(host);
      // garbage bytes in a well-formed length prefix
      const garbage = await raw.send([Uint8Array.of(7), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02)]);
      expect(garbage.error?.code).toBe(ErrorCode.BAD_REQUEST);
      // a frame with no body
      expect((await raw.send([Uint8Array.of(0)])).error?.code).toBe(ErrorCode.BAD_REQUEST);
      // oversized: 300 KiB of zeros (the limit is 256 KiB); skipped as it arrives, the stream stays usable
      const big = new Uint8Array(300 * 1024);
      const prefix = Uint8Array.of(0x80 | (big.length & 0x7f), 0x80 | ((big.length >> 7) & 0x7f), big.length >> 14);
      const over = await raw.send([prefix, big]);
      expect(over.error?.code).toBe(ErrorCode.TOO_LARGE);
      // an oversized open (control frames are capped lower)
      const fat = await raw.send(encodeFrame(ExecRequestType, { open: { sessionId: 'x'.repeat(5000), fragments: [{ cid: kvManifest.fragments[0].cid }], maxLength: 8 } }));
      expect(fat.error?.code).toBe(ErrorCode.TOO_LARGE);
      // the same stream still opens a session and steps
      const opened = await raw.send(encodeFrame(ExecRequestType, { open: { sessionId: 'raw', fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 } }));
      expect(opened.opened?.sessionId).toBe('raw');
      const wire = Object.entries(gptInputs([1, 2], 0)).map(([n, t]) => ortToWire(n, t));
      const ok = await raw.send(encodeStepRequestFrame({ sessionId: 'raw', stepId: 1n, position: 0, inputs: wire }));
      expect(ok.step?.error ?? null).toBeNull();
      expect(ok.step?.outputs?.map((o) => o.name)).toEqual(['logits']);
      // unknown session
      const unknown = await raw.send(encodeStepRequestFrame({ sessionId: 'nope', stepId: 1n, position: 0, inputs: wire }));
      expect(unknown.step?.error?.code).toBe(ErrorCode.NOT_FOUND);
      await raw.stream.close();

      // through the client: wrong dtype, wrong dims, missing and extra inputs, KV sent by the client, unknown CID
      const s = await execClient.openSession(client.node, addrs, { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 64 });
      const good = gptInputs([4, 5, 6], 0);
      const asFloat = { ...good, input_ids: new ort.Tensor('float32', new Float32Array(3), [1, 3]) };
      expect((await expectExecError(s.step(asFloat, { position: 0 }), 'BAD_REQUEST')).message).toMatch(/input_ids.*float.*expected int64/);
      const rank = { ...good, input_ids: int64([4, 5, 6], [3]) };
      expect((await expectExecError(s.step(rank, { position: 0 }), 'BAD_REQUEST')).message).toMatch(/input_ids.*dims/);
      const maskShort = { ...good, attention_mask: int64([1, 1], [1, 2]) };
      expect((await expectExecError(s.step(maskShort, { position: 0 }), 'BAD_REQUEST')).message).toMatch(/attention_mask/);
      const batchMismatch = { ...good, position_ids: int64([0, 1, 2, 0, 1, 2], [2, 3]) };
      await expectExecError(s.step(batchMismatch, { position: 0 }), 'BAD_REQUEST');
      const { position_ids: _, ...missing } = good;
      expect((await expectExecError(s.step(missing, { position: 0 }), 'BAD_REQUEST')).message).toMatch(/position_ids.*missing/);
      await expectExecError(s.step({ ...good, extra: int64([1], [1]) }, { position: 0 }), 'BAD_REQUEST');
      const kv = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 16]);
      expect((await expectExecError(s.step({ ...good, 'past_key_values.0.key': kv }, { position: 0 }), 'BAD_REQUEST')).message).toMatch(/keeps/);
      // after all that the session is intact
      const r = await s.step(good, { position: 0 });
      expect(r.outputs.logits.dims).toEqual([1, 3, GPT.vocab]);
      await s.close();
      await expectExecError(execClient.openSession(client.node, addrs, { fragments: [cidOfBytes(Uint8Array.of(1, 2, 3))], maxLength: 8 }), 'NOT_FOUND');
      await expectExecError(execClient.openSession(client.node, addrs, { fragments: refs(kvManifest, kvManifestCid, [0, 1]) }), 'BAD_REQUEST'); // no max_length
    })();

    const [diffs] = await Promise.all([honest, abuse]);
    expect(diffs).toHaveLength(STEPS);
    for (const d of diffs) expect(d).toBeLessThan(1e-4);
    const errors = await server.metrics.errors.get();
    expect(errors.values.find((v) => v.labels.code === 'TOO_LARGE')?.value).toBe(2);
  });

  it('evicts the least recently used session past the memory cap; its next step gets SESSION_EVICTED', async () => {
    // each session below holds 10 positions of KV (5 KiB) plus its last reply (logits, 2.5 KiB)
    const cap = 10 * KV_BYTES_PER_POSITION + 10 * GPT.vocab * 4 + 1024;
    const registry = new Registry();
    const { host, server } = await startServer({ limitOptions: { maxMemoryBytes: cap }, registry });
    const addrs = host.node.getMultiaddrs();
    const span = refs(kvManifest, kvManifestCid, [0, 1]);
    const open = (): Promise<RemoteSession> => execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    // a session that could never fit is refused up front
    await expectExecError(execClient.openSession(client.node, addrs, { fragments: span, maxLength: 64 }), 'BUSY');

    const first = await open();
    const tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    await first.step(gptInputs(tokens, 0), { position: 0 });
    expect(server.sessions.bytesHeld).toBeLessThanOrEqual(cap);
    const second = await open();
    await second.step(gptInputs(tokens, 0), { position: 0 });
    expect(server.sessions.bytesHeld).toBeLessThanOrEqual(cap);
    const err = await expectExecError(first.step(gptInputs([11], 10), { position: 10 }), 'SESSION_EVICTED');
    expect(err.message).toMatch(/memory cap/);
    // the node keeps working: the second session goes on, a new one opens
    const r = await second.step(gptInputs([11], 10), { position: 10 });
    expect(r.outputs.logits.dims).toEqual([1, 1, GPT.vocab]);
    const third = await open();
    await third.step(gptInputs([1, 2], 0), { position: 0 });
    expect(await registry.metrics()).toMatch(/gridpipe_exec_evictions_total\{reason="memory"\} [1-9]/);
    await Promise.all([first.close(), second.close(), third.close()]);
  });

  it('evicts idle sessions after the TTL', async () => {
    let now = 1_000_000;
    const { host, server } = await startServer({ sessionTtlMs: 60_000, now: () => now, sweepIntervalMs: false });
    const addrs = host.node.getMultiaddrs();
    const span = refs(kvManifest, kvManifestCid, [0, 1]);
    const idle = await execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    const swept = await execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    await idle.step(gptInputs([1, 2], 0), { position: 0 });
    await swept.step(gptInputs([1, 2], 0), { position: 0 });
    now += 61_000;
    // one is found expired when touched, the other by the sweep
    await expectExecError(idle.step(gptInputs([3], 2), { position: 2 }), 'SESSION_EVICTED');
    server.sessions.sweep();
    expect(server.sessions.size).toBe(0);
    await expectExecError(swept.step(gptInputs([3], 2), { position: 2 }), 'SESSION_EVICTED');
    expect((await server.metrics.evictions.get()).values.find((v) => v.labels.reason === 'idle')?.value).toBe(2);
    // a new session works as before
    const fresh = await execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    await fresh.step(gptInputs([1, 2], 0), { position: 0 });
    await Promise.all([idle.close(), swept.close(), fresh.close()]);
  });

  it('rejects the steps of a session whose server went away with CLOSED instead of hanging', async () => {
    const { host } = await startServer();
    const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 16 });
    await session.step(gptInputs([1, 2], 0), { position: 0 });
    await host.stop();
    await expectExecError(session.step(gptInputs([3], 2), { position: 2 }), 'CLOSED');
    expect(session.closed).toBe(true);
  });

  it('answers BUSY at the session limit and while paused', async () => {
    const { host, limits } = await startServer({ limitOptions: { maxSessions: 2, maxSessionsPerPeer: 2 } });
    const addrs = host.node.getMultiaddrs();
    const span = refs(kvManifest, kvManifestCid, [0, 1]);
    const open = (): Promise<RemoteSession> => execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    const a = await open();
    const b = await open();
    expect((await expectExecError(open(), 'BUSY')).message).toMatch(/limit of 2 sessions/);
    await b.close();
    const c = await open(); // a closed session frees its place (the close is processed before this open)
    limits.pause();
    expect((await expectExecError(open(), 'BUSY')).message).toMatch(/paused/);
    await expectExecError(a.step(gptInputs([1], 0), { position: 0 }), 'BUSY');
    limits.resume();
    const r = await a.step(gptInputs([1], 0), { position: 0 });
    expect(r.outputs.logits.dims).toEqual([1, 1, GPT.vocab]);
    await Promise.all([a.close(), c.close()]);
  });

  it('(d) one peer id stops at its session quota while another peer still gets a slot', async () => {
    const { host } = await startServer({ limitOptions: { maxSessions: 4, maxSessionsPerPeer: 2 } });
    const addrs = host.node.getMultiaddrs();
    const span = refs(kvManifest, kvManifestCid, [0, 1]);
    const open = (from: GridHost): Promise<RemoteSession> => execClient.openSession(from.node, addrs, { fragments: span, maxLength: 16 });
    const mine = [await open(client), await open(client)];
    expect((await expectExecError(open(client), 'BUSY')).message).toMatch(/this peer already holds 2 sessions/);
    const other = await createGridHost({ network: 'local', clientMode: true, logger });
    hosts.push(other);
    const theirs = await open(other); // the node has slots left and this peer holds none
    const r = await theirs.step(gptInputs([1, 2], 0), { position: 0 });
    expect(r.outputs.logits.dims).toEqual([1, 2, GPT.vocab]);
    await mine[0].close();
    const again = await open(client); // a closed session gives its peer's slot back
    await Promise.all([mine[1].close(), again.close(), theirs.close()]);
  });

  it('(e) refuses max_length over the model\'s context and a prefill past max_length before running it', async () => {
    const { host } = await startServer();
    const addrs = host.node.getMultiaddrs();
    const span = refs(kvManifest, kvManifestCid, [0, 1]);
    expect(kvManifest.model.contextLength).toBe(GPT.maxPositions);
    const over = await expectExecError(execClient.openSession(client.node, addrs, { fragments: span, maxLength: GPT.maxPositions + 1 }), 'BAD_REQUEST');
    expect(over.message).toMatch(/max_length 65 is over the model's context of 64 positions/);
    const s = await execClient.openSession(client.node, addrs, { fragments: span, maxLength: 16 });
    const long = Array.from({ length: 20 }, (_, i) => i % GPT.vocab);
    expect((await expectExecError(s.step(gptInputs(long, 0), { position: 0 }), 'BAD_REQUEST')).message).toMatch(/chunk 0 would hold 20 positions, over max_length 16/);
    const r = await s.step(gptInputs([1, 2, 3], 0), { position: 0 }); // the session is as it was
    expect(r.outputs.logits.dims).toEqual([1, 3, GPT.vocab]);
    await s.close();
    // a span without a KV cache: the positions a step binds are capped at the context too
    const plain = await execClient.openSession(client.node, addrs, { fragments: refs(plainManifest, plainManifestCid, [0]) });
    const tooLong = Array.from({ length: GPT.maxPositions + 16 }, (_, i) => i % GPT.vocab);
    expect((await expectExecError(plain.step(gptInputs(tooLong, 0), { position: 0 }), 'BAD_REQUEST')).message).toMatch(/over the model's context of 64 positions/);
    await plain.close();
  });

  it('(g) a long prefill does not block the node: another session\'s step is answered while it runs', async () => {
    const bigFile = path.join(tmp.dir, 'gpt-big.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 256, heads: 4, vocab: 512, maxPositions: 1024, kvCache: true, seed: 3 }), bigFile);
    const bigCid = cidOfBytes(readFileSync(bigFile));
    files.set(bigCid, bigFile);
    const { host, server } = await startServer({ limitOptions: { threads: 1 } });
    const addrs = host.node.getMultiaddrs();
    const big = await execClient.openSession(client.node, addrs, { fragments: [bigCid], maxLength: 1024 });
    const small = await execClient.openSession(client.node, addrs, { fragments: refs(kvManifest, kvManifestCid, [0, 1]), maxLength: 16 });
    await small.step(gptInputs([1], 0), { position: 0 }); // its fragments are loaded
    const order: string[] = [];
    const prompt = Array.from({ length: 1000 }, (_, i) => i % 512);
    const long = big.step(gptInputs(prompt, 0), { position: 0, lastRowOnly: ['logits'] }).then(() => order.push('prefill'));
    const executor = await server.executors.get(bigCid);
    await waitFor(() => executor.queued > 0, 'the prefill to start running');
    const short = small.step(gptInputs([2], 1), { position: 1 }).then(() => order.push('step'));
    await Promise.all([long, short]);
    expect(order).toEqual(['step', 'prefill']);
    await Promise.all([big.close(), small.close()]);
  });

  it('sends errors to peers without local file paths', async () => {
    const broken = path.join(tmp.dir, 'broken-fragment.onnx');
    writeFileSync(broken, 'not an onnx model');
    const cid = cidOfBytes(Uint8Array.of(9, 9, 9));
    files.set(cid, broken);
    const { host } = await startServer();
    const err = await expectExecError(execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: [cid], maxLength: 8 }), 'EXECUTION_FAILED');
    expect(err.message).not.toContain(tmp.dir);
    expect(err.message).toMatch(/<local file>: onnxruntime cannot load it/);
  });
});
