/**
 * Client of the exec protocol (the grid client's sessions in scheduler/, tests, the bench): one persistent stream per session,
 * steps answered in order, typed errors carrying the wire ErrorCode. A step that misses its deadline ends the
 * session's stream (a late reply would otherwise answer the next step); the caller re-opens and replays.
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import type ort from 'onnxruntime-node';
import { randomUUID } from 'node:crypto';
import { PROTOCOLS, type WireTensor } from '../../proto/wire.js';
import {
  encodeFrame, encodeStepRequestFrame, ExecRequestType, FrameReader, longToBigInt, toWireTensor, writeFrame,
  type DecodedChunk, type DecodedResponse, type WireHop, type WireSampling, type WireVoucher,
} from './codec.js';
import { errorCodeName, ExecError, toExecError } from './errors.js';
import { DEFAULT_SCAN_LIMITS, scanResponse, scanResponsePrefix, type ScanLimits } from './scan.js';
import { decodeScannedResponse } from './decode.js';
import { GarbageReplyError, refusedReply } from './garbage-reply.js';
import { ortToWire, wireToOrt } from './tensors.js';
import { compressWireTensor, type WireEncodingCode } from './wire-compression.js';
import { dialPreferringDirect, type UpgradeAwareNode } from '../direct-upgrade.js';

export type TensorMap = Record<string, ort.Tensor>;

export interface FragmentRefInit { cid: string; manifestCid?: string; index?: number; dataCid?: string }

export interface ExecClientInit {
  /** Largest reply frame accepted (default 64 MiB). */
  maxFrameBytes?: number;
  /** Deadline of a step unless the step names one (default 120 s). */
  stepTimeoutMs?: number;
  /** Deadline of dialing and opening a session (default 30 s). */
  openTimeoutMs?: number;
}

export interface OpenSessionOptions {
  /** The span, in order: CIDs, or refs naming the manifest (then the node returns exactly what later fragments read). */
  fragments: readonly (string | FragmentRefInit)[];
  /** Positions the KV cache must hold (required for spans with a KV cache). */
  maxLength?: number;
  batch?: number;
  /** Defaults to a random UUID. */
  sessionId?: string;
  signal?: AbortSignal;
  /** For a server that charges: the payer's current voucher to it (it opens no session without one). */
  voucher?: WireVoucher;
  /** Chain mode: peers that may forward steps into this session (the previous server of the route). */
  forwarders?: readonly string[];
  /** How float activations travel both ways (wire-compression.ts; default exact); the session's `wireEncoding` says what the server accepted. */
  wireEncoding?: WireEncodingCode;
  /** Ask the server never to batch this session's steps with other sessions' (OpenSession.solo). */
  solo?: boolean;
}

export interface StepChunkInit { position: number; inputs: TensorMap }

export interface StepOptions {
  /** KV length before this step (the server truncates to it first). */
  position: number;
  /** Defaults to the next id of this session; a repeated id returns the cached reply. */
  stepId?: number | bigint;
  /** Earlier chunks to run first, in order, each as its own run (failover replay). */
  replay?: readonly StepChunkInit[];
  /** Outputs to return (default: all the span returns). */
  want?: readonly string[];
  draftTokens?: number;
  timeoutMs?: number;
  /** Payment for a server that charges: the cumulative voucher covering this step. */
  voucher?: WireVoucher;
  /** New positions per chunk (replay chunks, then this step): what the server prices the step on. */
  chunkTokens?: readonly number[];
  /** Outputs of which only the last row (position) is wanted (decoding needs only the newest token's logits). */
  lastRowOnly?: readonly string[];
  /** With lastRowOnly: only the k largest entries of that row come back (NAME.top_values, NAME.top_indices). */
  topK?: number;
  /** With lastRowOnly: only the token the server draws from that row comes back (NAME.sampled). */
  sample?: WireSampling;
  /** Chain mode: the servers the outputs go to next (each answers on its own session's stream: awaitReply). */
  forward?: readonly WireHop[];
}

export interface StepResult {
  stepId: bigint;
  outputs: TensorMap;
  queueMs: number;
  computeMs: number;
  /** Time the server's payment gate took (0 on a free server). */
  paymentMs: number;
  /** Outputs of the replay chunks, in order. */
  replayOutputs: { position: number; outputs: TensorMap }[];
  /** What the server charged (base units; 0 when free). */
  charge: bigint;
  /** The server's signed receipt (an encoded SignedReceipt), when it signs them. */
  receipt?: Uint8Array;
  /** Chain mode: the server ran the step but could not hand its outputs to the next hop (why). */
  forwardError?: string;
}

