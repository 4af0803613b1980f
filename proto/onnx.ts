/**
 * The ONNX schema in protobufjs, from the descriptor that the `onnx-buf` package ships (ONNX 1.20, IR
 * version 13). Taking the descriptor from a package keeps the schema current without hand-copying
 * onnx.proto, and protobufjs stays the one protobuf library of the project. The descriptor is converted
 * ahead of time into protobufjs JSON (proto/onnx-schema.ts, written by proto/onnx-schema-gen.ts), so that
 * loading the schema costs protobufjs alone, not @bufbuild's runtime: it is on every `gridpipe model` start.
 */
import protobuf from 'protobufjs';
import { ONNX_SCHEMA } from './onnx-schema.js';

/** An int64 as protobufjs decodes it: a number, or a Long when it does not fit 53 bits. */
export type Int64 = number | { low: number; high: number; unsigned: boolean; toNumber(): number };

export interface StringStringEntryProto { key?: string; value?: string }
export interface OperatorSetIdProto { domain?: string; version?: Int64 }
export interface TensorShapeDimension { dimValue?: Int64 | null; dimParam?: string | null; denotation?: string }
export interface TensorShapeProto { dim?: TensorShapeDimension[] }
export interface TypeProto {
  tensorType?: { elemType?: number; shape?: TensorShapeProto | null } | null;
  sequenceType?: { elemType?: TypeProto | null } | null;
  optionalType?: { elemType?: TypeProto | null } | null;
  mapType?: { keyType?: number; valueType?: TypeProto | null } | null;
  sparseTensorType?: { elemType?: number; shape?: TensorShapeProto | null } | null;
  denotation?: string;
}
export interface ValueInfoProto { name?: string; type?: TypeProto | null; docString?: string; metadataProps?: StringStringEntryProto[] }
export interface TensorProto {
  dims?: Int64[];
  dataType?: number;
  segment?: { begin?: Int64; end?: Int64 } | null;
  floatData?: number[];
  int32Data?: number[];
  stringData?: Uint8Array[];
  int64Data?: Int64[];
  name?: string;
  docString?: string;
  rawData?: Uint8Array;
  externalData?: StringStringEntryProto[];
  dataLocation?: number;
  doubleData?: number[];
  uint64Data?: Int64[];
  metadataProps?: StringStringEntryProto[];
}
export interface AttributeProto {
  name?: string;
  refAttrName?: string;
  docString?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto | null;
  g?: GraphProto | null;
  floats?: number[];
  ints?: Int64[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparseTensor?: unknown;
  sparseTensors?: unknown[];
  tp?: TypeProto | null;
  typeProtos?: TypeProto[];
}
export interface NodeProto {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  domain?: string;
  overload?: string;
  attribute?: AttributeProto[];
  docString?: string;
  metadataProps?: StringStringEntryProto[];
}
export interface GraphProto {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparseInitializer?: unknown[];
  docString?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  valueInfo?: ValueInfoProto[];
  quantizationAnnotation?: unknown[];
  metadataProps?: StringStringEntryProto[];
}
export interface ModelProto {
  irVersion?: Int64;
  opsetImport?: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: Int64;
  docString?: string;
  graph?: GraphProto | null;
  metadataProps?: StringStringEntryProto[];
  trainingInfo?: unknown[];
  functions?: unknown[];
  configuration?: unknown[];
}

/** AttributeProto.AttributeType values. */
export const AttributeType = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, SPARSE_TENSOR: 11, TYPE_PROTO: 13,
  FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSORS: 12, TYPE_PROTOS: 14,
} as const;

function loadOnnxRoot(): protobuf.Root {
  return protobuf.Root.fromJSON(ONNX_SCHEMA);
}

/** The protobufjs root holding package `onnx`. */
export const onnxRoot = loadOnnxRoot();

/** A protobufjs message type of the ONNX schema, typed by the interface of its decoded form. */
export interface OnnxType<T> {
  readonly type: protobuf.Type;
  decode(bytes: Uint8Array): T;
  encode(message: T): Uint8Array;
}

function onnxType<T>(name: string): OnnxType<T> {
  const type = onnxRoot.lookupType(`onnx.${name}`);
  return {
    type,
    decode: (bytes) => type.decode(bytes) as unknown as T,
    encode: (message) => type.encode(message as unknown as protobuf.Message).finish(),
  };
}

export const onnx = {
  ModelProto: onnxType<ModelProto>('ModelProto'),
  GraphProto: onnxType<GraphProto>('GraphProto'),
  NodeProto: onnxType<NodeProto>('NodeProto'),
  AttributeProto: onnxType<AttributeProto>('AttributeProto'),
  TensorProto: onnxType<TensorProto>('TensorProto'),
  ValueInfoProto: onnxType<ValueInfoProto>('ValueInfoProto'),
  TypeProto: onnxType<TypeProto>('TypeProto'),
  OperatorSetIdProto: onnxType<OperatorSetIdProto>('OperatorSetIdProto'),
};

/** Converts a decoded int64 to a JS number (exact up to 2^53, which covers every dimension and offset). */
export function int64ToNumber(value: Int64 | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}
