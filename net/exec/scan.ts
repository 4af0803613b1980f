/**
 * Bounded decoding: a pre-scan of an exec frame that walks its protobuf tags without building a single
 * object, before protobufjs decodes it.
 *
 * Why: protobufjs materialises every element of a repeated field as a JS object (an empty Tensor costs
 * 58-85 heap bytes per wire byte), so one 59 MiB frame of 31M empty tensors, or of millions of packed 1-byte
 * dims, took 5 GB and killed the process before any check ran (issue 13, attacks 3 and 4). The scan counts
 * what decoding would allocate (tensors, chunks, dims, list entries, string and byte lengths) and checks each
 * tensor's dims against its data length, so only frames whose decoded size is proportional to a small
 * constant times their element counts reach protobufjs. It costs one pass over the tags: tensor data is
 * skipped by its length, never read, so a step's cost does not grow with its tensor bytes.
 *
 * A violation throws ExecError (TOO_LARGE for counts and lengths over a limit, BAD_REQUEST for malformed
 * structure) naming the field and the limit. The walk is iterative per message level (depth ≤ 4).
 */
import { bitsPerElement } from '../../fragments/onnx/dtype.js';
import { ExecError } from './errors.js';
import { encodable, encodedBytes, paletteFits, WIRE_PALETTE, WireEncoding } from './wire-compression.js';

/** Limits on what one frame may make the decoder allocate. */
export interface ScanLimits {
  /** Tensors in the whole frame (inputs/outputs plus every chunk's tensors). */
  maxTensors: number;
  /** Replay chunks (Step.replay) or replay outputs (StepReply.replay_outputs). */
  maxChunks: number;
  /** Rank of a tensor. */
  maxRank: number;
  /** Bytes of a string field (names, ids, peer ids, addresses, decimal amounts). */
  maxStringBytes: number;
  /** Bytes of a non-tensor bytes field (voucher, sampling, receipt, signature) and of an error message. */
  maxSmallBytes: number;
  /** Entries of each small repeated field (want, last_row_only, chunk_tokens, forward, addrs, fragments). */
  maxListEntries: number;
}

/** Tensor rank allowed on the wire: no model input or output we carry has more. */
export const MAX_TENSOR_RANK = 8;

export const DEFAULT_SCAN_LIMITS: Readonly<ScanLimits> = {
  maxTensors: 16_384,
  maxChunks: 8_192,
  maxRank: MAX_TENSOR_RANK,
  maxStringBytes: 4_096,
  maxSmallBytes: 64 * 1024,
  maxListEntries: 8_192,
};

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

type Kind = 'string' | 'bytes' | 'varint' | 'fixed64' | 'packed' | 'tensor' | 'chunk' | 'message';

interface FieldRule {
  kind: Kind;
  name: string;
  /** Repeated fields: which counter limits it ('list' = maxListEntries per field). */
  repeated?: boolean;
  /** 'message' fields: the schema of the sub-message. */
  schema?: Schema;
  /** The field's path in error messages, built once (a rule sits at one place in the tree). */
  path?: string;
}

type Schema = Map<number, FieldRule>;

function schema(entries: [number, FieldRule][]): Schema {
  return new Map(entries);
}

