/**
 * Server-side batching (node/exec/batcher.ts) end to end: real libp2p hosts on 127.0.0.1, real onnxruntime,
 * clients built with ExecClient. Sessions of different prompt lengths step concurrently; each one's logits
 * must match the whole model run alone on its own (greedy tokens equal, logits within 1e-4), through a
 * failover that replays on a replacement node, and with a failing row in the batch.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { buildModel } from '../../fragments/builder/index.js';
import type { BuildOptions } from '../../fragments/builder/options.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ShareLimits } from '../../node/limits.js';
import { ExecServer } from '../../node/exec/index.js';
import { rowOf, stackRows, withoutPadding, type BatcherOptions } from '../../node/exec/batcher.js';
import { ExecClient, ExecError, type RemoteSession, type TensorMap } from '../../net/exec/index.js';
import { testLogger } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { gptInputs, int64, argmaxLast, maxAbsDiff, referenceDecode } from '../helpers/decoder-inputs.js';

const tmp = tempDir('gridpipe-batching-');
const logger = testLogger();
const GPT: BuildOptions = { arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: 64, maxPositions: 64, kvCache: true, seed: 7 };
const LLAMA: BuildOptions = { arch: 'llama', layers: 2, dModel: 32, heads: 4, kvHeads: 2, vocab: 64, maxPositions: 64, kvCache: true, seed: 3 };
/** Prompts of different lengths: the sessions' KV caches differ in length at every step. */
const PROMPTS = [[3, 14], [15, 9, 2, 6, 5], [35, 8, 9, 7, 9, 3, 2, 3, 8], [4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7, 9, 5]];
/**
 * Waits long enough that concurrent steps always meet however loaded the machine (they open only while other
 * sessions are active): the window binds, not the share of a session's interval.
 */
const WIDE_WAITS: BatcherOptions = { windowUs: 200_000, waitShare: Infinity, firstStepWaitMs: 200 };

interface Model { file: string; options: BuildOptions; manifest: Manifest; manifestCid: string }

const files = new Map<string, string>();
const hosts: GridHost[] = [];
const servers: ExecServer[] = [];
let client: GridHost;
let gpt: Model;
let llama: Model;
let plain: Model;
const execClient = new ExecClient({ stepTimeoutMs: 60_000 });

async function prepareModel(name: string, options: BuildOptions): Promise<Model> {
  const file = path.join(tmp.dir, `${name}.onnx`);
  await writeModel(buildModel(options), file);
  const { manifest, manifestCid, dir } = await fragmentModel(file, path.join(tmp.dir, name), { parts: 2 });
  for (const f of manifest.fragments) files.set(f.cid, path.join(dir, f.file));
  files.set(manifestCid, path.join(dir, 'manifest.json'));
  return { file, options, manifest, manifestCid };
}

async function startServer(batching: BatcherOptions | false = WIDE_WAITS): Promise<{ host: GridHost; server: ExecServer }> {
  const host = await createGridHost({ network: 'local', logger });
  hosts.push(host);
  const server = new ExecServer({ logger, limits: new ShareLimits({}, { memoryBytes: 1 << 30, cores: 2 }), resolve: (cid) => files.get(cid), batching });
  await server.start(host.node);
  servers.push(server);
  return { host, server };
}

function refs(m: Model, indices: number[]): { cid: string; manifestCid: string; index: number }[] {
  return indices.map((i) => ({ cid: m.manifest.fragments[i].cid, manifestCid: m.manifestCid, index: i }));
}

/** The whole model run alone, step by step with its own cache: tokens fed and logits per step. */
async function reference(m: Model, prompt: number[], steps: number): Promise<{ tokens: number[][]; logits: ort.Tensor[] }> {
  return referenceDecode(m.file, { layers: m.options.layers!, kvHeads: m.options.kvHeads ?? m.options.heads!, headDim: m.options.dModel! / m.options.heads! }, prompt, steps);
}

/** Steps a chain of remote sessions (a pipeline of spans): each one's outputs feed the next; the last returns logits. */
async function pipelineStep(chain: RemoteSession[], inputs: TensorMap, position: number, replay?: { position: number; inputs: TensorMap }[]): Promise<ort.Tensor> {
  let feed = inputs;
  for (const s of chain) {
    const r = await s.step(feed, { position, ...(replay ? { replay } : {}) });
    feed = r.outputs;
  }
  return feed.logits;
}