type Dialer = Pick<Libp2p, 'dialProtocol'> & Partial<UpgradeAwareNode>;

function hasUpgradeAwareness(node: Dialer): node is Dialer & UpgradeAwareNode {
  return typeof node.dial === 'function' && typeof node.getConnections === 'function' && typeof node.addEventListener === 'function';
}

interface Pending {
  kind: 'open' | 'step';
  stepId?: bigint;
  /** Replay chunks the step sent: its reply carries at most as many replay outputs. */
  replayChunks?: number;
  resolve: (r: DecodedResponse) => void;
  reject: (e: ExecError) => void;
}

function toWire(inputs: TensorMap | readonly WireTensor[]): WireTensor[] {
  if (Array.isArray(inputs)) return inputs as WireTensor[];
  return Object.entries(inputs as TensorMap).map(([name, t]) => ortToWire(name, t));
}

function toTensorMap(tensors: DecodedChunk['inputs']): TensorMap {
  const out: TensorMap = {};
  for (const t of tensors ?? []) {
    const w = toWireTensor(t);
    out[w.name] = wireToOrt(w);
  }
  return out;
}

/** One session on one server, over one stream. */
export class RemoteSession {
  private readonly pending: Pending[] = [];
  private nextStepId = 1n;
  private ended?: ExecError;
  /** Step ids whose reply nobody waits for any more (a chain step cut short): dropped when they arrive. */
  private readonly cancelled = new Set<bigint>();
  maxLength = 0;
  /** How float inputs and outputs travel in this session, as the server accepted at open (0: exact). */
  wireEncoding: WireEncodingCode = 0;

  /** @internal use ExecClient.openSession */
  constructor(
    readonly sessionId: string,
    readonly peer: string,
    private readonly stream: Stream,
    private readonly reader: FrameReader,
    private readonly defaultTimeoutMs: number,
  ) {
    void this.readLoop();
  }

  /** Tensors as this session sends them: float ones compressed when the session negotiated an encoding. */
  private encoded(tensors: WireTensor[]): WireTensor[] {
    return this.wireEncoding ? tensors.map((t) => compressWireTensor(t, this.wireEncoding)) : tensors;
  }

  /** Whether the session's stream has ended (closed, evicted streams stay open). */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  private async readLoop(): Promise<void> {
    try {
      while (true) {
        const event = await this.reader.next();
        if (!event) break;
        if (event.kind === 'oversized') {
          this.pending.shift()?.reject(new ExecError('TOO_LARGE', `reply of ${event.length} bytes is over this client's limit`));
          continue;
        }
        if (event.kind === 'rejected') {
          this.abort(refusedReply(`reply from ${this.peer} refused: ${event.error.message}`, event.error));
          return;
        }
        // Bounded decoding: a reply may not make the decoder allocate more than the requests in flight asked
        // for (a rogue server's millions of empty replay outputs took a gateway to 4.6 GB). A reply that
        // breaks the limits ends this session (the caller fails over to another server), never the process.
        try {
          scanResponse(event.bytes, this.replyLimits());
        } catch (err) {
          this.abort(refusedReply(`reply from ${this.peer} refused: ${(err as Error).message}`, err));
          return;
        }
        let r: DecodedResponse;
        try {
          r = decodeScannedResponse(event.bytes);
        } catch (err) {
          this.pending.shift()?.reject(new GarbageReplyError(`malformed reply: ${(err as Error).message}`));
          continue;
        }
        // Step replies are matched by step id (a ring with direct return will deliver replies to steps this
        // stream did not carry); everything else answers the oldest request.
        let index = 0;
        if (r.step) {
          const id = longToBigInt(r.step.stepId);
          const found = this.pending.findIndex((x) => x.kind === 'step' && x.stepId === id);
          if (found >= 0) index = found;
          else if (this.cancelled.delete(id)) continue;
        }
        const p = this.pending.splice(index, 1)[0];
        p?.resolve(r); // a reply nobody waits for (after a timeout the stream is gone anyway) is dropped
      }
      this.end(new ExecError('CLOSED', `the server ${this.peer} ended the session's stream`));
    } catch (err) {
      this.end(toExecError(err, 'CLOSED'));
    }
  }

  /** @internal What the next reply may carry: replay outputs up to the most replay chunks a request in flight sent. */
  replyLimits(): ScanLimits {
    let chunks = 0;
    for (const p of this.pending) chunks = Math.max(chunks, p.replayChunks ?? 0);
    return { ...DEFAULT_SCAN_LIMITS, maxChunks: chunks };
  }

