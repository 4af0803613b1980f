/**
 * Issue 21, the fuzzers over the wire: a real `gridpipe supply` process is fed malformed exec frames (valid
 * frames mutated, raw bytes, and well-formed steps of an open session with wrong tensors, so onnxruntime sees
 * bad inputs too) and malformed blob requests, each on real libp2p streams, while an honest client runs
 * prefill steps against it in parallel. Every frame gets a decodable answer (an error with a code and a
 * message, or a reply), the honest client's logits stay bit-for-bit those of the first run, and the
 * supplier's memory stays bounded. The normal run sends a few hundred inputs; `npm run fuzz` 10,000 each.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { multiaddr } from '@multiformats/multiaddr';
import { PROTOCOLS } from '../../proto/grid.js';
import type { GridHost } from '../../net/host.js';
import { ExecClient, FrameReader, writeFrame } from '../../net/exec/index.js';
import { ExecRequestType, ExecResponseType, encodeStepRequestFrame, longToBigInt, type DecodedResponse } from '../../net/exec/codec.js';
import { lengthPrefixed } from '../../net/wire/frame-reader.js';
import { decodeBlobResponse, encodeBlobRequest } from '../../net/store/blob-codec.js';
import type { WireTensor } from '../../proto/wire.js';
import { rssBytes, type RunningProcess } from '../helpers/process.js';
import { gptInputs } from '../helpers/decoder-inputs.js';
import { tempDir } from '../helpers/tmp.js';
import { startWireTarget, type WireTarget } from '../helpers/wire-target.js';
import { payload, requestFrame, tensor } from './arbitraries.js';
import { FUZZ_RUNS, LONG_RUN, fuzzParameters, hostileBytes, outcomeCounts, reportFuzz } from './harness.js';

const tmp = tempDir('gridpipe-fuzz-wire-');
const MB = 1024 * 1024;
const TIMEOUT = LONG_RUN ? 3_600_000 : 240_000;
/** Supplier memory a whole fuzz run may add (its warm-up counted first). */
const RSS_GROWTH_LIMIT = 96 * MB;
/** Blob requests in the normal run: each is a stream of its own (about 0.1 s here), so fewer than exec frames. */
const BLOB_RUNS = 100;

let supplier: RunningProcess;
let supplierAddr: string;
let manifestCid: string;
let fragmentCid: string;
let target: WireTarget;

const clientHost = (): Promise<GridHost> => target.clientHost();

/** One honest prefill step through the real client: the logits' bytes. */
async function honestLogits(host: GridHost): Promise<Uint8Array> {
  const session = await new ExecClient().openSession(host.node, multiaddr(supplierAddr), { fragments: [{ cid: fragmentCid, manifestCid, index: 0 }], maxLength: 16 });
  try {
    const r = await session.step(gptInputs([3, 1, 4, 1, 5], 0), { position: 0 });
    const data = r.outputs.logits.data as Float32Array;
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  } finally {
    await session.close();
  }
}

/**
 * Honest steps in a loop until `stop()` says so; each must give `reference`'s bytes. Resolves with the count.
 */
function honestTraffic(host: GridHost, reference: Uint8Array): { stop: () => Promise<number> } {
  let running = true;
  let steps = 0;
  const loop = (async () => {
    while (running) {
      const logits = await honestLogits(host);
      expect(Buffer.from(logits).equals(Buffer.from(reference)), 'honest logits unchanged while fuzzed').toBe(true);
      steps++;
    }
  })();
  return { stop: async () => { running = false; await loop; return steps; } };
}

/** An exec stream that answers each frame with what the server sent for it (up to a sentinel's reply). */
class ExecProbe {
  private stream!: Awaited<ReturnType<GridHost['node']['dialProtocol']>>;
  private reader!: FrameReader;
  private sentinel = 1_000_000_000_000n;
  reopened = 0;

  constructor(private readonly host: GridHost) {}

  async open(): Promise<void> {
    this.stream = await this.host.node.dialProtocol(multiaddr(supplierAddr), PROTOCOLS.exec);
    this.reader = new FrameReader(this.stream, { maxFrameBytes: 64 * MB });
  }