beforeAll(async () => {
  gpt = await prepareModel('gpt', GPT);
  llama = await prepareModel('llama', LLAMA);
  plain = await prepareModel('gpt-plain', { ...GPT, kvCache: false });
  client = await createGridHost({ network: 'local', logger });
  hosts.push(client);
});

afterAll(async () => {
  for (const s of servers) await s.stop().catch(() => undefined);
  await Promise.allSettled(hosts.map((h) => h.stop()));
  tmp.cleanup();
});

describe('batch tensors', () => {
  it('stacks rows with left padding along the positions axis and splits them back', () => {
    const a = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [1, 2, 2, 1]); // 2 heads × 2 positions
    const b = new ort.Tensor('float32', Float32Array.from([5, 6, 7, 8, 9, 10]), [1, 2, 3, 1]); // 2 heads × 3 positions
    const stacked = stackRows([a, b], 2, 3);
    expect(stacked.dims).toEqual([2, 2, 3, 1]);
    expect([...(stacked.data as Float32Array)]).toEqual([0, 1, 2, 0, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect([...(rowOf(stacked, 0, 2, 2).data as Float32Array)]).toEqual([1, 2, 3, 4]);
    expect(rowOf(stacked, 1, 2, 3).dims).toEqual([1, 2, 3, 1]);
    expect([...(rowOf(stacked, 1).data as Float32Array)]).toEqual([5, 6, 7, 8, 9, 10]);
    const masks = stackRows([int64([1, 1], [1, 2]), int64([1, 1, 1, 1], [1, 4])], 1, 4);
    expect([...(masks.data as BigInt64Array)].map(Number)).toEqual([0, 0, 1, 1, 1, 1, 1, 1]);
  });

  it('re-stacks rows that carry padding of their own without it, and drops a row\'s padding on request', () => {
    // row 0 of `stacked` holds 1 position of padding in front of its 2 real ones; a new batch with a 2-position row
    const padded = rowOf(stacked3(), 0);
    const c = new ort.Tensor('float32', Float32Array.from([11, 12, 13, 14]), [1, 2, 2, 1]);
    const restacked = stackRows([padded, c], 2, 2, [2, 2]);
    expect([...(restacked.data as Float32Array)]).toEqual([1, 2, 3, 4, 11, 12, 13, 14]);
    const program = { kv: [{ input: 'past', seqAxis: 2 }] } as unknown as Parameters<typeof withoutPadding>[1];
    const unpadded = withoutPadding(new Map([['past', padded]]), program, 1).get('past')!;
    expect(unpadded.dims).toEqual([1, 2, 2, 1]);
    expect([...(unpadded.data as Float32Array)]).toEqual([1, 2, 3, 4]);
  });
});

/** Two rows (2 and 3 positions) stacked to 3 positions: row 0 gets one position of padding. */
function stacked3(): ort.Tensor {
  const a = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [1, 2, 2, 1]);
  const b = new ort.Tensor('float32', Float32Array.from([5, 6, 7, 8, 9, 10]), [1, 2, 3, 1]);
  return stackRows([a, b], 2, 3);
}

