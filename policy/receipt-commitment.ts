/**
 * The byte streams a supplier's receipt commits to (issue 21), in one place so the supplier that signs
 * (node/payments/receipts.ts), the gateway that files a dispute (gateway/verify/dispute-filer.ts), the
 * contract that checks the evidence (DisputeManager.fileDispute: sha256 of these bytes) and the arbiter that
 * re-runs it (gateway/verify/arbiter.ts) cannot disagree about a single byte.
 *
 * - The input stream: each tensor as utf8(name) 0x00 · dtype (u32 LE) · rank (u32 LE) · each dim (u64 LE) ·
 *   byte length (u64 LE) · raw bytes. The receipt's inputHash is sha256 of the session's input stream so far.
 * - The digest stream: each output's digest (policy/verification.ts) as utf8(name) 0x00 · kind (u8: 0 top,
 *   1 exact) · rows (u32 LE) · k (u32 LE) · indices (i32 LE, or f64 LE for exact) · values (f32 LE, top only).
 *   The receipt's outputHash is sha256 of the session's digest stream so far.
 * Both are self-delimiting, so evidence is the streams themselves and decodes back to tensors and digests.
 */
import { GridpipeError } from '../errors/base.js';
import { outputDigest, type DigestableTensor, type TensorDigest } from './verification.js';

/** A tensor as the input stream carries it (proto/wire's WireTensor fits). */
export interface CommittedTensor {
  name: string;
  dtype: number;
  dims: readonly number[];
  data: Uint8Array;
}

/** Evidence bytes that do not decode as the stream they claim to be. */
export class MalformedEvidenceError extends GridpipeError<'MALFORMED_EVIDENCE'> {
  constructor(message: string) {
    super('MALFORMED_EVIDENCE', message);
  }
}

/** Something that takes bytes in order (a node:crypto Hash, or a collector). */
export interface ByteSink {
  update(bytes: Uint8Array): unknown;
}

const utf8 = new TextEncoder();

function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

function u64le(v: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

/** Writes tensors in the input stream's encoding. */
export function writeTensorStream(sink: ByteSink, tensors: Iterable<CommittedTensor>): void {
  for (const t of tensors) {
    sink.update(utf8.encode(t.name));
    sink.update(Uint8Array.of(0));
    sink.update(u32le(t.dtype));
    sink.update(u32le(t.dims.length));
    for (const d of t.dims) sink.update(u64le(d));
    sink.update(u64le(t.data.byteLength));
    sink.update(t.data);
  }
}

/** Writes digests in the digest stream's encoding. */
export function writeDigestStream(sink: ByteSink, digests: Iterable<TensorDigest>): void {
  for (const d of digests) {
    sink.update(utf8.encode(d.name));
    sink.update(Uint8Array.of(0, d.kind === 'top' ? 0 : 1));
    sink.update(u32le(d.rows));
    sink.update(u32le(d.k));
    sink.update(new Uint8Array(d.indices.buffer, d.indices.byteOffset, d.indices.byteLength));
    sink.update(new Uint8Array(d.values.buffer, d.values.byteOffset, d.values.byteLength));
  }
}

/** Collects a stream's bytes into one buffer. */
export class ByteCollector implements ByteSink {
  private readonly parts: Uint8Array[] = [];
  update(bytes: Uint8Array): this {
    this.parts.push(Uint8Array.from(bytes));
    return this;
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of this.parts) { out.set(p, at); at += p.byteLength; }
    return out;
  }
}

/** The digest of one committed tensor (float32/float64 and integer dtypes; others give none). */
export function committedDigest(t: CommittedTensor): TensorDigest[] {
  const view = typedView(t);
  return view ? outputDigest({ [t.name]: view }) : [];
}

/** The digests of tensors in stream order (what a receipt's outputHash covers). */
export function committedDigests(tensors: Iterable<CommittedTensor>): TensorDigest[] {
  const out: TensorDigest[] = [];
  for (const t of tensors) out.push(...committedDigest(t));
  return out;
}

function typedView(t: CommittedTensor): DigestableTensor | undefined {
  const bytes = t.data.byteOffset % 8 === 0 ? t.data : new Uint8Array(t.data);
  const dims = t.dims.map(Number);
  switch (t.dtype) {
    case 1: return { type: 'float32', dims, data: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
    case 11: return { type: 'float64', dims, data: new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8) };
    case 6: return { type: 'int32', dims, data: new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
    case 7: return { type: 'int64', dims, data: new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8) };
    default: return undefined;
  }
}

/** Bounds on decoded evidence (it comes from a chain event anyone can emit). */
const MAX_RANK = 8;
const MAX_NAME = 256;

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

class Reader {
  offset = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array, private readonly what: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  get done(): boolean { return this.offset >= this.buf.byteLength; }
  take(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0 || this.offset + n > this.buf.byteLength) throw new MalformedEvidenceError(`the ${this.what} ends inside a field (offset ${this.offset}, needs ${n} more bytes)`);
    const out = this.buf.slice(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
  name(): string {
    const end = this.buf.indexOf(0, this.offset);
    if (end < 0 || end - this.offset > MAX_NAME) throw new MalformedEvidenceError(`the ${this.what} has a name without its 0 byte within ${MAX_NAME} bytes`);
    const name = utf8Decoder.decode(this.buf.subarray(this.offset, end));
    this.offset = end + 1;
    return name;
  }
  u8(): number { return this.take(1)[0]; }
  u32(): number { const v = this.view.getUint32(this.need(4), true); this.offset += 4; return v; }
  u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MalformedEvidenceError(`the ${this.what} has a length of ${v}`);
    return Number(v);
  }
  private need(n: number): number {
    if (this.offset + n > this.buf.byteLength) throw new MalformedEvidenceError(`the ${this.what} ends inside a field (offset ${this.offset})`);
    return this.offset;
  }
}

/** Decodes an input stream back into its tensors (MalformedEvidenceError when it does not decode). */
export function readTensorStream(bytes: Uint8Array): CommittedTensor[] {
  const r = new Reader(bytes, 'input stream');
  const out: CommittedTensor[] = [];
  while (!r.done) {
    const name = r.name();
    const dtype = r.u32();
    const rank = r.u32();
    if (rank > MAX_RANK) throw new MalformedEvidenceError(`tensor ${name} has rank ${rank}`);
    const dims = Array.from({ length: rank }, () => r.u64());
    const length = r.u64();
    out.push({ name, dtype, dims, data: r.take(length) });
  }
  return out;
}

/** Decodes a digest stream back into its digests (MalformedEvidenceError when it does not decode). */
export function readDigestStream(bytes: Uint8Array): TensorDigest[] {
  const r = new Reader(bytes, 'digest stream');
  const out: TensorDigest[] = [];
  while (!r.done) {
    const name = r.name();
    const kind = r.u8();
    if (kind > 1) throw new MalformedEvidenceError(`digest ${name} has kind ${kind}`);
    const rows = r.u32();
    const k = r.u32();
    const n = rows * k;
    if (kind === 0) {
      const indices = new Int32Array(r.take(n * 4).buffer);
      const values = new Float32Array(r.take(n * 4).buffer);
      out.push({ name, kind: 'top', rows, k, indices, values });
    } else {
      const indices = new Float64Array(r.take(n * 8).buffer);
      out.push({ name, kind: 'exact', rows, k, indices, values: new Float32Array(0) });
    }
  }
  return out;
}
