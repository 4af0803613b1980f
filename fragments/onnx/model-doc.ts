/**
 * The in-memory form of an ONNX model that the reader, the builder, the partitioner and the writer
 * share. Everything but weight bytes is decoded; weights stay where they are (a byte range of a file,
 * a generator, or a small buffer) so models of many GB never sit in memory whole.
 */
import type { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from '../../proto/onnx.js';

/** Bytes of a file: the model file itself (embedded raw_data) or an external data file. */
export interface FileRange { kind: 'file'; path: string; offset: number; length: number }
/** Bytes held in memory (small tensors). */
export interface InlineBytes { kind: 'inline'; bytes: Uint8Array }
/** Bytes produced on demand, in chunks, e.g. seeded synthetic weights. */
export interface GeneratedBytes { kind: 'generated'; length: number; chunks: () => AsyncIterable<Uint8Array> | Iterable<Uint8Array> }
export type TensorBytes = FileRange | InlineBytes | GeneratedBytes;

/**
 * A weight: its TensorProto header (name, dims, data_type, ...; no data fields) and its little-endian
 * raw bytes. `bytes` is absent for tensors whose data cannot be raw (strings) or was left in typed
 * fields, in which case the header keeps those fields.
 */
export interface Weight {
  header: TensorProto;
  bytes?: TensorBytes;
}

/** The graph: decoded nodes and value infos, lazily held weights. */
export interface GraphDoc {
  name: string;
  node: NodeProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  initializer: Weight[];
  /** Remaining GraphProto fields carried through unchanged (doc_string, sparse initializers, ...). */
  rest: Omit<GraphProto, 'node' | 'input' | 'output' | 'valueInfo' | 'initializer' | 'name'>;
}

/** A whole model: its ModelProto fields other than the graph, and the graph. */
export interface ModelDoc {
  model: Omit<ModelProto, 'graph'>;
  graph: GraphDoc;
  /** Where it was read from, when it was read (external data paths are resolved already). */
  sourcePath?: string;
}

/** Length in bytes of a weight's data, 0 when it has none outside its header. */
export function tensorBytesLength(bytes: TensorBytes | undefined): number {
  if (!bytes) return 0;
  return bytes.kind === 'inline' ? bytes.bytes.byteLength : bytes.length;
}
