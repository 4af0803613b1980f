/**
 * Issue 13, attacks 3, 4 and 7 (wire parts), run as an attacker would: a rogue peer built from the project's
 * own host and frame writer sends amplification frames to a real `gridpipe supply` process; a rogue supplier
 * (a libp2p host with an exec handler from project code) answers the real exec client with millions of
 * empty replay outputs; a peer announces big frames on many streams and never sends them. Each must fail
 * safely: an error reply or a failed session, memory growth well under 64 MB, the node still serving.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { multiaddr } from '@multiformats/multiaddr';
import type { Stream } from '@libp2p/interface';
import { writeVarint, varintLength } from '../../fragments/onnx/wire.js';
import { PROTOCOLS } from '../../proto/grid.js';
import type { GridHost } from '../../net/host.js';
import { ShareLimits } from '../../node/limits.js';
import { ExecServer, type ExecServerInit } from '../../node/exec/index.js';
import { ErrorCode, ExecClient, ExecError, FrameReader, writeFrame } from '../../net/exec/index.js';
import {
  ExecRequestType, ExecResponseType, encodeFrame, encodeStepReplyFrame, encodeStepRequestFrame, type DecodedRequest, type DecodedResponse,
} from '../../net/exec/codec.js';
import { DEFAULT_SCAN_LIMITS, scanRequest, scanRequestPrefix, scanResponse } from '../../net/exec/scan.js';
import type { WireTensor } from '../../proto/grid.js';
import { rssBytes, type RunningProcess } from '../helpers/process.js';
import { gptInputs } from '../helpers/decoder-inputs.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { startWireTarget, TARGET_GPT, type WireTarget } from '../helpers/wire-target.js';

const tmp = tempDir('gridpipe-wire-');
const MB = 1024 * 1024;
const GPT = TARGET_GPT;
let supplier: RunningProcess;
let supplierAddr: string;
let manifestCid: string;
let fragmentCid: string;
let target: WireTarget;

/** A length-prefixed frame: `envelopeField` (ExecRequest/ExecResponse body 2 = step) holding `head` then `count` copies of `unit`. */
function repeatedFrame(head: Uint8Array, unit: Uint8Array, count: number): Buffer {
  const bodyLength = head.byteLength + unit.byteLength * count;
  const payloadLength = 1 + varintLength(bodyLength) + bodyLength;
  const out = Buffer.allocUnsafe(varintLength(payloadLength) + payloadLength);
  let pos = writeVarint(out, 0, payloadLength);
  out[pos++] = 0x12; // field 2 (step), length-delimited
  pos = writeVarint(out, pos, bodyLength);
  out.set(head, pos);
  pos += head.byteLength;
  if (unit.byteLength === 1) out.fill(unit[0], pos);
  else {
    out.set(unit, pos);
    let filled = unit.byteLength;
    const total = unit.byteLength * count;
    while (filled < total) {
      const n = Math.min(filled, total - filled);
      out.copyWithin(pos + filled, pos, pos + n);
      filled += n;
    }
  }
  return out;
}

/** A client host of the test (stopped in afterAll). */
const clientHost = (): Promise<GridHost> => target.clientHost();

/** A raw exec stream to `addr` that sends whole frames and reads one reply each. */
async function rawStream(host: GridHost, addr: string): Promise<{ stream: Stream; send: (frame: Uint8Array | Uint8Array[]) => Promise<DecodedResponse> }> {
  const stream = await host.node.dialProtocol(multiaddr(addr), PROTOCOLS.exec);
  const reader = new FrameReader(stream, { maxFrameBytes: 64 * MB });
  return {
    stream,
    send: async (frame) => {
      await writeFrame(stream, Array.isArray(frame) ? frame : [frame]);
      const e = await reader.next();
      if (!e || e.kind !== 'frame') throw new Error('no reply');
      return ExecResponseType.decode(e.bytes) as unknown as DecodedResponse;
    },
  };
}

