/**
 * Frames of the exec protocol: a varint length prefix, then one protobuf `ExecRequest` or `ExecResponse`.
 *
 * Frames are read and written with net/wire (see its FrameReader for why not `lpStream`), set up here for
 * this protocol: oversized frames skipped and reported, unread bytes capped, failures as ExecErrors.
 * Step requests and step replies, the messages that carry tensors, are encoded by hand: sizes first, then
 * one buffer per frame with tensors below REFERENCE_BYTES copied in once (the stream stack turns every chunk
 * into a socket write) and larger tensors handed over by reference. The other messages, and all decoding, go
 * through the classes generated from proto/exec.proto (proto/wire.ts, protobufjs runtime), whose `bytes`
 * fields decode as views into the frame (no copy).
 */
import type { Stream } from '@libp2p/interface';
import { varintLength, writeVarint } from '../../fragments/onnx/wire.js';
import { wire, type gridpipe, type WireTensor } from '../../proto/wire.js';
import {
  FrameReader as WireFrameReader, lengthPrefixed, writeFrame as writeWireFrame,
  type FrameError, type FrameEvent, type FrameReaderOptions,
} from '../wire/frame-reader.js';
import { ExecError } from './errors.js';
import type { SignedVoucher } from '../../contracts/eip712.js';

export type { FrameEvent, FrameReaderOptions };

/** The exec protocol's envelopes and payment messages: classes generated from proto/exec.proto. */
export const ExecRequestType = wire.ExecRequest;
export const ExecResponseType = wire.ExecResponse;
export const VoucherType = wire.Voucher;
export const SamplingType = wire.Sampling;
export const SignedReceiptType = wire.SignedReceipt;
export const HopType = wire.Hop;

/**
 * A signed voucher (contracts/eip712.ts SignedVoucher) as it travels in Open/Step: the amount as decimal text,
 * the signature as bytes. Convert only with net/exec/voucher-wire.ts.
 */
export type WireVoucher = Omit<SignedVoucher, 'cumulativeAmount' | 'signature'> & { cumulativeAmount: string; signature: Uint8Array };

/** A 64-bit integer as protobufjs decodes it: a number, or a Long when it does not fit 53 bits. */
export type LongLike = gridpipe.v1.Step['stepId'];

// Messages as the generated decoders return them: instances whose scalar fields hold the proto3 default
// when absent, sub-messages undefined or null when absent, 64-bit integers as LongLike.
export type DecodedTensor = gridpipe.v1.Tensor;
export type DecodedChunk = gridpipe.v1.StepChunk;
export type DecodedStep = gridpipe.v1.Step;
export type DecodedSampling = gridpipe.v1.Sampling;
export type DecodedVoucher = gridpipe.v1.Voucher;
export type DecodedRequest = gridpipe.v1.ExecRequest;
export type DecodedStepReply = gridpipe.v1.StepReply;
export type DecodedResponse = gridpipe.v1.ExecResponse;

/** A long as an unsigned bigint. */
export function longToBigInt(v: LongLike | undefined | null): bigint {
  if (v === undefined || v === null) return 0n;
  if (typeof v === 'number') return BigInt(v);
  return (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0);
}

