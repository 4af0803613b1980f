/**
 * The `/gridpipe/exec/1.0.0` handler. One stream per session: the client opens a session on a span of
 * fragments, sends steps, closes it (or ends the stream, which closes it too). Frames are length-prefixed
 * protobuf (`ExecRequest` in, `ExecResponse` out), each under a size limit. A bad frame (garbage, oversized,
 * wrong body, wrong tensors, unknown session) gets an error reply with a code and a message and the stream
 * goes on; nothing a peer sends can take down another peer's session or the node.
 */
import type { Connection, Libp2p, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { PROTOCOLS, type WireTensor } from '../../proto/wire.js';
import type { Manifest } from '../../fragments/manifest.js';
import type { ShareLimits } from '../limits.js';
import {
  encodeFrame, encodeStepReplyFrame, frameBytes, ExecResponseType, FrameReader, longToBigInt, toWireTensor, writeFrame,
  fromDecodedSampling, fromDecodedVoucher, type DecodedRequest, type DecodedStep, type WireVoucher,
} from '../../net/exec/codec.js';
import { ErrorCode, ExecError, toExecError } from '../../net/exec/errors.js';
import { ExecutorPool, type FragmentResolver, type ProviderChoice } from './executor.js';
import { ExecMetrics } from './metrics.js';
import { ByteBudgets } from '../../net/wire/budget.js';
import { peerSafeMessage } from './redact.js';
import { DEFAULT_SCAN_LIMITS, scanRequestPrefix, type ScanLimits } from '../../net/exec/scan.js';
import { decodeRequestFrame } from '../../net/exec/decode.js';
import { SessionManager, type ExecSession } from './sessions.js';
import { StepBatcher, type BatcherOptions } from './batcher.js';
import { loadSpan, ManifestCache } from './span.js';
import { ortToWire } from '../../net/exec/tensors.js';
import { ChainForwarder } from './forwarding.js';
import { epochMs, stepTraceWriter } from '../../net/step-trace.js';
import { checkExpertCallRows } from './expert-rows.js';
import { fromDecodedHop } from '../../net/exec/codec.js';
import { compressWireTensor, WireEncoding, type WireEncodingCode } from '../../net/exec/wire-compression.js';
import type { PeerGuard } from '../../net/peer-guard.js';

/** What a paid step is about, for the payment hook. */
export interface PaidStepInfo {
  /** The remote peer. */
  owner: string;
  sessionId: string;
  stepId: bigint;
  /** The span's fragment CIDs, in order. */
  cids: string[];
  /** The manifest the span was opened from and the span's fragment indices in it (undefined: none named). */
  manifest?: Manifest;
  start: number;
  end: number;
  voucher?: WireVoucher;
  /** New positions per chunk, as the client declared them. */
  chunkTokens: number[];
  /** Chunks the step runs (replay chunks + 1). */
  chunks: number;
  /** The reply comes from the reply cache (a retried step id): nothing new to charge. */
  cached: boolean;
}

/** A session being opened on a paying server, for the payment hook. */
export interface PaidOpenInfo {
  /** The remote peer. */
  owner: string;
  voucher?: WireVoucher;
}

/** A paid step let through: settle it when it ran, cancel it when it failed. */
export interface PaidStepTicket {
  /** What the step costs, base units. */
  charge: bigint;
  /** Counts the work as delivered; returns the signed receipt (encoded SignedReceipt) when the node signs them. */
  settle(io: { inputs: WireTensor[]; outputs: WireTensor[] }): Promise<Uint8Array | undefined>;
  cancel(): Promise<void>;
}

/** Payment for steps (node/payments): asked before each step runs; throws an ExecError to refuse it. */
export interface StepPaymentHook {
  admit(step: PaidStepInfo): Promise<PaidStepTicket>;
  /** Asked before a session opens; throws an ExecError (PAYMENT_REQUIRED) to refuse it. */
  admitOpen?(open: PaidOpenInfo): Promise<void>;
}

export interface ExecServerInit {
  /** Local path of a hosted fragment (or manifest JSON) by CID; undefined when not hosted. */
  resolve: FragmentResolver;
  limits: ShareLimits;
  /** Metrics go here (a private registry when absent). */
  registry?: Registry;
  logger?: Logger;
  /** Execution provider to try first (default 'auto': CUDA, WebGPU when available); falls back to CPU, logged. */
  provider?: ProviderChoice;
  /**
   * Let onnxruntime's worker threads spin between the ops of a run instead of sleeping: lower latency per step
   * (decode runs hundreds of small ops); they park when the run returns. Default false: on a machine shared
   * with other busy processes, spinning threads take cores those need.
   */
  allowSpinning?: boolean;
  /** Batching of concurrent sessions' steps per span (batcher.ts; default on, window ≤ 200 ms and half an interval, 16 rows); false: off. */
  batching?: BatcherOptions | false;
  /** Run each fragment's onnxruntime session in a worker thread, off the event loop (default true). */
  offThread?: boolean;
  /** Off-thread runs measured shorter than this (ms) move to the main thread (executor.ts; default 20, 0: never). */
  inlineBelowMs?: number;
  /** Largest step frame, request or reply (default 64 MiB). */
  maxStepFrameBytes?: number;
  /** Largest open/close frame (default 1 MiB). */
  maxControlFrameBytes?: number;
  /** Most unread bytes held per stream (default maxStepFrameBytes + 1 MiB). */
  maxBufferBytes?: number;
  /** Idle TTL of a session (default 5 minutes). */
  sessionTtlMs?: number;
  /** Replies kept per session for step-id dedup (default 2). */
  replyCache?: number;
  /** Cap on KV cache held by all sessions (default `limits.maxMemoryBytes`). */
  maxMemoryBytes?: number;
  /** Exec streams a connection may hold open (default 256; their unread bytes share maxPeerBufferBytes). */
  maxInboundStreams?: number;
  /**
   * Unread bytes all exec streams of one remote peer (over all its connections) may hold together (default
   * 4 × (maxStepFrameBytes + 1 MiB), room for a gateway's concurrent prefills to arrive at once):
   * announced-but-unsent frames on many streams cannot multiply the per-stream cap. The stream that passes it
   * is aborted (its client fails over).
   */
  maxPeerBufferBytes?: number;
  /** Unread exec bytes all peers together may hold (default 2 × maxPeerBufferBytes); the stream that passes it is aborted. */
  maxTotalBufferBytes?: number;
  /** What one request frame may make the decoder allocate (default DEFAULT_SCAN_LIMITS). */
  scanLimits?: Partial<ScanLimits>;
  /** Clock for TTLs (tests). */
  now?: () => number;
  /** Sweep interval for idle sessions (see SessionManagerOptions). */
  sweepIntervalMs?: number | false;
  /** Charge for steps (a supplier configured with a chain); absent: steps are free. */
  payments?: StepPaymentHook;
  /** Told of every stream and malformed frame; a peer that floods or sends garbage is hung up on and refused (net/peer-guard.ts). */
  guard?: PeerGuard;
}

export const DEFAULT_MAX_STEP_FRAME_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_CONTROL_FRAME_BYTES = 1024 * 1024;
/** A frame still arriving is checked against the decoding limits once this much of it is here. */
export const INSPECT_AFTER_BYTES = 1024 * 1024;

/** Serves the exec protocol: sessions, steps, KV caches, limits, metrics. */
export class ExecServer {
  readonly sessions: SessionManager;
  /** Sessions whose float activations travel compressed (OpenSession.wire_encoding), by session. */
  private readonly wireEncodings = new WeakMap<object, WireEncodingCode>();
  readonly executors: ExecutorPool;
  readonly metrics: ExecMetrics;
  private readonly manifests: ManifestCache;
  private readonly log?: Logger;
  /** GRIDPIPE_STEP_TRACE: each step's timeline, for the pipeline bench's --trace. */
  private readonly trace = stepTraceWriter('server');
  private readonly maxStepFrameBytes: number;
  private readonly maxControlFrameBytes: number;
  private readonly maxBufferBytes: number;
  private readonly maxInboundStreams: number;
  private readonly budgets: ByteBudgets;
  private readonly scanLimits: ScanLimits;
  private readonly streams = new Set<Stream>();
  private readonly payments?: StepPaymentHook;
  private readonly guard?: PeerGuard;
  private node?: Pick<Libp2p, 'handle' | 'unhandle'> & Partial<Pick<Libp2p, 'dialProtocol'>>;
  /** Chain mode: sessions other servers may forward into, and the streams this server forwards on. */
  readonly forwarding: ChainForwarder;

  constructor(init: ExecServerInit) {
    this.log = init.logger?.child({ component: 'exec' });
    this.metrics = new ExecMetrics(init.registry);
    this.executors = new ExecutorPool(init.resolve, { provider: init.provider, threads: init.limits.threads, allowSpinning: init.allowSpinning, offThread: init.offThread, inlineBelowMs: init.inlineBelowMs, logger: this.log });
    this.manifests = new ManifestCache(init.resolve);
    this.sessions = new SessionManager({
      limits: init.limits,
      ttlMs: init.sessionTtlMs,
      maxMemoryBytes: init.maxMemoryBytes,
      replyCache: init.replyCache,
      metrics: this.metrics,
      logger: this.log,
      now: init.now,
      sweepIntervalMs: init.sweepIntervalMs,
      batcher: init.batching === false ? undefined : new StepBatcher({ ...init.batching, logger: this.log, metrics: this.metrics }),
    });
    this.maxStepFrameBytes = init.maxStepFrameBytes ?? DEFAULT_MAX_STEP_FRAME_BYTES;
    this.maxControlFrameBytes = init.maxControlFrameBytes ?? DEFAULT_MAX_CONTROL_FRAME_BYTES;
    this.maxBufferBytes = init.maxBufferBytes ?? this.maxStepFrameBytes + 1024 * 1024;
    this.maxInboundStreams = init.maxInboundStreams ?? 256;
    const perPeer = init.maxPeerBufferBytes ?? 4 * this.maxBufferBytes;
    this.budgets = new ByteBudgets(perPeer, init.maxTotalBufferBytes ?? 2 * perPeer);
    this.metrics.watchUnread(() => this.budgets.total.bytes);
    this.scanLimits = { ...DEFAULT_SCAN_LIMITS, ...init.scanLimits };
    this.payments = init.payments;
    this.guard = init.guard;
    this.forwarding = new ChainForwarder({ dialer: () => (this.node?.dialProtocol ? this.node as Pick<Libp2p, 'dialProtocol'> : undefined), logger: this.log });
  }

  /** The most unread exec bytes one remote peer holds now (bounded by maxPeerBufferBytes). */
  get peerBufferedBytes(): number {
    return this.budgets.maxHeld;
  }

  /** Unread exec bytes all peers hold now (bounded by maxTotalBufferBytes). */
  get totalBufferedBytes(): number {
    return this.budgets.total.bytes;
  }

  /** Registers the protocol handler on a libp2p node. */
  async start(node: Pick<Libp2p, 'handle' | 'unhandle'> & Partial<Pick<Libp2p, 'dialProtocol'>>): Promise<void> {
    this.node = node;
    await node.handle(PROTOCOLS.exec, (stream, connection) => this.handleStream(stream, connection), {
      maxInboundStreams: this.maxInboundStreams,
      maxOutboundStreams: this.maxInboundStreams,
      // a supplier behind NAT serves through its relay (within the relay's limits) until DCUtR goes direct
      runOnLimitedConnection: true,
    });
  }

  /** Unregisters the handler, ends the streams, closes every session and unloads the fragments. */
  async stop(): Promise<void> {
    if (this.node) await this.node.unhandle(PROTOCOLS.exec);
    this.node = undefined;
    for (const s of this.streams) s.abort(new Error('exec server stopping'));
    this.forwarding.stop();
    this.sessions.stop();
    await this.executors.close();
  }

  /** Serves one exec stream until it ends. */
  async handleStream(stream: Stream, connection: Connection): Promise<void> {
    if (this.guard && !this.guard.admitStream(connection.remotePeer)) {
      stream.abort(new ExecError('BUSY', 'this peer is refused for a while: it flooded this node or sent it garbage'));
      return;
    }
    // attach the reader before any await: bytes that arrive meanwhile are kept by the stream for it
    const budget = this.budgets.of(connection.remotePeer.toString()); // per peer: more connections do not add room
    const reader = new FrameReader(stream, {
      maxFrameBytes: this.maxStepFrameBytes, maxBufferBytes: this.maxBufferBytes, budget,
      // a big frame that already breaks a decoding limit in its first MiB is dropped as it arrives
      inspect: { afterBytes: INSPECT_AFTER_BYTES, check: (prefix) => scanRequestPrefix(prefix, this.scanLimits) },
    });
    const owner = connection.remotePeer.toString();
    let current: string | undefined;
    this.streams.add(stream);
    try {
      while (true) {
        const event = await reader.next();
        if (!event) break;
        const receivedAt = performance.now();
        if (event.kind === 'oversized') {
          this.guard?.garbage(owner, 'an oversized exec frame');
          await this.sendError(stream, new ExecError('TOO_LARGE', `frame of ${event.length} bytes is over the limit of ${this.maxStepFrameBytes}`));
          continue;
        }
        if (event.kind === 'rejected') {
          this.guard?.garbage(owner, 'an exec frame that breaks the decoding limits');
          await this.sendError(stream, toExecError(event.error, 'BAD_REQUEST'));
          continue;
        }
        // Control frames (open = field 1, close = field 3) are small: refuse a big one before looking inside.
        const first = event.bytes[0];
        if ((first === 0x0a || first === 0x1a) && event.bytes.byteLength > this.maxControlFrameBytes) {
          this.guard?.garbage(owner, 'an oversized control frame');
          await this.sendError(stream, new ExecError('TOO_LARGE', `${first === 0x0a ? 'open' : 'close'} frame of ${event.bytes.byteLength} bytes is over the limit of ${this.maxControlFrameBytes}`));
          continue;
        }
        let req: DecodedRequest;
        try {
          req = decodeRequestFrame(event.bytes, this.scanLimits); // bounded decoding: counts and sizes before protobufjs allocates
        } catch (err) {
          this.guard?.garbage(owner, 'a malformed exec frame');
          await this.sendError(stream, err instanceof ExecError ? err : new ExecError('BAD_REQUEST', `malformed frame: ${(err as Error).message}`));
          continue;
        }
        if (req.step) {
          await this.onStep(stream, owner, req.step, current, receivedAt);
        } else if (req.open || req.close) {
          if (req.open) {
            current = await this.onOpen(stream, owner, req.open, current);
          } else {
            const id = req.close!.sessionId || current;
            if (id) this.sessions.close(owner, id);
            if (id) this.forwarding.release(owner, id);
            if (id === current) current = undefined;
          }
        } else {
          this.guard?.garbage(owner, 'an exec frame with no body');
          await this.sendError(stream, new ExecError('BAD_REQUEST', 'frame carries none of open, step, close'));
        }
      }
      await stream.close().catch(() => undefined);
    } catch (err) {
      const e = toExecError(err);
      this.log?.debug({ peer: owner, err: e.message }, 'exec stream ended with an error');
      stream.abort(e);
    } finally {
      reader.detach();
      this.streams.delete(stream);
      if (current) this.sessions.close(owner, current);
      if (current) this.forwarding.release(owner, current);
    }
  }

  private async onOpen(stream: Stream, owner: string, open: NonNullable<DecodedRequest['open']>, current: string | undefined): Promise<string | undefined> {
    const sessionId = open.sessionId ?? '';
    try {
      if (!sessionId) throw new ExecError('BAD_REQUEST', 'open needs a session_id');
      if (current && current !== sessionId && this.sessions.has(owner, current)) {
        throw new ExecError('BAD_REQUEST', `this stream already carries session ${current}; open one stream per session`);
      }
      if (this.payments?.admitOpen) await this.payments.admitOpen({ owner, voucher: open.voucher ? fromDecodedVoucher(open.voucher) : undefined });
      if (!this.sessions.has(owner, sessionId)) this.sessions.admit(owner);
      const program = await loadSpan((open.fragments ?? []).map((f) => ({ cid: f.cid ?? '', manifestCid: f.manifestCid || undefined, index: f.index ?? 0 })), this.executors, this.manifests);
      let maxLength = open.maxLength ?? 0;
      if (!maxLength) {
        if (program.kv.length) throw new ExecError('BAD_REQUEST', 'open needs max_length for a span that keeps a KV cache');
        maxLength = program.contextLength ?? Number.MAX_SAFE_INTEGER;
      }
      if (program.contextLength !== undefined && maxLength > program.contextLength) {
        throw new ExecError('BAD_REQUEST', `max_length ${maxLength} is over the model's context of ${program.contextLength} positions`);
      }
      const manifestCid = open.fragments?.[0]?.manifestCid || undefined;
      const opened = this.sessions.open(owner, { sessionId, program, maxLength, batch: open.batch || 1, manifestCid, solo: open.solo ?? false });
      if (open.forwarders?.length && !this.forwarding.grant(owner, sessionId, stream, open.forwarders)) {
        throw new ExecError('BAD_REQUEST', `session id ${sessionId} is taken; open with a fresh one`);
      }
      const wireEncoding = acceptedWireEncoding(open.wireEncoding);
      if (wireEncoding) this.wireEncodings.set(opened, wireEncoding);
      await writeFrame(stream, encodeFrame(ExecResponseType, { opened: { sessionId, maxLength: Math.min(maxLength, 0xffffffff), wireEncoding } }));
      return sessionId;
    } catch (err) {
      await this.sendError(stream, toExecError(err));
      return current;
    }
  }

  private async onStep(stream: Stream, sender: string, step: DecodedStep, current: string | undefined, receivedAt: number): Promise<void> {
    const sessionId = step.sessionId || current || '';
    const stepId = longToBigInt(step.stepId);
    // Chain mode: a step forwarded by the previous server runs as its opener's, and its reply goes to the opener.
    const grant = this.sessions.has(sender, sessionId) ? undefined : this.forwarding.grantFor(sender, sessionId);
    const owner = grant?.owner ?? sender;
    const replyTo = grant?.stream ?? stream;
    let chunks: Uint8Array[];
    let outcomeLabel = 'ok';
    let ticket: PaidStepTicket | undefined;
    let traced: { steppedAt: number; computeMs: number; forwardedAt?: number } | undefined;
    try {
      if (step.forward?.length && step.replay?.length) throw new ExecError('BAD_REQUEST', 'a step that forwards its outputs (chain mode) carries no replay');
      const session = this.sessions.get(owner, sessionId);
      const inputs = (step.inputs ?? []).map(toWireTensor);
      const replay = (step.replay ?? []).map((c) => ({ position: c.position ?? 0, inputs: (c.inputs ?? []).map(toWireTensor) }));
      const position = step.position ?? 0;
      const admitStarted = performance.now();
      if (this.payments) ticket = await this.admitPayment(owner, session, stepId, step, replay.length + 1, inputs);
      let paymentMs = performance.now() - admitStarted;
      const outcome = await this.sessions.step(session, {
        stepId,
        position,
        inputs,
        replay,
        want: step.want,
        lastRowOnly: step.lastRowOnly,
        topK: step.topK,
        sample: step.sample ? fromDecodedSampling(step.sample) : undefined,
        draftTokens: step.draftTokens ?? 0,
        receivedAt,
      });
      if (outcome.cached) outcomeLabel = 'cached';
      if (ticket && !outcome.cached && session.program.kv.length) {
        // The step was priced on the positions the client declared; a KV cache shows what really ran.
        const ran = session.length - (replay.length ? replay[0].position : position);
        const declared = (step.chunkTokens ?? []).reduce((a, t) => a + t, 0);
        if (ran !== declared) throw new ExecError('BAD_REQUEST', `the step declared ${declared} new positions (chunk_tokens) but ran ${ran}`);
      }
      let outputs = [...outcome.outputs].map(([name, t]) => ortToWire(name, t));
      const replayOutputs = outcome.replayOutputs.map((r) => ({ position: r.position, tensors: [...r.outputs].map(([name, t]) => ortToWire(name, t)) }));
      // Chain mode: the next server gets the outputs first; this reply (the client's copy, for replay) follows.
      if (this.trace) traced = { steppedAt: epochMs(), computeMs: outcome.computeMs };
      const forwardError = step.forward?.length && !outcome.cached ? await this.forwardOutputs(owner, sessionId, step, stepId, inputs, outputs) : undefined;
      if (traced && step.forward?.length) traced.forwardedAt = epochMs();
      // The forward's bytes leave when its connection uncorks, at the end of this tick (net/coalesced-tcp.ts); let
      // that happen before building the client's copy, which is off the token's critical path (a trace of the
      // pipeline bench: the next server got its step ~0.2 ms sooner).
      if (step.forward?.length && !forwardError) await new Promise<void>((resolve) => process.nextTick(resolve));
      const settleStarted = performance.now();
      const receipt = ticket ? await ticket.settle({ inputs: [...replay.flatMap((c) => c.inputs), ...inputs], outputs: [...replayOutputs.flatMap((c) => c.tensors), ...outputs] }) : undefined;
      const charge = ticket?.charge ?? 0n;
      const admitMs = paymentMs;
      if (ticket) paymentMs += performance.now() - settleStarted;
      ticket = undefined; // settled: a failure to send the reply below does not give the charge back (the work is done)
      const wireEncoding = this.wireEncodings.get(session);
      if (wireEncoding) {
        // The session travels compressed (negotiated at open); receipts above cover the exact outputs.
        outputs = outputs.map((t) => compressWireTensor(t, wireEncoding));
        for (const r of replayOutputs) r.tensors = r.tensors.map((t) => compressWireTensor(t, wireEncoding));
      }
      chunks = encodeStepReplyFrame({
        sessionId,
        stepId,
        outputs,
        queueMs: Math.max(0, outcome.queueMs - admitMs), // the payment gate ran before the step was queued: paymentMs
        computeMs: outcome.computeMs,
        replayOutputs,
        receipt,
        charge: charge ? charge.toString() : undefined,
        paymentMs: this.payments ? paymentMs : undefined,
        forwardError,
      });
      const size = frameBytes(chunks);
      if (size > this.maxStepFrameBytes) throw new ExecError('TOO_LARGE', `the reply would be ${size} bytes, over the limit of ${this.maxStepFrameBytes}; ask for fewer outputs or positions`);
      this.metrics.queueSeconds.observe(outcome.queueMs / 1000);
    } catch (err) {
      if (ticket) await ticket.cancel().catch((e: unknown) => this.log?.warn({ err: e }, 'could not give back a failed step\'s charge'));
      const e = toExecError(err);
      outcomeLabel = 'error';
      this.metrics.errors.inc({ code: e.code });
      if (e.code === 'INTERNAL') this.log?.error({ err, session: sessionId }, 'exec step failed');
      chunks = encodeStepReplyFrame({ sessionId, stepId, outputs: [], queueMs: performance.now() - receivedAt, computeMs: 0, error: { code: e.wireCode, message: this.peerMessage(e) } });
    }
    await writeFrame(replyTo, chunks);
    if (traced) this.trace?.({ role: 'server', pid: process.pid, stepId: stepId.toString(), receivedAt: epochMs(receivedAt), repliedAt: epochMs(), ...traced });
    this.metrics.steps.inc({ outcome: outcomeLabel });
    this.metrics.stepSeconds.observe((performance.now() - receivedAt) / 1000);
  }

  /** Chain mode: hands a step's outputs to the next server; the reason it could not, or undefined. */
  private forwardOutputs(owner: string, sessionId: string, step: DecodedStep, stepId: bigint, inputs: WireTensor[], outputs: WireTensor[]): Promise<string | undefined> {
    const available = new Map<string, WireTensor>();
    for (const t of inputs) available.set(t.name, t);
    for (const t of outputs) available.set(t.name, t);
    return this.forwarding.forward(owner, sessionId, step.forward!.map(fromDecodedHop), {
      stepId, position: step.position ?? 0, draftTokens: step.draftTokens ?? 0, chunkTokens: step.chunkTokens ?? [],
      lastRowOnly: step.lastRowOnly ?? [], topK: step.topK ?? 0, sample: step.sample ? fromDecodedSampling(step.sample) : undefined,
    }, available);
  }

  /** Asks the payment hook whether the step may run (ExecError PAYMENT_REQUIRED / UNPAID when not). */
  private async admitPayment(owner: string, session: ExecSession, stepId: bigint, step: DecodedStep, chunks: number, inputs: WireTensor[]): Promise<PaidStepTicket> {
    const indices = session.program.members.map((m) => m.info?.index);
    const manifest = session.manifestCid ? await this.manifests.get(session.manifestCid) : undefined;
    if (manifest) checkExpertCallRows(manifest, indices, step.chunkTokens ?? [], inputs);
    return this.payments!.admit({
      owner,
      sessionId: session.id,
      stepId,
      cids: session.program.cids,
      manifest,
      start: indices[0] ?? 0,
      end: (indices[indices.length - 1] ?? -1) + 1,
      voucher: step.voucher ? fromDecodedVoucher(step.voucher) : undefined,
      chunkTokens: step.chunkTokens ?? [],
      chunks,
      cached: stepId !== 0n && session.replies.has(stepId),
    });
  }

  private async sendError(stream: Stream, e: ExecError): Promise<void> {
    this.metrics.errors.inc({ code: e.code });
    await writeFrame(stream, encodeFrame(ExecResponseType, { error: { code: e.wireCode ?? ErrorCode.INTERNAL, message: this.peerMessage(e) } }));
  }

  /** An error's text as a peer may see it: local file paths redacted (the full text is logged here). */
  private peerMessage(e: ExecError): string {
    const text = peerSafeMessage(e.message);
    if (text !== e.message) this.log?.warn({ code: e.code, err: e.message }, 'exec error sent to the peer with local paths redacted');
    return text;
  }
}

/** Creates an exec server and registers it on the node. */
export async function startExecServer(node: Pick<Libp2p, 'handle' | 'unhandle'>, init: ExecServerInit): Promise<ExecServer> {
  const server = new ExecServer(init);
  await server.start(node);
  return server;
}

/** The wire encoding a server accepts for a session: the one asked for when this node decodes it, else exact (0). */
function acceptedWireEncoding(asked: number | null | undefined): WireEncodingCode {
  return asked === WireEncoding.FP16 || asked === WireEncoding.INT8_BLOCKS ? asked : WireEncoding.EXACT;
}