  private end(err: ExecError): void {
    this.ended ??= err;
    for (const p of this.pending.splice(0)) p.reject(this.ended);
  }

  /** @internal Sends a frame and waits for the reply frame answering it. */
  request(kind: Pending['kind'], chunks: Uint8Array[], timeoutMs: number, stepId?: bigint, replayChunks = 0): Promise<DecodedResponse> {
    if (this.ended) return Promise.reject(this.ended);
    return new Promise<DecodedResponse>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const entry: Pending = {
        kind,
        stepId,
        replayChunks,
        resolve: (r) => { if (timer) clearTimeout(timer); resolve(r); },
        reject: (e) => { if (timer) clearTimeout(timer); reject(e); },
      };
      this.pending.push(entry);
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          const e = new ExecError('TIMEOUT', `${kind} on ${this.peer} took longer than ${timeoutMs} ms`);
          this.abort(e);
        }, timeoutMs);
      }
      if (chunks.length) writeFrame(this.stream, chunks).catch((err) => this.abort(toExecError(err, 'CLOSED'))); // none: a reply forwarded into this session
    });
  }

  /** Runs one step; resolves with the outputs or rejects with an ExecError carrying the code. */
  async step(inputs: TensorMap | readonly WireTensor[], options: StepOptions): Promise<StepResult> {
    const stepId = this.takeStepId(options.stepId);
    const chunks = encodeStepRequestFrame({
      sessionId: this.sessionId,
      stepId,
      position: options.position,
      inputs: this.encoded(toWire(inputs)),
      replay: options.replay?.map((c) => ({ position: c.position, tensors: this.encoded(toWire(c.inputs)) })),
      want: options.want ? [...options.want] : undefined,
      draftTokens: options.draftTokens,
      voucher: options.voucher,
      chunkTokens: options.chunkTokens ? [...options.chunkTokens] : undefined,
      lastRowOnly: options.lastRowOnly ? [...options.lastRowOnly] : undefined,
      topK: options.topK,
      sample: options.sample,
      forward: options.forward ? [...options.forward] : undefined,
    });
    const r = await this.request('step', chunks, options.timeoutMs ?? this.defaultTimeoutMs, stepId, options.replay?.length ?? 0);
    return this.stepResult(r, stepId);
  }

  /** The id the next step takes (`wanted` when given); later steps count on from it. */
  takeStepId(wanted?: number | bigint): bigint {
    const stepId = wanted !== undefined ? BigInt(wanted) : this.nextStepId;
    if (stepId >= this.nextStepId) this.nextStepId = stepId + 1n;
    return stepId;
  }

  /** The id the next step would take. */
  get upcomingStepId(): bigint {
    return this.nextStepId;
  }

  /**
   * Chain mode: waits for the reply to step `stepId` that a previous server forwarded into this session (the
   * server answers on this session's stream). Sends nothing. A deadline passed ends the session, as for step().
   */
  async awaitReply(stepId: bigint, timeoutMs = this.defaultTimeoutMs): Promise<StepResult> {
    this.takeStepId(stepId);
    const r = await this.request('step', [], timeoutMs, stepId, 0);
    return this.stepResult(r, stepId);
  }

  /** Stops waiting for step `stepId` (its awaitReply rejects with CLOSED); its reply is dropped if it comes. */
  cancelReply(stepId: bigint): void {
    const found = this.pending.findIndex((x) => x.kind === 'step' && x.stepId === stepId);
    if (found < 0) return;
    this.cancelled.add(stepId);
    this.pending.splice(found, 1)[0].reject(new ExecError('CLOSED', `stopped waiting for step ${stepId} on ${this.peer}`));
  }

  private stepResult(r: DecodedResponse, stepId: bigint): StepResult {
    if (r.error) throw new ExecError(errorCodeName(r.error.code ?? 0), r.error.message ?? 'error');
    const reply = r.step;
    if (!reply) throw new ExecError('INTERNAL', 'the server answered a step with something else');
    if (reply.error && reply.error.code) throw new ExecError(errorCodeName(reply.error.code), reply.error.message ?? 'error');
    const gotId = longToBigInt(reply.stepId);
    if (gotId !== stepId) {
      const e = new ExecError('INTERNAL', `reply for step ${gotId} arrived for step ${stepId}`);
      this.abort(e);
      throw e;
    }
    return {
      stepId,
      outputs: toTensorMap(reply.outputs),
      queueMs: reply.queueMs ?? 0,
      computeMs: reply.computeMs ?? 0,
      paymentMs: reply.paymentMs ?? 0,
      replayOutputs: (reply.replayOutputs ?? []).map((c) => ({ position: c.position ?? 0, outputs: toTensorMap(c.inputs) })),
      charge: reply.charge && /^\d+$/.test(reply.charge) ? BigInt(reply.charge) : 0n,
      receipt: reply.receipt?.byteLength ? reply.receipt : undefined,
      ...(reply.forwardError ? { forwardError: reply.forwardError } : {}),
    };
  }

  /** Closes the session on the server (its KV cache is freed) and ends the stream. */
  async close(): Promise<void> {
    if (this.ended) return;
    try {
      await writeFrame(this.stream, encodeFrame(ExecRequestType, { close: { sessionId: this.sessionId } }));
      await this.stream.close();
    } catch {
      this.stream.abort(new Error('close failed'));
    }
    this.end(new ExecError('CLOSED', 'session closed'));
  }

  /** Ends the stream at once; pending steps reject with `err`. */
  abort(err: ExecError = new ExecError('CLOSED', 'session aborted')): void {
    this.end(err);
    this.stream.abort(err);
    this.reader.detach();
  }
}