/** A long as a number (dims: always small). */
export function longToNumber(v: LongLike | undefined | null): number {
  if (v === undefined || v === null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** A decoded tensor with numeric dims and its data as a view into the frame. */
export function toWireTensor(t: DecodedTensor): WireTensor {
  const dims = t.dims ?? [];
  const out = new Array<number>(dims.length);
  for (let i = 0; i < dims.length; i++) out[i] = longToNumber(dims[i]);
  const wire: WireTensor = { name: t.name ?? '', dtype: t.dtype ?? 0, dims: out, data: t.data ?? new Uint8Array(0) };
  if (t.encoding) wire.encoding = t.encoding;
  return wire;
}

// ---------------------------------------------------------------------------------------------------------
// Hand encoding of the tensor-carrying messages

function bigVarintSize(n: bigint): number {
  let size = 1;
  while (n >= 0x80n) { size++; n >>= 7n; }
  return size;
}

/**
 * Tensor bytes from this size up travel by reference (a chunk of their own); smaller ones are copied into
 * the frame. Measured on loopback: every chunk handed to the stream becomes its own ciphertext chunk in
 * Noise and its own socket write (a syscall and, with TCP_NODELAY, a packet), which costs far more than
 * copying up to a few hundred KiB; beyond that Noise splits the frame into 64 KiB messages anyway and a
 * chunk boundary costs one write among many, while copying would cost more.
 */
export const REFERENCE_BYTES = 256 * 1024;

/** Writes a frame into one buffer (sized up front), with large byte fields as separate chunks. */
class FrameWriter {
  private readonly chunks: Uint8Array[] = [];
  private readonly buf: Buffer;
  private pos = 0;
  private start = 0;

  /** `inlineBytes`: everything but the referenced byte fields. */
  constructor(inlineBytes: number) {
    this.buf = Buffer.allocUnsafe(inlineBytes);
  }

  private flush(): void {
    if (this.pos > this.start) this.chunks.push(this.buf.subarray(this.start, this.pos));
    this.start = this.pos;
  }

  varint(n: number): this {
    this.pos = writeVarint(this.buf, this.pos, n);
    return this;
  }

  bigVarint(n: bigint): this {
    while (n >= 0x80n) {
      this.buf[this.pos++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.pos++] = Number(n);
    return this;
  }

  tag(field: number, wire: number): this {
    this.buf[this.pos++] = field * 8 + wire; // fields < 16
    return this;
  }

  double(x: number): this {
    this.buf.writeDoubleLE(x, this.pos);
    this.pos += 8;
    return this;
  }

  /** A string whose UTF-8 length is `bytes`. */
  string(s: string, bytes: number): this {
    this.varint(bytes);
    this.pos += this.buf.write(s, this.pos, bytes, 'utf8');
    return this;
  }

  bytes(b: Uint8Array): this {
    this.varint(b.byteLength);
    if (b.byteLength < REFERENCE_BYTES) {
      this.buf.set(b, this.pos);
      this.pos += b.byteLength;
    } else {
      this.flush();
      this.chunks.push(b);
    }
    return this;
  }

  finish(): Uint8Array[] {
    this.flush();
    return this.chunks;
  }
}

/** Sizes of a message being encoded: its total and the bytes that travel by reference. */
class Sizer {
  total = 0;
  referenced = 0;
}

interface SizedTensor { t: WireTensor; nameBytes: number; dimsSize: number; size: number }

function lenField(size: number): number {
  return 1 + varintLength(size) + size;
}

function sizeTensor(t: WireTensor, sizer: Sizer): SizedTensor {
  const nameBytes = Buffer.byteLength(t.name, 'utf8');
  let size = 0;
  if (nameBytes) size += lenField(nameBytes);
  if (t.dtype) size += 1 + varintLength(t.dtype);
  let dimsSize = 0;
  for (const d of t.dims) dimsSize += varintLength(d);
  if (t.dims.length) size += lenField(dimsSize);
  const n = t.data.byteLength;
  if (n) size += lenField(n);
  if (t.encoding) size += varintLength(ENCODING_TAG) + varintLength(t.encoding);
  if (n >= REFERENCE_BYTES) sizer.referenced += n;
  return { t, nameBytes, dimsSize, size };
}

function writeTensor(w: FrameWriter, s: SizedTensor): void {
  if (s.nameBytes) w.tag(1, 2).string(s.t.name, s.nameBytes);
  if (s.t.dtype) w.tag(2, 0).varint(s.t.dtype);
  if (s.t.dims.length) {
    w.tag(3, 2).varint(s.dimsSize);
    for (const d of s.t.dims) w.varint(d);
  }
  if (s.t.data.byteLength) w.tag(4, 2).bytes(s.t.data);
  if (s.t.encoding) w.varint(ENCODING_TAG).varint(s.t.encoding);
}

/** Tensor.encoding (field 40, varint): a two-byte tag, which `tag()` (fields < 16) does not write. */
const ENCODING_TAG = 40 * 8;

export interface StepChunkOut { position: number; tensors: WireTensor[] }

export interface StepRequestOut {
  sessionId: string;
  stepId: bigint;
  position: number;
  inputs: WireTensor[];
  replay?: StepChunkOut[];
  draftTokens?: number;
  want?: string[];
  /** Payment for a server that charges (see proto/exec.proto Step.voucher). */
  voucher?: WireVoucher;
  /** New positions per chunk (replay chunks, then the step's inputs): what the step is priced on. */
  chunkTokens?: number[];
  /** Outputs of which only the last row (position) is wanted. */
  lastRowOnly?: string[];
  /** With lastRowOnly: only the k largest entries of that row. */
  topK?: number;
  /** With lastRowOnly: the token drawn from that row on the server, instead of the row. */
  sample?: WireSampling;
  /** Chain mode: the servers the outputs go to next, in order (Step.forward). */
  forward?: WireHop[];
}

/** Step.forward's entry (chain mode, proto/exec.proto Hop): the next server, its own tensors, what it gets and pays. */
export interface WireHop {
  peerId: string;
  addrs: string[];
  sessionId: string;
  /** The client's own tensors for that server. */
  inputs: WireTensor[];
  /** Names the forwarder takes from its outputs (or its step's inputs) into that server's step. */
  carry: string[];
  /** Outputs that server returns to the client. */
  want: string[];
  voucher?: WireVoucher;
}

/** A Hop as Step.forward's bytes (protobufjs: small, and only on chain steps). */
export function encodeHop(h: WireHop): Uint8Array {
  return HopType.encode(HopType.fromObject({ ...h, voucher: h.voucher ? { ...h.voucher, deadline: h.voucher.deadline.toString() } : undefined })).finish();
}

/** A decoded Step.forward entry back to its typed form. */
export function fromDecodedHop(h: gridpipe.v1.IHop): WireHop {
  return {
    peerId: h.peerId ?? '', addrs: h.addrs ?? [], sessionId: h.sessionId ?? '',
    inputs: (h.inputs ?? []).map((t) => toWireTensor(t as DecodedTensor)), carry: h.carry ?? [], want: h.want ?? [],
    voucher: h.voucher ? fromDecodedVoucher(h.voucher as DecodedVoucher) : undefined,
  };
}

/** Step.sample: a sampler's settings and the position the drawn token takes. */
export interface WireSampling { temperature: number; topK?: number; topP?: number; seed: number; position: number }

/** A decoded Step.sample back to its typed form; ExecError BAD_REQUEST when a setting is out of range. */
export function fromDecodedSampling(s: DecodedSampling): WireSampling {
  const temperature = s.temperature ?? 0;
  const topP = s.topP ?? 0;
  const seed = Number(BigInt.asIntN(64, longToBigInt(s.seed))); // int64: negative seeds travel as two's complement
  const position = Number(longToBigInt(s.position));
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new ExecError('BAD_REQUEST', `sample.temperature must be above 0, not ${temperature}`);
  if (!(topP >= 0 && topP <= 1)) throw new ExecError('BAD_REQUEST', `sample.top_p must be between 0 and 1, not ${topP}`);
  if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(position)) throw new ExecError('BAD_REQUEST', 'sample.seed and sample.position must be safe integers');
  return { temperature, topK: s.topK || undefined, topP: topP || undefined, seed, position };
}

/** A voucher as Step.voucher's bytes (protobufjs: a handful of small fields, not worth encoding by hand). */
export function encodeVoucher(v: WireVoucher): Uint8Array {
  return VoucherType.encode(VoucherType.fromObject({ ...v, deadline: v.deadline.toString() })).finish();
}

/** A decoded Step.voucher back to its typed form (missing fields read as empty). */
export function fromDecodedVoucher(v: DecodedVoucher): WireVoucher {
  return {
    payer: v.payer ?? '', payee: v.payee ?? '', cumulativeAmount: v.cumulativeAmount ?? '',
    deadline: longToBigInt(v.deadline), signature: v.signature ?? new Uint8Array(0),
  };
}

interface SizedChunk { c: StepChunkOut; tensors: SizedTensor[]; size: number }

function sizeChunk(c: StepChunkOut, sizer: Sizer): SizedChunk {
  const tensors = c.tensors.map((t) => sizeTensor(t, sizer));
  let size = c.position ? 1 + varintLength(c.position) : 0;
  for (const t of tensors) size += lenField(t.size);
  return { c, tensors, size };
}

function writeChunk(w: FrameWriter, field: number, s: SizedChunk): void {
  w.tag(field, 2).varint(s.size);
  if (s.c.position) w.tag(1, 0).varint(s.c.position);
  for (const t of s.tensors) { w.tag(2, 2).varint(t.size); writeTensor(w, t); }
}

/** The frame's writer, its length prefix and the envelope field (ExecRequest.step / ExecResponse.step = 2) written. */
function frameWriter(size: number, sizer: Sizer): FrameWriter {
  const total = lenField(size);
  const w = new FrameWriter(varintLength(total) + total - sizer.referenced);
  w.varint(total);
  w.tag(2, 2).varint(size);
  return w;
}

/** A length-prefixed ExecRequest{step} frame: one buffer, plus referenced chunks for tensors ≥ REFERENCE_BYTES. */
export function encodeStepRequestFrame(step: StepRequestOut): Uint8Array[] {
  const sizer = new Sizer();
  const sidBytes = Buffer.byteLength(step.sessionId, 'utf8');
  const inputs = step.inputs.map((t) => sizeTensor(t, sizer));
  const replay = (step.replay ?? []).map((c) => sizeChunk(c, sizer));
  const want = (step.want ?? []).map((s) => ({ s, bytes: Buffer.byteLength(s, 'utf8') }));
  const lastRowOnly = (step.lastRowOnly ?? []).map((s) => ({ s, bytes: Buffer.byteLength(s, 'utf8') }));
  let size = sidBytes ? lenField(sidBytes) : 0;
  if (step.stepId) size += 1 + bigVarintSize(step.stepId);
  if (step.position) size += 1 + varintLength(step.position);
  for (const t of inputs) size += lenField(t.size);
  for (const c of replay) size += lenField(c.size);
  if (step.draftTokens) size += 1 + varintLength(step.draftTokens);
  for (const x of want) size += lenField(x.bytes);
  for (const x of lastRowOnly) size += lenField(x.bytes);
  if (step.topK) size += 1 + varintLength(step.topK);
  const voucher = step.voucher ? encodeVoucher(step.voucher) : undefined;
  if (voucher) size += lenField(voucher.byteLength);
  const sample = step.sample ? SamplingType.encode(SamplingType.fromObject(step.sample)).finish() : undefined;
  if (sample) size += lenField(sample.byteLength);
  const forward = (step.forward ?? []).map(encodeHop);
  for (const h of forward) size += lenField(h.byteLength);
  const tokens = step.chunkTokens ?? [];
  let tokensSize = 0;
  for (const t of tokens) tokensSize += varintLength(t);
  if (tokens.length) size += lenField(tokensSize);
  const w = frameWriter(size, sizer);
  if (sidBytes) w.tag(1, 2).string(step.sessionId, sidBytes);
  if (step.stepId) w.tag(2, 0).bigVarint(step.stepId);
  if (step.position) w.tag(3, 0).varint(step.position);
  for (const t of inputs) { w.tag(4, 2).varint(t.size); writeTensor(w, t); }
  for (const c of replay) writeChunk(w, 5, c);
  if (step.draftTokens) w.tag(6, 0).varint(step.draftTokens);
  for (const h of forward) w.tag(7, 2).bytes(h);
  for (const x of want) w.tag(8, 2).string(x.s, x.bytes);
  if (voucher) w.tag(9, 2).bytes(voucher);
  if (tokens.length) {
    w.tag(10, 2).varint(tokensSize); // packed, as proto3 repeated scalars are
    for (const t of tokens) w.varint(t);
  }
  for (const x of lastRowOnly) w.tag(11, 2).string(x.s, x.bytes);
  if (step.topK) w.tag(12, 0).varint(step.topK);
  if (sample) w.tag(13, 2).bytes(sample);
  return w.finish();
}

export interface StepReplyOut {
  sessionId: string;
  stepId: bigint;
  outputs: WireTensor[];
  queueMs: number;
  computeMs: number;
  error?: { code: number; message: string };
  replayOutputs?: StepChunkOut[];
  /** An encoded SignedReceipt (StepReply.receipt). */
  receipt?: Uint8Array;
  /** What the server charged, decimal base units. */
  charge?: string;
  /** Time the payment gate took (StepReply.payment_ms). */
  paymentMs?: number;
  /** Chain mode: why the outputs could not be forwarded to the next hop (StepReply.forward_error). */
  forwardError?: string;
}

/** A length-prefixed ExecResponse{step} frame: one buffer, plus referenced chunks for tensors ≥ REFERENCE_BYTES. */
export function encodeStepReplyFrame(reply: StepReplyOut): Uint8Array[] {
  const sizer = new Sizer();
  const sidBytes = Buffer.byteLength(reply.sessionId, 'utf8');
  const outputs = reply.outputs.map((t) => sizeTensor(t, sizer));
  const replay = (reply.replayOutputs ?? []).map((c) => sizeChunk(c, sizer));
  let errSize = 0;
  let msgBytes = 0;
  if (reply.error) {
    msgBytes = Buffer.byteLength(reply.error.message, 'utf8');
    if (reply.error.code) errSize += 1 + varintLength(reply.error.code);
    if (msgBytes) errSize += lenField(msgBytes);
  }
  let size = sidBytes ? lenField(sidBytes) : 0;
  if (reply.stepId) size += 1 + bigVarintSize(reply.stepId);
  for (const t of outputs) size += lenField(t.size);
  if (reply.queueMs) size += 9;
  if (reply.computeMs) size += 9;
  if (reply.error) size += lenField(errSize);
  for (const c of replay) size += lenField(c.size);
  if (reply.receipt?.byteLength) size += lenField(reply.receipt.byteLength);
  const chargeBytes = reply.charge ? Buffer.byteLength(reply.charge, 'utf8') : 0;
  if (chargeBytes) size += lenField(chargeBytes);
  if (reply.paymentMs) size += 9;
  const forwardErrorBytes = reply.forwardError ? Buffer.byteLength(reply.forwardError, 'utf8') : 0;
  if (forwardErrorBytes) size += 1 + lenField(forwardErrorBytes); // field 40: a two-byte tag
  const w = frameWriter(size, sizer);
  if (sidBytes) w.tag(1, 2).string(reply.sessionId, sidBytes);
  if (reply.stepId) w.tag(2, 0).bigVarint(reply.stepId);
  for (const t of outputs) { w.tag(3, 2).varint(t.size); writeTensor(w, t); }
  if (reply.queueMs) w.tag(4, 1).double(reply.queueMs);
  if (reply.computeMs) w.tag(5, 1).double(reply.computeMs);
  if (reply.error) {
    w.tag(6, 2).varint(errSize);
    if (reply.error.code) w.tag(1, 0).varint(reply.error.code);
    if (msgBytes) w.tag(2, 2).string(reply.error.message, msgBytes);
  }
  if (reply.receipt?.byteLength) w.tag(7, 2).bytes(reply.receipt);
  for (const c of replay) writeChunk(w, 8, c);
  if (chargeBytes) w.tag(9, 2).string(reply.charge!, chargeBytes);
  if (reply.paymentMs) w.tag(10, 1).double(reply.paymentMs);
  if (forwardErrorBytes) w.varint(40 * 8 + 2).string(reply.forwardError!, forwardErrorBytes);
  return w.finish();
}

/** A generated message class, as encodeFrame uses it. */
export interface MessageType<M> {
  fromObject(object: { [k: string]: unknown }): M;
  encode(message: M): { finish(): Uint8Array };
}

/**
 * Any message through protobufjs, as one length-prefixed frame (one buffer). The message is a plain object
 * that `fromObject` converts (64-bit integers may be decimal strings).
 */
export function encodeFrame<M>(type: MessageType<M>, message: Record<string, unknown>): Uint8Array[] {
  return [lengthPrefixed(type.encode(type.fromObject(message)).finish())];
}

/** Total bytes of a frame given as chunks. */
export function frameBytes(chunks: Uint8Array[]): number {
  let n = 0;
  for (const c of chunks) n += c.byteLength;
  return n;
}

// ---------------------------------------------------------------------------------------------------------
// Reading and writing frames on a libp2p v3 stream

/** The ExecError a framing failure has always been here. */
function execFrameError(err: FrameError): ExecError {
  switch (err.code) {
    case 'BUFFER_FULL':
    case 'FRAME_TOO_LARGE':
      return new ExecError('TOO_LARGE', err.message, { cause: err });
    case 'BAD_LENGTH_PREFIX':
      return new ExecError('BAD_REQUEST', err.message, { cause: err });
    default: // TRUNCATED_FRAME, SEND_FAILED
      return new ExecError('CLOSED', err.message, { cause: err });
  }
}

/**
 * net/wire's FrameReader as this protocol uses it: a frame over `maxFrameBytes` is skipped as it arrives
 * and reported as `oversized`, so the server answers TOO_LARGE and the session goes on; unread bytes are
 * bounded by `maxBufferBytes` (default maxFrameBytes + 1 MiB), beyond which the stream is aborted (as is
 * a broken length prefix); the stream is never paused; failures are ExecErrors (TOO_LARGE, BAD_REQUEST,
 * CLOSED for a stream that ended inside a frame).
 */
export class FrameReader extends WireFrameReader {
  constructor(stream: Stream, options: FrameReaderOptions) {
    super(stream, {
      oversized: 'skip',
      highWaterMark: Infinity,
      abortOnViolation: true,
      mapError: execFrameError,
      ...options,
      maxBufferBytes: options.maxBufferBytes ?? options.maxFrameBytes + 1024 * 1024,
    });
  }
}

const WRITE_OPTIONS = { mapError: execFrameError };

/** net/wire's writeFrame: rejects with ExecError CLOSED when the stream closes before taking the frame. */
export function writeFrame(stream: Stream, chunks: Uint8Array[]): Promise<void> {
  return writeWireFrame(stream, chunks, WRITE_OPTIONS);
}
