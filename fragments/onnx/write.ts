/**
 * Streaming ONNX writer. Every length is computed up front from headers and data sizes, then the file
 * is written front to back with weights copied from their sources in chunks, so writing a model never
 * holds its weights in memory. Each file is hashed (SHA-256) as it is written.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { onnx, type TensorProto } from '../../proto/onnx.js';
import { FragmentError } from './errors.js';
import { lengthDelimitedPrefix, varintLength } from './wire.js';
import { tensorBytesLength, type ModelDoc, type TensorBytes, type Weight } from './model-doc.js';

const GRAPH_FIELD = 7; // ModelProto.graph
const INITIALIZER_FIELD = 5; // GraphProto.initializer
const RAW_DATA_FIELD = 9; // TensorProto.raw_data
const COPY_CHUNK = 8 * 1024 * 1024;
/** Protobuf messages (and so onnxruntime) cannot exceed 2 GiB; past this, weights go to external data. */
export const MAX_EMBEDDED_BYTES = 2 ** 31 - 64 * 1024 * 1024;

export interface WriteOptions {
  /**
   * External data: 'auto' (default) uses it when the weights exceed `externalThresholdBytes`; 'always'
   * and 'never' force the choice. External data goes to `<model file name>.data` beside the model.
   */
  externalData?: 'auto' | 'always' | 'never';
  /** Weights above this total go to external data in 'auto' mode (default 1 GiB). */
  externalThresholdBytes?: number;
  /** Tensors smaller than this stay inside the model file even with external data (default 1 KiB). */
  inlineBelowBytes?: number;
  /** Called as bytes are written, with the running total and the expected total. */
  onProgress?: (written: number, total: number) => void;
}

export interface WrittenFile { path: string; bytes: number; sha256: Uint8Array }
export interface WrittenModel { model: WrittenFile; data?: WrittenFile }

/** Writes a model document to `outPath` (and its external data beside it), streaming the weights. */
export async function writeModel(doc: ModelDoc, outPath: string, options: WriteOptions = {}): Promise<WrittenModel> {
  const totalWeightBytes = doc.graph.initializer.reduce((s, w) => s + tensorBytesLength(w.bytes), 0);
  const mode = options.externalData ?? 'auto';
  const threshold = options.externalThresholdBytes ?? 2 ** 30;
  const useExternal = mode === 'always' || (mode === 'auto' && totalWeightBytes > threshold);
  if (!useExternal && totalWeightBytes > MAX_EMBEDDED_BYTES) {
    throw new FragmentError('UNSUPPORTED', `${path.basename(outPath)}: ${totalWeightBytes} bytes of weights cannot be embedded in one ONNX file (2 GiB protobuf limit); use external data`);
  }
  const inlineBelow = options.inlineBelowBytes ?? 1024;
  const dataPath = `${outPath}.data`;

  // Plan: which weights go external, at which offsets; the encoded header of every initializer.
  let dataOffset = 0;
  const plans = doc.graph.initializer.map((weight) => {
    const length = tensorBytesLength(weight.bytes);
    const external = useExternal && weight.bytes !== undefined && length >= inlineBelow;
    let header: TensorProto = weight.header;
    let offset = 0;
    if (external) {
      const align = length >= 1 << 20 ? 4096 : 64;
      offset = Math.ceil(dataOffset / align) * align;
      dataOffset = offset + length;
      header = {
        ...weight.header,
        externalData: [
          { key: 'location', value: path.basename(dataPath) },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(length) },
        ],
        dataLocation: 1,
      };
    }
    const headerBytes = onnx.TensorProto.encode(stripData(header));
    const rawPrefix = !external && weight.bytes ? lengthDelimitedPrefix(RAW_DATA_FIELD, length) : new Uint8Array(0);
    const inModelLength = headerBytes.length + rawPrefix.length + (external ? 0 : length);
    return { weight, external, offset, length, headerBytes, rawPrefix, inModelLength };
  });

  const { initializer: _omit, rest, ...graphFields } = doc.graph;
  void _omit;
  const graphHead = onnx.GraphProto.encode({ ...rest, ...graphFields });
  const graphLength = graphHead.length + plans.reduce(
    (s, p) => s + varintLength(INITIALIZER_FIELD * 8 + 2) + varintLength(p.inModelLength) + p.inModelLength, 0);
  const modelHead = onnx.ModelProto.encode(doc.model);
  const modelTotal = modelHead.length + varintLength(GRAPH_FIELD * 8 + 2) + varintLength(graphLength) + graphLength;
  const expectedTotal = modelTotal + (useExternal ? dataOffset : 0);

  let written = 0;
  const progress = (n: number): void => {
    written += n;
    options.onProgress?.(written, expectedTotal);
  };

  const modelOut = await HashedWriter.open(outPath, progress);
  let dataOut: HashedWriter | undefined;
  try {
    await modelOut.write(modelHead);
    await modelOut.write(lengthDelimitedPrefix(GRAPH_FIELD, graphLength));
    await modelOut.write(graphHead);
    if (useExternal) dataOut = await HashedWriter.open(dataPath, progress);
    for (const p of plans) {
      await modelOut.write(lengthDelimitedPrefix(INITIALIZER_FIELD, p.inModelLength));
      await modelOut.write(p.headerBytes);
      if (!p.weight.bytes) continue;
      if (p.external && dataOut) {
        await dataOut.padTo(p.offset);
        await copyTensorBytes(p.weight.bytes, dataOut, p.weight);
      } else {
        await modelOut.write(p.rawPrefix);
        await copyTensorBytes(p.weight.bytes, modelOut, p.weight);
      }
    }
    const model = await modelOut.close();
    if (model.bytes !== modelTotal) throw new Error(`internal: wrote ${model.bytes} bytes, planned ${modelTotal}`);
    const data = dataOut ? await dataOut.close() : undefined;
    return data ? { model, data } : { model };
  } catch (err) {
    await modelOut.abort();
    await dataOut?.abort();
    throw err;
  }
}