  /**
   * Sends `payload` as one frame, then a step of an unknown session (the sentinel), and returns the replies
   * that came before the sentinel's answer. A stream the server closed is reopened (and counted).
   */
  async send(payload: Uint8Array): Promise<DecodedResponse[]> {
    const id = ++this.sentinel;
    const sentinel = encodeStepRequestFrame({ sessionId: `sentinel-${id}`, stepId: id, position: 0, inputs: [] });
    try {
      await writeFrame(this.stream, [lengthPrefixed(payload), ...sentinel]);
      const replies: DecodedResponse[] = [];
      while (true) {
        const e = await this.reader.next();
        if (!e) throw new Error('stream ended');
        expect(e.kind, 'the server answers in whole frames').toBe('frame');
        if (e.kind !== 'frame') continue;
        const r = ExecResponseType.decode(e.bytes) as unknown as DecodedResponse;
        if (r.step && longToBigInt(r.step.stepId) === id) {
          expect(r.step.error?.message).toMatch(/sentinel/);
          return replies;
        }
        replies.push(r);
      }
    } catch (err) {
      this.reopened++;
      this.stream.abort(err as Error);
      await this.open();
      return [];
    }
  }

  async close(): Promise<void> {
    await this.stream.close().catch(() => undefined);
  }
}

/** Every answer to a hostile frame: a decodable reply; an error with a code and a message that says something. */
function expectClearAnswers(replies: DecodedResponse[]): number {
  let errors = 0;
  for (const r of replies) {
    const err = r.error ?? r.step?.error;
    if (err) {
      errors++;
      expect(err.code, 'an error reply carries a code').toBeGreaterThan(0);
      expect(err.message.length, 'an error reply says what was wrong').toBeGreaterThan(8);
    } else {
      expect(r.step ?? r.opened, 'a reply that is not an error is a step reply or an opened').toBeTruthy();
    }
  }
  return errors;
}

beforeAll(async () => {
  // The fuzzer is one peer sending thousands of hostile frames on purpose: the garbage limit (net/peer-guard.ts,
  // test/security/peer-guard.test.ts) would hang it up after 16; what is tested here is that decoding holds.
  target = await startWireTarget(tmp.dir, ['--peer-garbage-limit', '1000000000', '--peer-stream-limit', '1000000000']);
  ({ proc: supplier, addr: supplierAddr, manifestCid, fragmentCid } = target);
}, 120_000);

afterAll(async () => {
  await target?.stop();
  tmp.cleanup();
});