/** Opens exec sessions on remote nodes. */
export class ExecClient {
  private readonly maxFrameBytes: number;
  private readonly stepTimeoutMs: number;
  private readonly openTimeoutMs: number;

  constructor(init: ExecClientInit = {}) {
    this.maxFrameBytes = init.maxFrameBytes ?? 64 * 1024 * 1024;
    this.stepTimeoutMs = init.stepTimeoutMs ?? 120_000;
    this.openTimeoutMs = init.openTimeoutMs ?? 30_000;
  }

  /** Dials `peer`, opens a stream and a session on the span; ExecError (BUSY, NOT_FOUND, ...) when refused. */
  async openSession(node: Dialer, peer: PeerId | Multiaddr | Multiaddr[], options: OpenSessionOptions): Promise<RemoteSession> {
    const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(this.openTimeoutMs)]) : AbortSignal.timeout(this.openTimeoutMs);
    let stream: Stream;
    try {
      // A supplier behind NAT may be reachable only through a relay (a limited connection) until DCUtR upgrades
      // it: give the upgrade a moment first (net/direct-upgrade.ts), then the stream runs on the best connection.
      if (hasUpgradeAwareness(node)) await dialPreferringDirect(node, peer, { signal });
      stream = await node.dialProtocol(peer, PROTOCOLS.exec, { signal, negotiateFully: false, runOnLimitedConnection: true });
    } catch (err) {
      throw toExecError(err, 'CLOSED');
    }
    let session: RemoteSession | undefined = undefined;
    const reader = new FrameReader(stream, {
      maxFrameBytes: this.maxFrameBytes,
      // a big reply that already breaks the limits in its first MiB is dropped as it arrives
      inspect: { afterBytes: 1024 * 1024, check: (prefix) => scanResponsePrefix(prefix, session?.replyLimits() ?? DEFAULT_SCAN_LIMITS) },
    });
    const sessionId = options.sessionId ?? randomUUID();
    session = new RemoteSession(sessionId, String(Array.isArray(peer) ? peer[0] : peer), stream, reader, this.stepTimeoutMs);
    const fragments = options.fragments.map((f) => (typeof f === 'string' ? { cid: f } : { cid: f.cid, manifestCid: f.manifestCid ?? '', index: f.index ?? 0, dataCid: f.dataCid ?? '' }));
    const voucher = options.voucher ? { ...options.voucher, deadline: options.voucher.deadline.toString() } : undefined;
    const frame = encodeFrame(ExecRequestType, { open: { sessionId, fragments, maxLength: options.maxLength ?? 0, batch: options.batch ?? 1, voucher, forwarders: options.forwarders ?? [], wireEncoding: options.wireEncoding ?? 0, solo: options.solo ?? false } });
    let r: DecodedResponse;
    try {
      r = await session.request('open', frame, this.openTimeoutMs);
    } catch (err) {
      session.abort();
      throw err;
    }
    if (r.error || !r.opened) {
      session.abort();
      throw r.error ? new ExecError(errorCodeName(r.error.code ?? 0), r.error.message ?? 'refused') : new ExecError('INTERNAL', 'unexpected reply to open');
    }
    session.maxLength = r.opened.maxLength ?? 0;
    session.wireEncoding = (r.opened.wireEncoding ?? 0) as WireEncodingCode;
    return session;
  }
}