const FRAGMENT_REF = schema([
  [1, { kind: 'string', name: 'cid' }], [2, { kind: 'string', name: 'data_cid' }],
  [3, { kind: 'string', name: 'manifest_cid' }], [4, { kind: 'varint', name: 'index' }],
]);
const OPEN = schema([
  [1, { kind: 'string', name: 'session_id' }], [2, { kind: 'message', name: 'fragments', repeated: true, schema: FRAGMENT_REF }],
  [3, { kind: 'varint', name: 'max_length' }], [4, { kind: 'varint', name: 'batch' }],
  [5, { kind: 'bytes', name: 'voucher' }], // OpenSession.voucher (sec-suppay): a small message, bounded as Step.voucher
  [40, { kind: 'string', name: 'forwarders', repeated: true }],
]);
const HOP = schema([
  [1, { kind: 'string', name: 'peer_id' }], [2, { kind: 'string', name: 'addrs', repeated: true }], [3, { kind: 'string', name: 'session_id' }],
  [40, { kind: 'tensor', name: 'inputs' }], [41, { kind: 'string', name: 'carry', repeated: true }],
  [42, { kind: 'string', name: 'want', repeated: true }], [43, { kind: 'bytes', name: 'voucher' }],
]);
const STEP = schema([
  [1, { kind: 'string', name: 'session_id' }], [2, { kind: 'varint', name: 'step_id' }], [3, { kind: 'varint', name: 'position' }],
  [4, { kind: 'tensor', name: 'inputs' }], [5, { kind: 'chunk', name: 'replay' }], [6, { kind: 'varint', name: 'draft_tokens' }],
  [7, { kind: 'message', name: 'forward', repeated: true, schema: HOP }], [8, { kind: 'string', name: 'want', repeated: true }],
  [9, { kind: 'bytes', name: 'voucher' }], [10, { kind: 'packed', name: 'chunk_tokens' }],
  [11, { kind: 'string', name: 'last_row_only', repeated: true }], [12, { kind: 'varint', name: 'top_k' }], [13, { kind: 'bytes', name: 'sample' }],
]);
const CLOSE = schema([[1, { kind: 'string', name: 'session_id' }]]);
const REQUEST = schema([
  [1, { kind: 'message', name: 'open', schema: OPEN }], [2, { kind: 'message', name: 'step', schema: STEP }], [3, { kind: 'message', name: 'close', schema: CLOSE }],
]);
const ERROR = schema([[1, { kind: 'varint', name: 'code' }], [2, { kind: 'bytes', name: 'message' }]]);
const REPLY = schema([
  [1, { kind: 'string', name: 'session_id' }], [2, { kind: 'varint', name: 'step_id' }], [3, { kind: 'tensor', name: 'outputs' }],
  [4, { kind: 'fixed64', name: 'queue_ms' }], [5, { kind: 'fixed64', name: 'compute_ms' }], [6, { kind: 'message', name: 'error', schema: ERROR }],
  [7, { kind: 'bytes', name: 'receipt' }], [8, { kind: 'chunk', name: 'replay_outputs' }], [9, { kind: 'string', name: 'charge' }],
  [10, { kind: 'fixed64', name: 'payment_ms' }], [40, { kind: 'string', name: 'forward_error' }],
]);
const OPENED = schema([[1, { kind: 'string', name: 'session_id' }], [2, { kind: 'varint', name: 'max_length' }]]);
const RESPONSE = schema([
  [1, { kind: 'message', name: 'error', schema: ERROR }], [2, { kind: 'message', name: 'step', schema: REPLY }], [3, { kind: 'message', name: 'opened', schema: OPENED }],
]);

/** Thrown in partial mode where the bytes seen so far end: what was counted up to there stands. */
const PREFIX_ENDS = Symbol('prefix ends');

/** Walks one frame (or, `partial`, the first bytes of one); counters are shared across nested messages. */
class Scanner {
  private tensors = 0;
  private chunks = 0;
  private readonly lists = new Map<FieldRule, number>();

  constructor(private readonly buf: Uint8Array, private readonly limits: ScanLimits, private readonly partial = false) {}

  /** A field overruns its message: malformed in a whole frame, where the bytes seen end in a prefix. */
  private overrun(what: string): never {
    if (this.partial) throw PREFIX_ENDS;
    throw new ExecError('BAD_REQUEST', `malformed frame: ${what}`);
  }