/** The header of a weight without its data fields (they are written separately). */
function stripData(header: TensorProto): TensorProto {
  const { rawData: _r, ...rest } = header;
  void _r;
  return rest;
}

async function copyTensorBytes(bytes: TensorBytes, out: HashedWriter, weight: Weight): Promise<void> {
  const expected = tensorBytesLength(bytes);
  let copied = 0;
  if (bytes.kind === 'inline') {
    await out.write(bytes.bytes);
    return;
  }
  if (bytes.kind === 'generated') {
    for await (const chunk of bytes.chunks()) {
      await out.write(chunk);
      copied += chunk.byteLength;
    }
  } else {
    const file = await open(bytes.path, 'r');
    try {
      const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(1, bytes.length)));
      while (copied < bytes.length) {
        const want = Math.min(buffer.length, bytes.length - copied);
        const { bytesRead } = await file.read(buffer, 0, want, bytes.offset + copied);
        if (bytesRead === 0) {
          throw new FragmentError('TRUNCATED', `${bytes.path} ends before the data of tensor "${weight.header.name}" (needs bytes ${bytes.offset}..${bytes.offset + bytes.length})`);
        }
        // The writer copies what it must keep; reusing the buffer is safe.
        await out.write(buffer.subarray(0, bytesRead));
        copied += bytesRead;
      }
    } finally {
      await file.close();
    }
  }
  if (copied !== expected) {
    throw new FragmentError('TRUNCATED', `tensor "${weight.header.name}": got ${copied} bytes of data, expected ${expected}`);
  }
}

/** A file written front to back, hashed as it goes, with small writes coalesced. */
class HashedWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private position = 0;
  private readonly hash: Hash = createHash('sha256');

  private constructor(private readonly file: FileHandle, readonly path: string, private readonly progress: (n: number) => void) {}

  static async open(filePath: string, progress: (n: number) => void): Promise<HashedWriter> {
    return new HashedWriter(await open(filePath, 'w'), filePath, progress);
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength === 0) return;
    this.hash.update(bytes);
    this.position += bytes.byteLength;
    if (bytes.byteLength >= 256 * 1024) {
      await this.flush();
      await this.writeAll(bytes);
    } else {
      this.pending.push(Buffer.from(bytes));
      this.pendingBytes += bytes.byteLength;
      if (this.pendingBytes >= 1 << 20) await this.flush();
    }
    this.progress(bytes.byteLength);
  }

  async padTo(offset: number): Promise<void> {
    if (offset > this.position) await this.write(new Uint8Array(offset - this.position));
  }

  private async writeAll(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.file.write(bytes, done, bytes.byteLength - done);
      done += bytesWritten;
    }
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const joined = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    await this.writeAll(joined);
  }

  async close(): Promise<WrittenFile> {
    await this.flush();
    await this.file.close();
    return { path: this.path, bytes: this.position, sha256: new Uint8Array(this.hash.digest()) };
  }

  async abort(): Promise<void> {
    await this.file.close().catch(() => undefined);
  }
}