describe('batched decode over libp2p', () => {
  for (const [label, which, split] of [['gpt, 2 fragments on 2 nodes', () => gpt, true], ['llama, a 2-fragment span on one node', () => llama, false]] as const) {
    it(`sessions of different prompt lengths get the logits they get alone (${label})`, async () => {
      const m = which();
      const steps = 8;
      const refsBySession = await Promise.all(PROMPTS.map((p) => reference(m, p, steps)));
      const nodes = split ? [await startServer(), await startServer()] : [await startServer()];
      const spans = split ? [[0], [1]] : [[0, 1]];
      const chains = await Promise.all(PROMPTS.map(async () => Promise.all(nodes.map((n, i) => execClient.openSession(client.node, n.host.node.getMultiaddrs(), { fragments: refs(m, spans[i]), maxLength: 64 })))));
      const positions = PROMPTS.map(() => 0);
      for (let s = 0; s < steps; s++) {
        const logits = await Promise.all(chains.map((chain, k) => pipelineStep(chain, gptInputs(refsBySession[k].tokens[s], positions[k]), positions[k])));
        logits.forEach((l, k) => {
          expect(maxAbsDiff(l, refsBySession[k].logits[s]), `session ${k} step ${s}`).toBeLessThan(1e-4);
          expect(argmaxLast(l)).toBe(argmaxLast(refsBySession[k].logits[s]));
          positions[k] += refsBySession[k].tokens[s].length;
        });
      }
      for (const n of nodes) {
        // the decode steps met in batches of rows whose KV caches had different lengths
        expect(n.server.sessions.batcher!.stats.batches).toBeGreaterThan(0);
        expect(n.server.sessions.batcher!.stats.batchedRows).toBeGreaterThan(n.server.sessions.batcher!.stats.batches);
        // once the same sessions met again, their stacked caches were fed as they were (no KV copy)
        expect(n.server.sessions.batcher!.stats.residentRuns).toBeGreaterThan(0);
      }
      await Promise.all(chains.flat().map((s) => s.close()));
    });
  }

  it('a supplier killed mid-decode: the replacement replays each session and its batched steps stay equal', async () => {
    const prompts = PROMPTS.slice(1);
    const steps = 10;
    const killAt = 5;
    const refsBySession = await Promise.all(prompts.map((p) => reference(gpt, p, steps)));
    const first = await startServer();
    const replacement = await startServer();
    let sessions = await Promise.all(prompts.map(() => execClient.openSession(client.node, first.host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
    const positions = prompts.map(() => 0);
    const history: { position: number; inputs: TensorMap }[][] = prompts.map(() => []);
    for (let s = 0; s < steps; s++) {
      if (s === killAt) {
        await first.server.stop();
        await first.host.stop();
        sessions = await Promise.all(prompts.map(() => execClient.openSession(client.node, replacement.host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
      }
      const logits = await Promise.all(sessions.map((session, k) => {
        const inputs = gptInputs(refsBySession[k].tokens[s], positions[k]);
        // the first step on the replacement replays the history it missed, chunk by chunk
        const replay = s === killAt ? history[k] : undefined;
        return pipelineStep([session], inputs, positions[k], replay);
      }));
      logits.forEach((l, k) => {
        expect(maxAbsDiff(l, refsBySession[k].logits[s]), `session ${k} step ${s}`).toBeLessThan(1e-4);
        expect(argmaxLast(l)).toBe(argmaxLast(refsBySession[k].logits[s]));
        history[k].push({ position: positions[k], inputs: gptInputs(refsBySession[k].tokens[s], positions[k]) });
        positions[k] += refsBySession[k].tokens[s].length;
      });
    }
    expect(first.server.sessions.batcher!.stats.batches).toBeGreaterThan(0);
    expect(replacement.server.sessions.batcher!.stats.batches).toBeGreaterThan(0);
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('a session that rewinds after batched steps (its padded cache truncated) gets the logits it gets alone', async () => {
    const steps = 6;
    const rewindAt = 4; // after step 3, session 0 sends step 2 again, then goes on from there
    const refsBySession = await Promise.all(PROMPTS.map((p) => reference(gpt, p, steps)));
    const { host, server } = await startServer();
    const sessions = await Promise.all(PROMPTS.map(() => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
    const starts = PROMPTS.map(() => [0]);
    const plan = PROMPTS.map((_, k) => (k === 0 ? [0, 1, 2, 3, 2, 3, 4, 5] : [0, 1, 2, 3, 4, 5]));
    for (let round = 0; round < Math.max(...plan.map((p) => p.length)); round++) {
      const logits = await Promise.all(sessions.map(async (session, k) => {
        const s = plan[k][round];
        if (s === undefined) return undefined;
        starts[k][s + 1] = starts[k][s] + refsBySession[k].tokens[s].length;
        return { s, l: await pipelineStep([session], gptInputs(refsBySession[k].tokens[s], starts[k][s]), starts[k][s]) };
      }));
      logits.forEach((r, k) => {
        if (!r) return;
        expect(maxAbsDiff(r.l, refsBySession[k].logits[r.s]), `session ${k} step ${r.s} (round ${round})`).toBeLessThan(1e-4);
        expect(argmaxLast(r.l)).toBe(argmaxLast(refsBySession[k].logits[r.s]));
      });
      if (round === rewindAt - 1) expect(server.sessions.batcher!.stats.residentRuns).toBeGreaterThan(0); // caches were padded rows of a batch
    }
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('a session that sits out while the others go on, then comes back, gets the logits it gets alone', async () => {
    const steps = 7;
    const refsBySession = await Promise.all(PROMPTS.map((p) => reference(gpt, p, steps)));
    const { host, server } = await startServer();
    const sessions = await Promise.all(PROMPTS.map(() => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
    const next = PROMPTS.map(() => 0);
    const positions = PROMPTS.map(() => 0);
    for (let round = 0; round < steps + 2; round++) {
      // session 0 sits out rounds 3 and 4: the batch changes without it (its row is copied out of the old batch)
      const active = PROMPTS.map((_, k) => next[k] < steps && !(k === 0 && (round === 3 || round === 4)));
      const logits = await Promise.all(sessions.map((session, k) => (active[k] ? pipelineStep([session], gptInputs(refsBySession[k].tokens[next[k]], positions[k]), positions[k]) : undefined)));
      logits.forEach((l, k) => {
        if (!l) return;
        expect(maxAbsDiff(l, refsBySession[k].logits[next[k]]), `session ${k} step ${next[k]}`).toBeLessThan(1e-4);
        positions[k] += refsBySession[k].tokens[next[k]].length;
        next[k]++;
      });
      if (round === 3) {
        // the batch went on without session 0: its cache is its own again, not a padded view of the old batch's buffers
        const sitting = server.sessions.get(client.peerId.toString(), sessions[0].sessionId);
        expect(sitting.kvPadding).toBe(0);
        for (const t of sitting.kv.values()) expect((t.data as Float32Array).byteLength).toBe((t.data as Float32Array).buffer.byteLength);
      }
    }
    expect(next).toEqual(PROMPTS.map(() => steps));
    expect(server.sessions.batcher!.stats.residentRuns).toBeGreaterThan(0);
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('a step that fails inside a batch fails only its own session, and the others go on', async () => {
    const steps = 6;
    const refsBySession = await Promise.all(PROMPTS.map((p) => reference(gpt, p, steps)));
    const { host, server } = await startServer();
    const sessions = await Promise.all(PROMPTS.map(() => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
    const positions = PROMPTS.map(() => 0);
    for (let s = 0; s < steps; s++) {
      // round 4: session 1 sends a token id past the vocabulary (in a batch whose caches were stacked as they
      // were: the others' caches must come back from the failed run intact); then the others take one more step
      const bad = s === steps - 2 ? 1 : -1;
      const results = await Promise.allSettled(sessions.map((session, k) => {
        if (k === 1 && s > steps - 2) return Promise.resolve(undefined);
        const tokens = k === bad ? [GPT.vocab! + 1000] : refsBySession[k].tokens[s];
        return pipelineStep([session], gptInputs(tokens, positions[k]), positions[k]);
      }));
      results.forEach((r, k) => {
        if (k === bad) {
          expect(r.status).toBe('rejected');
          expect((r as PromiseRejectedResult).reason).toBeInstanceOf(ExecError);
          expect(((r as PromiseRejectedResult).reason as ExecError).code).toBe('BAD_REQUEST'); // a token past the vocabulary: the caller's error (node/exec/run-failure.ts)
          return;
        }
        expect(r.status, `session ${k} step ${s}`).toBe('fulfilled');
        const l = (r as PromiseFulfilledResult<ort.Tensor | undefined>).value;
        if (!l) return;
        expect(maxAbsDiff(l, refsBySession[k].logits[s])).toBeLessThan(1e-4);
        positions[k] += refsBySession[k].tokens[s].length;
      });
    }
    expect(server.sessions.batcher!.stats.batches).toBeGreaterThan(0);
    expect(server.sessions.batcher!.stats.residentRuns).toBeGreaterThan(0);
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('a span without KV cache batches rows of equal shape with the same results', async () => {
    const local = await ort.InferenceSession.create(plain.file, { executionProviders: ['cpu'] });
    const { host, server } = await startServer();
    const sessions = await Promise.all(PROMPTS.map(() => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(plain, [0, 1]) })));
    for (let s = 0; s < 3; s++) {
      // every session sends a whole sequence of the same length (6 + s tokens), each its own tokens
      const sequences = PROMPTS.map((p, k) => Array.from({ length: 6 + s }, (_, i) => p[i % p.length] + k));
      const logits = await Promise.all(sessions.map((session, k) => pipelineStep([session], gptInputs(sequences[k], 0), 0)));
      for (const [k, l] of logits.entries()) {
        const expected = (await local.run(gptInputs(sequences[k], 0))).logits;
        expect(maxAbsDiff(l, expected), `session ${k} step ${s}`).toBeLessThan(1e-4);
      }
    }
    expect(server.sessions.batcher!.stats.batches).toBeGreaterThan(0);
    await Promise.all(sessions.map((c) => c.close()));
    await local.release();
  });

  it('sessions whose steps come further apart than the activity floor (100 ms) still learn their intervals and meet', async () => {
    // The batcher's default waits (half an interval at the pipeline's head). Each round: A steps, B 20 ms later, the
    // next round 300 ms after the last. B first looks inactive between its steps (no interval yet, 280 ms > 100 ms);
    // it must still learn its interval at its second step, so that from the third round A waits for it.
    const rounds = 6;
    const refsBySession = await Promise.all(PROMPTS.slice(0, 2).map((p) => reference(gpt, p, rounds)));
    const { host, server } = await startServer({ windowUs: 200_000 });
    const [a, b] = await Promise.all([0, 1].map(() => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 })));
    const positions = [0, 0];
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    for (let round = 0; round < rounds; round++) {
      const started = performance.now();
      const stepOf = (k: number, session: RemoteSession): Promise<ort.Tensor> => pipelineStep([session], gptInputs(refsBySession[k].tokens[round], positions[k]), positions[k]);
      const first = stepOf(0, a);
      await sleep(20);
      const logits = await Promise.all([first, stepOf(1, b)]);
      logits.forEach((l, k) => {
        expect(maxAbsDiff(l, refsBySession[k].logits[round])).toBeLessThan(1e-4);
        positions[k] += refsBySession[k].tokens[round].length;
      });
      await sleep(Math.max(0, 300 - (performance.now() - started)));
    }
    // rounds 3.. ran A and B as one batch (rounds 1 and 2 taught the batcher their intervals)
    expect(server.sessions.batcher!.stats.batches).toBeGreaterThanOrEqual(rounds - 2);
    await Promise.all([a.close(), b.close()]);
  });

  it('solo sessions (OpenSession.solo) never join a batch, while the others beside them still batch', async () => {
    const steps = 8;
    // four sessions that may batch (the prompts of different lengths) and two solo ones beside them
    const prompts = [...PROMPTS, PROMPTS[0], PROMPTS[2]];
    const solo = prompts.map((_, k) => k >= PROMPTS.length);
    const refsBySession = await Promise.all(prompts.map((p) => reference(gpt, p, steps)));
    const { host, server } = await startServer();
    const sessions = await Promise.all(prompts.map((_, k) => execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64, solo: solo[k] })));
    const positions = prompts.map(() => 0);
    for (let s = 0; s < steps; s++) {
      const logits = await Promise.all(sessions.map((session, k) => pipelineStep([session], gptInputs(refsBySession[k].tokens[s], positions[k]), positions[k])));
      logits.forEach((l, k) => {
        expect(maxAbsDiff(l, refsBySession[k].logits[s]), `session ${k} step ${s}`).toBeLessThan(1e-4);
        positions[k] += refsBySession[k].tokens[s].length;
      });
    }
    await Promise.all(sessions.map((session) => session.close()));
    const stats = server.sessions.batcher!.stats;
    // only the batchable sessions' steps went through the batcher (no solo row ever joined a batch), and they met
    expect(stats.batchedRows + stats.singleRuns).toBe(PROMPTS.length * steps);
    expect(stats.batches).toBeGreaterThan(0);
  });

  it('a lone session takes the unbatched path, and batching off runs every step alone', async () => {
    const steps = 6;
    const { tokens, logits } = await reference(gpt, PROMPTS[2], steps);
    for (const batching of [WIDE_WAITS, false] as const) {
      const { host, server } = await startServer(batching);
      const session = await execClient.openSession(client.node, host.node.getMultiaddrs(), { fragments: refs(gpt, [0, 1]), maxLength: 64 });
      let position = 0;
      for (let s = 0; s < steps; s++) {
        const l = await pipelineStep([session], gptInputs(tokens[s], position), position);
        expect(maxAbsDiff(l, logits[s])).toBeLessThan(1e-4);
        position += tokens[s].length;
      }
      await session.close();
      if (batching) expect(server.sessions.batcher!.stats).toMatchObject({ batches: 0, batchedRows: 0, singleRuns: steps });
      else expect(server.sessions.batcher).toBeUndefined();
    }
  });
});