/** One honest prefill step on the supplier through the real client: the node still serves. */
async function honestStep(host: GridHost): Promise<number[]> {
  const session = await new ExecClient().openSession(host.node, multiaddr(supplierAddr), { fragments: [{ cid: fragmentCid, manifestCid, index: 0 }], maxLength: 16 });
  const r = await session.step(gptInputs([3, 1, 4], 0), { position: 0 });
  await session.close();
  return r.outputs.logits.dims as number[];
}

beforeAll(async () => {
  target = await startWireTarget(tmp.dir);
  ({ proc: supplier, addr: supplierAddr, manifestCid, fragmentCid } = target);
}, 120_000);

afterAll(async () => {
  await target?.stop();
  tmp.cleanup();
});

/** The payload of a length-prefixed frame given as chunks. */
function payload(chunks: Uint8Array[]): Uint8Array {
  const all = Buffer.concat(chunks);
  let i = 0;
  while (all[i] & 0x80) i++;
  return all.subarray(i + 1);
}

function floats(name: string, dims: number[]): WireTensor {
  const n = dims.reduce((a, b) => a * b, 1);
  return { name, dtype: 1, dims, data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer) };
}

describe('decoding limits (net/exec/scan.ts)', () => {
  it('passes real step and reply frames whole and at every prefix, and names the limit a bad one breaks', () => {
    const hidden = floats('hidden_states', [1, 96, 4096]); // 1.5 MiB
    const request = payload(encodeStepRequestFrame({
      sessionId: 's', stepId: 7n, position: 96, inputs: [hidden], want: ['logits'], lastRowOnly: ['logits'], topK: 1, chunkTokens: [96, 96, 96],
      replay: [{ position: 0, tensors: [hidden] }, { position: 96, tensors: [floats('x', [2, 3])] }],
      voucher: { payer: '0x' + '1'.repeat(40), payee: '0x' + '2'.repeat(40), cumulativeAmount: '10', deadline: 99n, signature: new Uint8Array(65) },
    }));
    expect(() => scanRequest(request)).not.toThrow();
    for (let n = 1; n < request.byteLength; n += 4093) expect(scanRequestPrefix(request.subarray(0, n))).toBeUndefined();
    const reply = payload(encodeStepReplyFrame({
      sessionId: 's', stepId: 7n, outputs: [floats('logits', [1, 1, 64])], queueMs: 1.5, computeMs: 2.5, charge: '12', receipt: new Uint8Array(200),
      replayOutputs: [{ position: 0, tensors: [hidden] }, { position: 96, tensors: [] }],
    }));
    expect(() => scanResponse(reply, { ...DEFAULT_SCAN_LIMITS, maxChunks: 2 })).not.toThrow();
    expect(() => scanResponse(reply, { ...DEFAULT_SCAN_LIMITS, maxChunks: 1 })).toThrow(/replay_outputs has more than 1 chunks/);

    const step = (inputs: WireTensor[], want?: string[]): Uint8Array => payload(encodeStepRequestFrame({ sessionId: 's', stepId: 1n, position: 0, inputs, want }));
    const bad = (frame: Uint8Array): ExecError => { try { scanRequest(frame); } catch (err) { return err as ExecError; } throw new Error('accepted'); };
    expect(bad(step([{ ...floats('a', [2, 2]), dims: [2, 3] }])).message).toMatch(/dims holding 6 elements \(24 bytes\) but 16 bytes/);
    expect(bad(step([{ ...floats('a', [1]), dims: [1, 1, 1, 1, 1, 1, 1, 1, 1] }])).message).toMatch(/more than 8 dims/);
    expect(bad(step([floats('a', [1])], ['w'.repeat(5000)])).code).toBe('TOO_LARGE');
    expect(bad(step([{ name: 'a', dtype: 8, dims: [0], data: new Uint8Array(0) }])).message).toMatch(/dtype 8, which cannot travel/);
    expect(bad(Uint8Array.of(0x12, 0x05, 0x22, 0x09)).code).toBe('BAD_REQUEST'); // a field overruns its message
  });
});