describe('a supplier process fed hostile streams keeps serving honest traffic', () => {
  it('answers every hostile exec frame, and honest prefill steps stay bit-for-bit the same', async () => {
    const honest = await clientHost();
    const reference = await honestLogits(honest);
    for (let i = 0; i < 3; i++) await honestLogits(honest); // warm-up before the memory baseline
    const rssBefore = rssBytes(supplier.child.pid!);

    const attacker = await clientHost();
    const probe = new ExecProbe(attacker);
    await probe.open();
    const traffic = honestTraffic(honest, reference);
    let frames = 0;
    let errors = 0;
    await fc.assert(fc.asyncProperty(hostileBytes(requestFrame), async (bytes) => {
      const replies = await probe.send(bytes);
      errors += expectClearAnswers(replies);
      frames++;
    }), fuzzParameters());

    // Well-formed steps of a session this stream opened, with tensors the fragment does not expect.
    const sessionOpen = ExecRequestType.encode(ExecRequestType.fromObject({ open: { sessionId: 'fuzzed', fragments: [{ cid: fragmentCid, manifestCid, index: 0 }], maxLength: 32 } })).finish();
    const opened = await probe.send(sessionOpen);
    expect(opened[0]?.opened?.sessionId).toBe('fuzzed');
    const honestInputs = Object.entries(gptInputs([3, 1, 4], 0)).map(([name, t]): WireTensor => {
      const data = t.data as BigInt64Array;
      return { name, dtype: 7, dims: [...t.dims], data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
    });
    const badInputs = fc.oneof(
      fc.array(tensor, { maxLength: 4 }),
      fc.tuple(fc.subarray(honestInputs), fc.array(tensor, { maxLength: 2 })).map(([a, b]) => [...a, ...b]),
      fc.tuple(fc.constantFrom(...honestInputs), tensor).map(([good, bad]) => [...honestInputs.filter((t) => t !== good), { ...bad, name: good.name }]),
    );
    let stepReplies = 0;
    await fc.assert(fc.asyncProperty(badInputs, fc.nat({ max: 40 }), async (inputs, position) => {
      const step = encodeStepRequestFrame({ sessionId: 'fuzzed', stepId: 0n, position, inputs, want: ['logits'] });
      const replies = await probe.send(payload(step));
      errors += expectClearAnswers(replies);
      stepReplies += replies.length;
    }), fuzzParameters());
    await probe.close();

    const honestSteps = await traffic.stop();
    expect(await honestLogits(honest)).toEqual(reference);
    const rssAfter = rssBytes(supplier.child.pid!);
    console.log(`fuzz supplier exec: ${frames} hostile frames + ${FUZZ_RUNS} bad steps, ${errors} error replies, ${stepReplies} step replies, ${probe.reopened} streams reopened; ${honestSteps} honest steps in parallel; supplier RSS ${((rssAfter - rssBefore) / MB).toFixed(1)} MiB growth`);
    reportFuzz({ target: 'supplier exec stream', inputs: frames + FUZZ_RUNS, outcomes: { 'error replies': errors, 'step replies': stepReplies }, honest: honestSteps, rssGrowthMiB: Math.round((rssAfter - rssBefore) / MB * 10) / 10 });
    expect(honestSteps).toBeGreaterThan(0);
    expect(stepReplies, 'every well-formed step gets its reply').toBe(FUZZ_RUNS);
    expect(rssAfter - rssBefore).toBeLessThan(RSS_GROWTH_LIMIT);
  }, TIMEOUT);

  it('answers every hostile blob request with a chunk or an error, and keeps serving fragments', async () => {
    const attacker = await clientHost();
    const honest = await clientHost();
    const reference = await honestLogits(honest);
    const rssBefore = rssBytes(supplier.child.pid!);
    const blobRequest = fc.record({
      cid: fc.oneof(fc.constant(fragmentCid), fc.string({ maxLength: 80 })), offset: fc.oneof(fc.nat(), fc.constant(0)), maxChunk: fc.oneof(fc.nat(), fc.constantFrom(0, 1024, 4096)),
    }).map(encodeBlobRequest);
    const traffic = honestTraffic(honest, reference);
    const outcomes = new Map<string, number>();
    await fc.assert(fc.asyncProperty(hostileBytes(blobRequest), async (bytes) => {
      const stream = await attacker.node.dialProtocol(multiaddr(supplierAddr), PROTOCOLS.blob);
      const reader = new FrameReader(stream, { maxFrameBytes: 2 * MB });
      await writeFrame(stream, [lengthPrefixed(bytes)]);
      await stream.close(); // one request per stream, as fetchBlob sends it
      let outcome = 'ended without an answer';
      while (true) {
        const e = await reader.next().catch(() => null);
        if (!e || e.kind !== 'frame') break;
        const r = decodeBlobResponse(e.bytes);
        if (r.error) {
          expect(r.error.message.length).toBeGreaterThan(8);
          outcome = r.error.code;
          break;
        }
        outcome = 'chunk';
        if (r.chunk.last) break;
      }
      reader.detach();
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }), fuzzParameters(LONG_RUN ? FUZZ_RUNS : BLOB_RUNS));
    const honestSteps = await traffic.stop();
    const rssAfter = rssBytes(supplier.child.pid!);
    console.log(`fuzz supplier blob: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}; ${honestSteps} honest steps in parallel; supplier RSS ${((rssAfter - rssBefore) / MB).toFixed(1)} MiB growth`);
    reportFuzz({ target: 'supplier blob stream', inputs: [...outcomes.values()].reduce((a, b) => a + b, 0), outcomes: outcomeCounts(outcomes), honest: honestSteps, rssGrowthMiB: Math.round((rssAfter - rssBefore) / MB * 10) / 10 });
    expect(outcomes.get('ended without an answer') ?? 0, 'every request that arrived whole gets an answer').toBe(0);
    expect(honestSteps).toBeGreaterThan(0);
    expect(rssAfter - rssBefore).toBeLessThan(RSS_GROWTH_LIMIT);
  }, TIMEOUT);
});
