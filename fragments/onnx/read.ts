/**
 * Lazy ONNX reader. It walks the protobuf wire format of the file with positional reads, decodes every
 * message except weight payloads, and records each weight as a byte range of the model file or of its
 * external data file. Reading a model of many GB costs memory in proportion to its graph, not its weights.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { AttributeType, onnx, int64ToNumber, type ModelProto, type NodeProto, type TensorProto, type GraphProto } from '../../proto/onnx.js';
import { ByteSource } from './byte-source.js';
import { FragmentError } from './errors.js';
import { WireType } from './wire.js';
import { typedDataToRaw, withoutData } from './tensor-bytes.js';
import type { GraphDoc, ModelDoc, Weight } from './model-doc.js';
import { byteSizeOf } from './dtype.js';

/** Messages up to this size are decoded in one go; larger ones are walked field by field. */
const DECODE_WHOLE_BELOW = 64 * 1024;

interface Field { field: number; wireType: number; start: number; payloadStart: number; end: number }

/** Walks the fields of the message occupying [start, end) of the file. */
function* fields(src: ByteSource, start: number, end: number, what: string): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    const [tag, afterTag] = readVarint(src, pos, end, what);
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (field === 0) throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (invalid protobuf field 0 in ${what} at byte ${fieldStart})`);
    pos = afterTag;
    let payloadStart = pos;
    switch (wireType) {
      case WireType.VARINT: pos = readVarint(src, pos, end, what)[1]; break;
      case WireType.I64: pos += 8; break;
      case WireType.I32: pos += 4; break;
      case WireType.LEN: {
        const [len, after] = readVarint(src, pos, end, what);
        payloadStart = after;
        pos = after + len;
        break;
      }
      default:
        throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (invalid protobuf wire type ${wireType} in ${what} at byte ${fieldStart})`);
    }
    if (pos > end) {
      if (end === src.size) throw new FragmentError('TRUNCATED', `${src.path}: file is truncated (${what} needs ${pos} bytes, the file has ${src.size})`);
      throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (field ${field} of ${what} overruns its message)`);
    }
    yield { field, wireType, start: fieldStart, payloadStart, end: pos };
  }
}

function readVarint(src: ByteSource, pos: number, end: number, what: string): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) {
      if (end === src.size) throw new FragmentError('TRUNCATED', `${src.path}: file is truncated inside ${what}`);
      throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (varint overruns ${what})`);
    }
    const b = src.byte(pos++);
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
  throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (malformed varint in ${what})`);
}

/** Decodes a message from the concatenated bytes of some of its fields. */
function decodeParts<T>(src: ByteSource, parts: Field[], decode: (b: Uint8Array) => T, what: string): T {
  const total = parts.reduce((s, p) => s + (p.end - p.start), 0);
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  for (const p of parts) {
    src.read(p.start, p.end - p.start).copy(buf, at);
    at += p.end - p.start;
  }
  try {
    return decode(buf);
  } catch (err) {
    throw new FragmentError('NOT_ONNX', `${src.path}: not an ONNX model (cannot decode ${what}: ${(err as Error).message})`);
  }
}

/** Reads an ONNX model file lazily. Throws FragmentError (NOT_ONNX, TRUNCATED, MISSING_EXTERNAL_DATA). */
export function readModel(modelPath: string): ModelDoc {
  if (!existsSync(modelPath)) throw new FragmentError('BAD_ARGUMENT', `${modelPath}: no such file`);
  if (statSync(modelPath).isDirectory()) throw new FragmentError('BAD_ARGUMENT', `${modelPath}: is a directory, expected an .onnx file`);
  const src = new ByteSource(modelPath);
  try {
    if (src.size === 0) throw new FragmentError('NOT_ONNX', `${modelPath}: not an ONNX model (empty file)`);
    const headerParts: Field[] = [];
    let graphField: Field | undefined;
    for (const f of fields(src, 0, src.size, 'ModelProto')) {
      if (f.field === 7 && f.wireType === WireType.LEN) graphField = f;
      else headerParts.push(f);
    }
    const model = decodeParts(src, headerParts, (b) => onnx.ModelProto.decode(b), 'ModelProto') as Omit<ModelProto, 'graph'>;
    if (!graphField) throw new FragmentError('NOT_ONNX', `${modelPath}: not an ONNX model (no graph)`);
    if (int64ToNumber(model.irVersion) <= 0) throw new FragmentError('NOT_ONNX', `${modelPath}: not an ONNX model (no ir_version)`);
    const graph = readGraph(src, graphField.payloadStart, graphField.end, path.dirname(path.resolve(modelPath)));
    return { model, graph, sourcePath: path.resolve(modelPath) };
  } finally {
    src.close();
  }
}

function readGraph(src: ByteSource, start: number, end: number, baseDir: string): GraphDoc {
  const restParts: Field[] = [];
  const doc: GraphDoc = { name: '', node: [], input: [], output: [], valueInfo: [], initializer: [], rest: {} };
  const valueFields: Record<number, 'input' | 'output' | 'valueInfo'> = { 11: 'input', 12: 'output', 13: 'valueInfo' };
  for (const f of fields(src, start, end, 'GraphProto')) {
    if (f.wireType !== WireType.LEN) { restParts.push(f); continue; }
    if (f.field === 1) {
      doc.node.push(...readNode(src, f, baseDir, doc));
    } else if (f.field === 5) {
      doc.initializer.push(readWeight(src, f, baseDir));
    } else if (valueFields[f.field]) {
      const info = decodeParts(src, [{ ...f }], (b) => onnx.GraphProto.decode(b), 'GraphProto value info');
      const key = valueFields[f.field];
      doc[key].push(...(info[key] ?? []));
    } else {
      restParts.push(f);
    }
  }
  const rest = decodeParts(src, restParts, (b) => onnx.GraphProto.decode(b), 'GraphProto') as GraphProto;
  doc.name = rest.name ?? '';
  const { name: _n, node: _a, input: _b, output: _c, valueInfo: _d, initializer: _e, ...others } = rest;
  void [_n, _a, _b, _c, _d, _e];
  doc.rest = dropEmpty(others);
  return doc;
}

/** protobufjs fills repeated fields with empty arrays; drop them so re-encoding stays minimal. */
function dropEmpty<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (Array.isArray(v) && v.length === 0) continue;
    if (v === null || v === undefined) continue;
    out[k] = v;
  }
  return out as T;
}

/**
 * Decodes a node. A node too large to decode cheaply is a Constant holding a big tensor (TensorFlow and
 * older PyTorch exports put weights there): it becomes an initializer of the same name, which is what
 * it means, and its bytes stay on disk.
 */
function readNode(src: ByteSource, f: Field, baseDir: string, doc: GraphDoc): NodeProto[] {
  const size = f.end - f.payloadStart;
  if (size <= DECODE_WHOLE_BELOW) {
    return [decodeParts(src, [f], (b) => onnx.GraphProto.decode(b), 'NodeProto').node![0]];
  }
  const others: Field[] = [];
  let bigTensor: Weight | undefined;
  let bigAttrName = '';
  for (const nf of fields(src, f.payloadStart, f.end, 'NodeProto')) {
    if (nf.field === 5 && nf.wireType === WireType.LEN && nf.end - nf.payloadStart > DECODE_WHOLE_BELOW) {
      // An attribute: find a large `t` (field 5) inside it.
      const attrOthers: Field[] = [];
      let tensorField: Field | undefined;
      for (const af of fields(src, nf.payloadStart, nf.end, 'AttributeProto')) {
        if (af.field === 5 && af.wireType === WireType.LEN) tensorField = af;
        else attrOthers.push(af);
      }
      const attr = decodeParts(src, attrOthers, (b) => onnx.AttributeProto.decode(b), 'AttributeProto');
      if (tensorField && attr.name === 'value') {
        bigTensor = readWeight(src, tensorField, baseDir);
        bigAttrName = attr.name;
        continue;
      }
    }
    others.push(nf);
  }
  const node = decodeParts(src, others, (b) => onnx.NodeProto.decode(b), 'NodeProto');
  if (bigTensor && node.opType === 'Constant' && (node.domain ?? '') === '' && node.output?.length === 1) {
    bigTensor.header = { ...bigTensor.header, name: node.output[0] };
    doc.initializer.push(bigTensor);
    return [];
  }
  // Not a Constant: decode the whole node in memory (rare: huge attributes on other ops).
  void bigAttrName;
  return [decodeParts(src, [f], (b) => onnx.GraphProto.decode(b), 'NodeProto').node![0]];
}

/** Reads a TensorProto as a weight: header decoded, data as a file range (embedded or external) or inline. */
function readWeight(src: ByteSource, f: Field, baseDir: string): Weight {
  const size = f.end - f.payloadStart;
  let header: TensorProto;
  let dataRange: { offset: number; length: number } | undefined;
  if (size <= DECODE_WHOLE_BELOW) {
    header = decodeParts(src, [f], (b) => onnx.GraphProto.decode(b), 'TensorProto').initializer![0];
  } else {
    const others: Field[] = [];
    for (const tf of fields(src, f.payloadStart, f.end, 'TensorProto')) {
      // raw_data (9), and packed float_data (4) / double_data (10), whose wire bytes are the raw little-endian values.
      if (tf.wireType === WireType.LEN && (tf.field === 9 || tf.field === 4 || tf.field === 10) && !dataRange) {
        dataRange = { offset: tf.payloadStart, length: tf.end - tf.payloadStart };
      } else {
        others.push(tf);
      }
    }
    header = decodeParts(src, others, (b) => onnx.TensorProto.decode(b), 'TensorProto');
  }
  const name = header.name ?? '';
  if (dataRange) {
    return { header: withoutData(header), bytes: { kind: 'file', path: src.path, ...dataRange } };
  }
  if (header.dataLocation === 1) return { header: withoutData(header), bytes: externalRange(header, baseDir) };
  if (header.rawData && header.rawData.length > 0) {
    return { header: withoutData(header), bytes: { kind: 'inline', bytes: header.rawData } };
  }
  const raw = typedDataToRaw(header);
  if (raw) return { header: withoutData(header), bytes: { kind: 'inline', bytes: raw } };
  if (header.rawData) return { header: withoutData(header), bytes: { kind: 'inline', bytes: header.rawData } };
  void name;
  return { header }; // string tensors and packed sub-byte types keep their typed fields
}

function externalRange(t: TensorProto, baseDir: string): { kind: 'file'; path: string; offset: number; length: number } {
  const entries = Object.fromEntries((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.location;
  if (!location) throw new FragmentError('MISSING_EXTERNAL_DATA', `tensor "${t.name}" is marked external but names no location`);
  const file = path.resolve(baseDir, location);
  if (!file.startsWith(baseDir + path.sep) && path.dirname(file) !== baseDir) {
    throw new FragmentError('MISSING_EXTERNAL_DATA', `tensor "${t.name}": external data location "${location}" leaves the model's folder`);
  }
  if (!existsSync(file)) throw new FragmentError('MISSING_EXTERNAL_DATA', `tensor "${t.name}": external data file ${file} is missing`);
  const fileSize = statSync(file).size;
  const offset = Number(entries.offset ?? 0);
  const count = (t.dims ?? []).reduce<number>((a, d) => a * int64ToNumber(d), 1);
  const expected = byteSizeOf(t.dataType ?? 0, count);
  const length = entries.length !== undefined ? Number(entries.length) : Number.isFinite(expected) ? expected : fileSize - offset;
  if (!Number.isFinite(offset) || !Number.isFinite(length) || offset < 0 || length < 0) {
    throw new FragmentError('MISSING_EXTERNAL_DATA', `tensor "${t.name}": bad external data offset/length`);
  }
  if (offset + length > fileSize) {
    throw new FragmentError('TRUNCATED', `tensor "${t.name}": external data file ${file} is truncated (needs ${offset + length} bytes, has ${fileSize})`);
  }
  return { kind: 'file', path: file, offset, length };
}

/** Attribute types whose values are graphs (If/Loop/Scan bodies). */
export const GRAPH_ATTRIBUTE_TYPES: ReadonlySet<number> = new Set([AttributeType.GRAPH, AttributeType.GRAPHS]);