  private varint(pos: number, end: number, what: string): [number, number] {
    let value = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= end) this.overrun(`${what} ends inside a varint`);
      const b = this.buf[pos++];
      if (i < 8) value += (b & 0x7f) * 2 ** (7 * i); // exact below 2^53; larger values only matter as lengths, which fail below
      if (b < 0x80) return [value, pos];
    }
    throw new ExecError('BAD_REQUEST', `malformed frame: ${what} has a varint longer than 10 bytes`);
  }

  /** One more entry of a repeated field (names are built only for the error: this runs per field). */
  private count(rule: FieldRule, where: string): void {
    const n = (this.lists.get(rule) ?? 0) + 1;
    if (n > this.limits.maxListEntries) throw new ExecError('TOO_LARGE', `${where}.${rule.name} has more than ${this.limits.maxListEntries} entries`);
    this.lists.set(rule, n);
  }

  /** Scans message bytes [pos, end) against `rules`. */
  message(pos: number, end: number, rules: Schema, where: string): void {
    while (pos < end) {
      let key: number;
      [key, pos] = this.varint(pos, end, where);
      const field = Math.floor(key / 8);
      const wire = key & 7;
      const rule = rules.get(field);
      if (field === 0) throw new ExecError('BAD_REQUEST', `malformed frame: field 0 in ${where}`);
      if (wire === VARINT) {
        if (rule && rule.kind !== 'varint' && rule.kind !== 'packed') throw new ExecError('BAD_REQUEST', `malformed frame: ${where}.${rule.name} has the wrong wire type`);
        if (rule?.kind === 'packed') this.count(rule, where); // unpacked repeated scalar
        [, pos] = this.varint(pos, end, where);
        continue;
      }
      if (wire === I64 || wire === I32) {
        if (rule && rule.kind !== 'fixed64') throw new ExecError('BAD_REQUEST', `malformed frame: ${where}.${rule.name} has the wrong wire type`);
        pos += wire === I64 ? 8 : 4;
        if (pos > end) this.overrun(`${where} ends inside a fixed-size field`);
        continue;
      }
      if (wire !== LEN) throw new ExecError('BAD_REQUEST', `malformed frame: wire type ${wire} in ${where}`);
      let length: number;
      [length, pos] = this.varint(pos, end, where);
      let stop = pos + length;
      let cut = false;
      if (stop > end) {
        if (!this.partial) throw new ExecError('BAD_REQUEST', `malformed frame: a field of ${length} bytes overruns ${where}`);
        stop = end; // a prefix: look at what has arrived of this field, then stop
        cut = true;
      }
      if (!rule) {
        // unknown field: protobufjs skips it without allocating
      } else if (rule.kind === 'string' || rule.kind === 'bytes') {
        const max = rule.kind === 'string' ? this.limits.maxStringBytes : this.limits.maxSmallBytes;
        if (length > max) throw new ExecError('TOO_LARGE', `${where}.${rule.name} is ${length} bytes, over the limit of ${max}`);
        if (rule.repeated) this.count(rule, where);
      } else if (rule.kind === 'packed') {
        this.packed(pos, stop, rule, where);
      } else if (rule.kind === 'tensor') {
        this.tensor(pos, stop, rule.path ??= `${where}.${rule.name}`, !cut);
      } else if (rule.kind === 'chunk') {
        const name = rule.path ??= `${where}.${rule.name}`;
        if (++this.chunks > this.limits.maxChunks) throw new ExecError('TOO_LARGE', `${name} has more than ${this.limits.maxChunks} chunks`);
        this.chunk(pos, stop, name, !cut);
      } else if (rule.kind === 'message') {
        if (rule.repeated) this.count(rule, where);
        this.message(pos, stop, rule.schema!, rule.path ??= `${where}.${rule.name}`);
      } else {
        throw new ExecError('BAD_REQUEST', `malformed frame: ${where}.${rule.name} has the wrong wire type`);
      }
      if (cut) throw PREFIX_ENDS;
      pos = stop;
    }
  }

  private packed(pos: number, end: number, rule: FieldRule, where: string): void {
    while (pos < end) {
      this.count(rule, where);
      [, pos] = this.varint(pos, end, where);
    }
  }

  private chunk(pos: number, end: number, where: string, complete = true): void {
    while (pos < end) {
      let key: number;
      [key, pos] = this.varint(pos, end, where);
      const wire = key & 7;
      if (key >>> 3 === 2 && wire === LEN) {
        let length: number;
        [length, pos] = this.varint(pos, end, where);
        if (pos + length > end) {
          if (complete) throw new ExecError('BAD_REQUEST', `malformed frame: a tensor of ${length} bytes overruns ${where}`);
          this.tensor(pos, end, where, false);
          throw PREFIX_ENDS;
        }
        this.tensor(pos, pos + length, where);
        pos += length;
      } else if (wire === VARINT) {
        [, pos] = this.varint(pos, end, where);
      } else {
        pos = this.skip(pos, end, wire, where);
      }
    }
  }

  private skip(pos: number, end: number, wire: number, where: string): number {
    if (wire === VARINT) return this.varint(pos, end, where)[1];
    if (wire === I64) pos += 8;
    else if (wire === I32) pos += 4;
    else if (wire === LEN) {
      let length: number;
      [length, pos] = this.varint(pos, end, where);
      pos += length;
    } else throw new ExecError('BAD_REQUEST', `malformed frame: wire type ${wire} in ${where}`);
    if (pos > end) throw new ExecError('BAD_REQUEST', `malformed frame: a field overruns ${where}`);
    return pos;
  }

  /**
   * One Tensor: name length, rank ≤ maxRank (packed or not), and (`complete`: all of it is here) dims ×
   * element size = data length.
   */
  private tensor(pos: number, end: number, where: string, complete = true): void {
    if (++this.tensors > this.limits.maxTensors) throw new ExecError('TOO_LARGE', `the frame carries more than ${this.limits.maxTensors} tensors`);
    let rank = 0;
    let elements = 1;
    let dtype = 0;
    let dataBytes = 0;
    let encoding = 0;
    const addDim = (d: number): void => {
      if (++rank > this.limits.maxRank) throw new ExecError('BAD_REQUEST', `a tensor of ${where} has more than ${this.limits.maxRank} dims`);
      elements *= d;
    };
    while (pos < end) {
      let key: number;
      [key, pos] = this.varint(pos, end, where);
      const field = key >>> 3;
      const wire = key & 7;
      if (field === 1 && wire === LEN) {
        let length: number;
        [length, pos] = this.varint(pos, end, where);
        if (length > this.limits.maxStringBytes) throw new ExecError('TOO_LARGE', `a tensor name in ${where} is ${length} bytes, over the limit of ${this.limits.maxStringBytes}`);
        pos += length;
      } else if (field === 2 && wire === VARINT) {
        [dtype, pos] = this.varint(pos, end, where);
      } else if (field === 3 && wire === LEN) {
        let length: number;
        [length, pos] = this.varint(pos, end, where);
        const stop = Math.min(pos + length, end);
        if (pos + length > end && complete) break; // reported below as an overrun
        while (pos < stop) {
          let d: number;
          [d, pos] = this.varint(pos, stop, where);
          addDim(d);
        }
      } else if (field === 3 && wire === VARINT) {
        let d: number;
        [d, pos] = this.varint(pos, end, where);
        addDim(d);
      } else if (field === 4 && wire === LEN) {
        [dataBytes, pos] = this.varint(pos, end, where);
        pos += dataBytes;
      } else if (field === 40 && wire === VARINT) {
        [encoding, pos] = this.varint(pos, end, where);
      } else {
        pos = this.skip(pos, end, wire, where);
      }
      if (pos > end) {
        if (complete) throw new ExecError('BAD_REQUEST', `malformed frame: a field overruns a tensor of ${where}`);
        throw PREFIX_ENDS;
      }
    }
    if (!complete) throw PREFIX_ENDS;
    const bits = bitsPerElement(dtype);
    if (!bits) throw new ExecError('BAD_REQUEST', `a tensor of ${where} has dtype ${dtype}, which cannot travel`);
    let expected = Math.ceil((bits * elements) / 8);
    if (encoding) {
      // A compressed float tensor (wire-compression.ts): its data length follows from the encoding.
      if (!encodable(dtype) || (encoding !== WireEncoding.FP16 && encoding !== WireEncoding.INT8_BLOCKS && encoding !== WIRE_PALETTE)) throw new ExecError('BAD_REQUEST', `a tensor of ${where} has wire encoding ${encoding} on dtype ${dtype}, which is not one this node decodes`);
      // A palette's length depends on how many values it holds (its first byte, checked again when decoded).
      if (encoding === WIRE_PALETTE && !paletteFits(dataBytes, elements)) throw new ExecError('BAD_REQUEST', `a tensor of ${where} has ${dataBytes} bytes of palette data, which fits no palette of ${elements} elements`);
      expected = encoding === WIRE_PALETTE ? dataBytes : encodedBytes(encoding, elements);
    }
    if (expected !== dataBytes) throw new ExecError('BAD_REQUEST', `a tensor of ${where} has dims holding ${elements} elements (${expected} bytes) but ${dataBytes} bytes of data`);
  }
}