describe('bounded decoding against a real supplier process (attack 3)', () => {
  it('(a) a 59 MiB frame of 8.8M empty tensors gets an error reply; the supplier grows < 64 MB and still serves a step', async () => {
    const host = await clientHost();
    const pid = supplier.child.pid!;
    expect(await honestStep(host)).toEqual([1, 3, GPT.vocab]);
    const before = rssBytes(pid);
    // Step { session_id: "x", inputs: [{ dtype: 1, dims: [0] }, ...] }: 7 wire bytes per valid empty tensor
    const frame = repeatedFrame(Uint8Array.of(0x0a, 1, 0x78), Uint8Array.of(0x22, 5, 0x10, 1, 0x1a, 1, 0), 8_800_000);
    const raw = await rawStream(host, supplierAddr);
    const reply = await raw.send(frame);
    expect(rssBytes(pid) - before).toBeLessThan(64 * MB);
    const error = reply.error ?? reply.step?.error;
    expect(error?.code).toBe(ErrorCode.TOO_LARGE);
    expect(error?.message).toMatch(/more than \d+ tensors/);
    // the same stream goes on
    const closed = await raw.send(encodeFrame(ExecRequestType, { step: { sessionId: 'nope' } })[0]);
    expect(closed.step?.error?.code).toBe(ErrorCode.NOT_FOUND);
    await raw.stream.close();
    expect(await honestStep(host)).toEqual([1, 3, GPT.vocab]);
  });

  it('(b) a 57 MiB tensor of 60M packed 1-byte dims gets BAD_REQUEST (rank); the supplier grows < 64 MB and still serves', async () => {
    const host = await clientHost();
    const pid = supplier.child.pid!;
    const before = rssBytes(pid);
    const dims = 60_000_000;
    // Step { inputs: [{ dtype: 7, dims: [1, 1, 1, ...] (packed) }] }
    const tensorHead = Buffer.alloc(32);
    let p = 0;
    const dimsField = 1 + varintLength(dims) + dims;
    const tensorLength = 2 + dimsField;
    tensorHead[p++] = 0x22;
    p = writeVarint(tensorHead, p, tensorLength);
    tensorHead[p++] = 0x10; tensorHead[p++] = 7; // dtype int64
    tensorHead[p++] = 0x1a;
    p = writeVarint(tensorHead, p, dims);
    const frame = repeatedFrame(tensorHead.subarray(0, p), Uint8Array.of(1), dims);
    const raw = await rawStream(host, supplierAddr);
    const reply = await raw.send(frame);
    expect(rssBytes(pid) - before).toBeLessThan(64 * MB);
    const error = reply.error ?? reply.step?.error;
    expect(error?.code).toBe(ErrorCode.BAD_REQUEST);
    expect(error?.message).toMatch(/more than 8 dims/);
    await raw.stream.close();
    expect(await honestStep(host)).toEqual([1, 3, GPT.vocab]);
  });
});

describe('bounded decoding on the client (attack 4)', () => {
  it('(c) a rogue supplier replying with 29M empty replay outputs fails that session, not the client; RSS grows < 64 MB', async () => {
    const rogue = await target.clientHost(false);
    const count = 29_000_000;
    let crafted: Buffer | undefined;
    await rogue.node.handle(PROTOCOLS.exec, async (stream) => {
      const reader = new FrameReader(stream, { maxFrameBytes: 64 * MB });
      for (;;) {
        const e = await reader.next().catch(() => null);
        if (!e || e.kind !== 'frame') return;
        const req = ExecRequestType.decode(e.bytes) as unknown as DecodedRequest;
        if (req.open) await writeFrame(stream, encodeFrame(ExecResponseType, { opened: { sessionId: req.open.sessionId, maxLength: 16 } }));
        else if (req.step) await writeFrame(stream, [crafted!]).catch(() => undefined);
      }
    });
    // StepReply { step_id: 1, replay_outputs: [{}, {}, ...] } built before measuring
    crafted = repeatedFrame(Uint8Array.of(0x10, 1), Uint8Array.of(0x42, 0), count);
    const host = await clientHost();
    const session = await new ExecClient().openSession(host.node, rogue.node.getMultiaddrs(), { fragments: ['bafyrogue'], maxLength: 16 });
    const before = process.memoryUsage().rss;
    const err = await session.step(gptInputs([1], 0), { position: 0 }).then(() => undefined, (e: unknown) => e);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MB);
    expect(err).toBeInstanceOf(ExecError);
    expect((err as ExecError).code).not.toBe('BAD_REQUEST'); // a server fault: the scheduler fails over
    expect((err as ExecError).message).toMatch(/refused: reply\.step\.replay_outputs has more than 0 chunks/);
    expect(session.closed).toBe(true);
    crafted = undefined;
  });
});