/** Checks an ExecRequest frame before it is decoded; ExecError TOO_LARGE / BAD_REQUEST naming what is wrong. */
export function scanRequest(frame: Uint8Array, limits: ScanLimits = DEFAULT_SCAN_LIMITS): void {
  new Scanner(frame, limits).message(0, frame.byteLength, REQUEST, 'request');
}

/** Checks an ExecResponse frame before it is decoded (the client side); ExecError as scanRequest. */
export function scanResponse(frame: Uint8Array, limits: ScanLimits = DEFAULT_SCAN_LIMITS): void {
  new Scanner(frame, limits).message(0, frame.byteLength, RESPONSE, 'reply');
}

function scanPrefix(prefix: Uint8Array, limits: ScanLimits, rules: Schema, where: string): ExecError | undefined {
  try {
    new Scanner(prefix, limits, true).message(0, prefix.byteLength, rules, where);
  } catch (err) {
    if (err === PREFIX_ENDS) return undefined;
    if (err instanceof ExecError) return err;
    throw err;
  }
  return undefined;
}

/**
 * Checks the first bytes of a request frame still arriving: the limit it already breaks (counts, ranks,
 * lengths), or undefined when nothing is wrong so far. Lets a reader drop an amplification frame after
 * its first MiB instead of buffering all of it.
 */
export function scanRequestPrefix(prefix: Uint8Array, limits: ScanLimits = DEFAULT_SCAN_LIMITS): ExecError | undefined {
  return scanPrefix(prefix, limits, REQUEST, 'request');
}

/** scanRequestPrefix for a reply frame (the client side). */
export function scanResponsePrefix(prefix: Uint8Array, limits: ScanLimits = DEFAULT_SCAN_LIMITS): ExecError | undefined {
  return scanPrefix(prefix, limits, RESPONSE, 'reply');
}