describe('per-peer buffer cap (attack 7)', () => {
  /** An exec server in this process with the given buffer caps (no fragments). */
  async function capped(init: Partial<ExecServerInit>): Promise<{ server: ExecServer; addr: string }> {
    const host = await target.clientHost(false);
    const server = new ExecServer({ logger: testLogger(), limits: new ShareLimits({}, { memoryBytes: 1 << 30, cores: 1 }), resolve: () => undefined, ...init });
    await server.start(host.node);
    return { server, addr: host.node.getMultiaddrs()[0].toString() };
  }

  /** Opens `n` exec streams from `from` and on each announces a 60 MiB frame and sends 6 MiB of it. */
  async function announce(from: GridHost, addr: string, n: number): Promise<Stream[]> {
    const announced = 60 * MB;
    const prefix = Buffer.allocUnsafe(varintLength(announced));
    writeVarint(prefix, 0, announced);
    const part = Buffer.alloc(6 * MB, 0x22);
    const streams: Stream[] = [];
    for (let i = 0; i < n; i++) {
      const s = await from.node.dialProtocol(multiaddr(addr), PROTOCOLS.exec);
      streams.push(s);
      void writeFrame(s, [prefix, part]).catch(() => undefined);
    }
    return streams;
  }

  it('(f) big frames announced on many streams and never sent stay within the peer\'s cap', async () => {
    const cap = 16 * MB;
    const { server, addr } = await capped({ maxPeerBufferBytes: cap });
    try {
      const streams = await announce(await clientHost(), addr, 4);
      let peak = 0;
      await waitFor(() => {
        peak = Math.max(peak, server.peerBufferedBytes);
        return streams.filter((s) => s.status !== 'open').length >= 1;
      }, 'a stream over the peer\'s cap to be reset');
      // 4 × 6 MiB arrived from one peer with a 16 MiB cap: what passed it was dropped with its stream
      expect(peak).toBeLessThanOrEqual(cap);
      expect(server.peerBufferedBytes).toBeLessThanOrEqual(cap);
      expect(streams.filter((s) => s.status === 'open').length).toBeLessThan(4);
      for (const s of streams) s.abort(new Error('done'));
    } finally {
      await server.stop();
    }
  });

  it('(f) many peers together stay within the node\'s total', async () => {
    const total = 16 * MB;
    const registry = new Registry();
    const { server, addr } = await capped({ maxPeerBufferBytes: 14 * MB, maxTotalBufferBytes: total, registry });
    try {
      // two free peer ids, each under its own cap (2 × 6 MiB), together over the node's total
      const streams = [...await announce(await clientHost(), addr, 2), ...await announce(await clientHost(), addr, 2)];
      await waitFor(() => streams.filter((s) => s.status !== 'open').length >= 1, 'a stream over the node\'s total to be reset');
      expect(server.totalBufferedBytes).toBeLessThanOrEqual(total);
      const gauge = /gridpipe_exec_unread_bytes (\d+)/.exec(await registry.metrics());
      expect(Number(gauge?.[1])).toBe(server.totalBufferedBytes); // what an operator sees
      for (const s of streams) s.abort(new Error('done'));
    } finally {
      await server.stop();
    }
  });
});
