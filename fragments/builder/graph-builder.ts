/**
 * A small helper to assemble a GraphDoc by hand: nodes with unique readable names and typed attributes,
 * initializers from typed arrays or from the seeded generator, typed inputs/outputs/value_info with
 * symbolic dimensions, and shared small constants.
 */
import { AttributeType, type AttributeProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../../proto/onnx.js';
import { DataType, type DataTypeCode } from '../onnx/dtype.js';
import type { GraphDoc, ModelDoc, TensorBytes, Weight } from '../onnx/model-doc.js';
import { computedFloat32, generatedFloat32, tensorSeed, type WeightInit } from './rng.js';

/** A dimension: a fixed size, or a symbolic name such as "batch_size". */
export type Dim = number | string;

/** Typed arrays that can back a small initializer or tensor attribute. */
export type TensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;

/** An attribute value with its kind spelled out (needed for floats that happen to be integers). */
export type TypedAttr =
  | { attrType: 'int'; value: number | bigint }
  | { attrType: 'ints'; value: (number | bigint)[] }
  | { attrType: 'float'; value: number }
  | { attrType: 'floats'; value: number[] }
  | { attrType: 'string'; value: string }
  | { attrType: 'strings'; value: string[] }
  | { attrType: 'tensor'; value: TensorProto };

/**
 * An attribute value: plain values are typed by their form (integer number or bigint → INT, other number
 * → FLOAT, string → STRING, arrays likewise, a TensorProto object → TENSOR); use `attr.*` to force a kind.
 */
export type AttrValue = number | bigint | string | number[] | bigint[] | string[] | TensorProto | TypedAttr;

/** Builders of explicitly typed attribute values. */
export const attr = {
  /** An INT attribute. */
  int: (value: number | bigint): TypedAttr => ({ attrType: 'int', value }),
  /** An INTS attribute. */
  ints: (value: (number | bigint)[]): TypedAttr => ({ attrType: 'ints', value }),
  /** A FLOAT attribute (even when the value is a whole number). */
  float: (value: number): TypedAttr => ({ attrType: 'float', value }),
  /** A FLOATS attribute. */
  floats: (value: number[]): TypedAttr => ({ attrType: 'floats', value }),
  /** A STRING attribute (UTF-8). */
  string: (value: string): TypedAttr => ({ attrType: 'string', value }),
  /** A STRINGS attribute (UTF-8). */
  strings: (value: string[]): TypedAttr => ({ attrType: 'strings', value }),
  /** A TENSOR attribute. */
  tensor: (value: TensorProto): TypedAttr => ({ attrType: 'tensor', value }),
};

const utf8 = new TextEncoder();

function isTypedAttr(v: AttrValue): v is TypedAttr {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && 'attrType' in v;
}

/** Encodes one attribute value as an AttributeProto named `name`. */
export function makeAttribute(name: string, value: AttrValue): AttributeProto {
  const v: TypedAttr = isTypedAttr(value) ? value : inferAttr(name, value);
  switch (v.attrType) {
    case 'int': return { name, type: AttributeType.INT, i: toInt(v.value) };
    case 'ints': return { name, type: AttributeType.INTS, ints: v.value.map(toInt) };
    case 'float': return { name, type: AttributeType.FLOAT, f: v.value };
    case 'floats': return { name, type: AttributeType.FLOATS, floats: v.value };
    case 'string': return { name, type: AttributeType.STRING, s: utf8.encode(v.value) };
    case 'strings': return { name, type: AttributeType.STRINGS, strings: v.value.map((s) => utf8.encode(s)) };
    case 'tensor': return { name, type: AttributeType.TENSOR, t: v.value };
  }
}

function inferAttr(name: string, value: Exclude<AttrValue, TypedAttr>): TypedAttr {
  if (typeof value === 'bigint') return { attrType: 'int', value };
  if (typeof value === 'number') return Number.isInteger(value) ? { attrType: 'int', value } : { attrType: 'float', value };
  if (typeof value === 'string') return { attrType: 'string', value };
  if (Array.isArray(value)) {
    if (value.every((x) => typeof x === 'string')) return value.length === 0 ? { attrType: 'ints', value: [] } : { attrType: 'strings', value: value as string[] };
    if (value.every((x) => typeof x === 'bigint' || (typeof x === 'number' && Number.isInteger(x)))) return { attrType: 'ints', value: value as (number | bigint)[] };
    if (value.every((x) => typeof x === 'number')) return { attrType: 'floats', value: value as number[] };
    throw new TypeError(`attribute "${name}": mixed array`);
  }
  if (typeof value === 'object' && value !== null) return { attrType: 'tensor', value };
  throw new TypeError(`attribute "${name}": unsupported value`);
}

/** int64 values for protobufjs: numbers stay numbers; bigints must fit 53 bits. */
function toInt(v: number | bigint): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new RangeError(`int attribute ${String(v)} does not fit 53 bits`);
  return n;
}

/** ONNX element type of a typed array. */
export function dataTypeOf(data: TensorData): DataTypeCode {
  if (data instanceof Float32Array) return DataType.FLOAT;
  if (data instanceof Float64Array) return DataType.DOUBLE;
  if (data instanceof BigInt64Array) return DataType.INT64;
  if (data instanceof Int32Array) return DataType.INT32;
  if (data instanceof Int8Array) return DataType.INT8;
  return DataType.UINT8;
}

function bytesOf(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
}

/** A complete TensorProto (raw_data filled) from a typed array; for tensor attributes and small tensors. */
export function makeTensor(dims: number[], data: TensorData, name?: string, dataType: DataTypeCode = dataTypeOf(data)): TensorProto {
  checkCount(dims, data.length, name ?? 'tensor');
  return { ...(name !== undefined ? { name } : {}), dims, dataType, rawData: bytesOf(data) };
}

function checkCount(dims: number[], count: number, what: string): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== count) throw new RangeError(`${what}: dims [${dims.join(', ')}] hold ${expected} elements, data has ${count}`);
}

/** A ValueInfoProto of a tensor with element type `dataType` and dims (numbers fixed, strings symbolic). */
export function valueInfo(name: string, dataType: DataTypeCode, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: dataType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export interface NodeOptions {
  /** Node name; made unique by appending `_1`, `_2`, ... when taken. Defaults to `/<opType>`. */
  name?: string;
  /** Output names, or how many outputs to name `<node name>_output_<k>` (default 1). */
  outputs?: string[] | number;
  attrs?: Record<string, AttrValue | undefined>;
  /** Operator domain; default the ONNX domain. */
  domain?: string;
}

export interface InitializerOptions {
  /** Whether the tensor counts as a learned parameter in `parameterCount` (default true). */
  parameter?: boolean;
}

/** Assembles a GraphDoc node by node. */
export class GraphBuilder {
  readonly name: string;
  /** The seed that generated initializers derive their per-tensor seeds from. */
  readonly seed: number;
  private readonly nodes: NodeProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly valueInfos: ValueInfoProto[] = [];
  private readonly weights: Weight[] = [];
  private readonly usedNodeNames = new Set<string>();
  private readonly tensorNames = new Set<string>();
  private readonly constants = new Map<string, string>();
  private parameters = 0;

  constructor(name: string, seed = 0) {
    this.name = name;
    this.seed = seed;
  }

  /** Elements of the initializers added as parameters so far. */
  get parameterCount(): number {
    return this.parameters;
  }

  /** The nodes added so far (live array; read only). */
  get nodeList(): readonly NodeProto[] {
    return this.nodes;
  }

  /** A node name not used yet: `base`, else `base_1`, `base_2`, ... */
  uniqueNodeName(base: string): string {
    let name = base;
    for (let k = 1; this.usedNodeNames.has(name); k++) name = `${base}_${k}`;
    this.usedNodeNames.add(name);
    return name;
  }

  /** Adds a node and returns the names of its outputs. */
  node(opType: string, inputs: string[], options: NodeOptions = {}): string[] {
    const name = this.uniqueNodeName(options.name ?? `/${opType}`);
    const outputs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({ length: options.outputs ?? 1 }, (_, k) => `${name}_output_${k}`);
    for (const o of outputs) this.claimTensorName(o);
    const attribute = Object.entries(options.attrs ?? {})
      .filter((e): e is [string, AttrValue] => e[1] !== undefined)
      .map(([k, v]) => makeAttribute(k, v));
    const node: NodeProto = { name, opType, input: inputs, output: outputs };
    if (attribute.length > 0) node.attribute = attribute;
    if (options.domain) node.domain = options.domain;
    this.nodes.push(node);
    return outputs;
  }

  /** Adds a single-output node and returns its output name. */
  op(opType: string, inputs: string[], options: Omit<NodeOptions, 'outputs'> & { output?: string } = {}): string {
    const { output, ...rest } = options;
    return this.node(opType, inputs, { ...rest, outputs: output !== undefined ? [output] : 1 })[0];
  }

  /** Adds an initializer held in memory, from a typed array; returns its name. */
  initializer(name: string, dims: number[], data: TensorData, options: InitializerOptions & { dataType?: DataTypeCode } = {}): string {
    checkCount(dims, data.length, name);
    return this.addWeight(name, dims, options.dataType ?? dataTypeOf(data), { kind: 'inline', bytes: bytesOf(data) }, options);
  }

  /** Adds a float32 initializer generated from the graph seed and its name; returns its name. */
  generated(name: string, dims: number[], init: WeightInit, options: InitializerOptions = {}): string {
    const count = dims.reduce((a, b) => a * b, 1);
    return this.addWeight(name, dims, DataType.FLOAT, generatedFloat32(count, tensorSeed(this.seed, name), init), options);
  }

  /** Adds a float32 initializer computed chunk by chunk by `fill(out, startElement)`; returns its name. */
  computed(name: string, dims: number[], fill: (out: Float32Array, start: number) => void, options: InitializerOptions = {}): string {
    const count = dims.reduce((a, b) => a * b, 1);
    return this.addWeight(name, dims, DataType.FLOAT, computedFloat32(count, fill), options);
  }

  /** Adds an initializer with bytes from anywhere (a file range, generated, inline); returns its name. */
  weight(name: string, dims: number[], dataType: DataTypeCode, bytes: TensorBytes, options: InitializerOptions = {}): string {
    return this.addWeight(name, dims, dataType, bytes, options);
  }

  /** A shared int64 constant (an initializer, not a parameter), made once per value and shape. */
  int64(values: number | number[], dims?: number[]): string {
    const list = Array.isArray(values) ? values : [values];
    const shape = dims ?? (Array.isArray(values) ? [list.length] : []);
    return this.sharedConstant('int64', list, shape, () => BigInt64Array.from(list, (v) => BigInt(v)));
  }

  /** A shared float32 constant (an initializer, not a parameter), made once per value and shape. */
  float32(values: number | number[], dims?: number[]): string {
    const list = Array.isArray(values) ? values : [values];
    const shape = dims ?? (Array.isArray(values) ? [list.length] : []);
    return this.sharedConstant('float', list, shape, () => Float32Array.from(list));
  }

  private sharedConstant(kind: string, list: number[], dims: number[], data: () => TensorData): string {
    const key = `${kind}:${dims.join('x')}:${list.join(',')}`;
    const found = this.constants.get(key);
    if (found) return found;
    const text = list.length <= 8 ? list.map((v) => String(v).replaceAll('-', 'm').replaceAll('.', 'p').replaceAll('+', '')).join('_') : `n${this.constants.size}`;
    let name = `/constants/${kind}${dims.length === 0 ? '' : `[${dims.join('x')}]`}_${text}`;
    for (let k = 1; this.tensorNames.has(name); k++) name = `${name}_${k}`;
    this.initializer(name, dims, data(), { parameter: false });
    this.constants.set(key, name);
    return name;
  }

  private addWeight(name: string, dims: number[], dataType: DataTypeCode, bytes: TensorBytes, options: InitializerOptions): string {
    this.claimTensorName(name);
    this.weights.push({ header: { name, dims, dataType }, bytes });
    if (options.parameter ?? true) this.parameters += dims.reduce((a, b) => a * b, 1);
    return name;
  }

  private claimTensorName(name: string): void {
    if (this.tensorNames.has(name)) throw new Error(`tensor name "${name}" is used twice`);
    this.tensorNames.add(name);
  }

  /** Declares a graph input; returns its name. */
  input(name: string, dataType: DataTypeCode, dims: Dim[]): string {
    this.claimTensorName(name);
    this.inputs.push(valueInfo(name, dataType, dims));
    return name;
  }

  /** Declares a graph output (a tensor some node produces); returns its name. */
  output(name: string, dataType: DataTypeCode, dims: Dim[]): string {
    this.outputs.push(valueInfo(name, dataType, dims));
    return name;
  }

  /** Records the type and shape of an intermediate tensor; returns its name. */
  valueInfo(name: string, dataType: DataTypeCode, dims: Dim[]): string {
    this.valueInfos.push(valueInfo(name, dataType, dims));
    return name;
  }

  /** The graph assembled so far. */
  build(): GraphDoc {
    return {
      name: this.name,
      node: [...this.nodes],
      input: [...this.inputs],
      output: [...this.outputs],
      valueInfo: [...this.valueInfos],
      initializer: [...this.weights],
      rest: {},
    };
  }
}

export interface ModelOptions {
  /** metadata_props of the model. */
  metadata?: Record<string, string>;
  docString?: string;
  producerName?: string;
  producerVersion?: string;
  /** Default-domain opset (default 17). */
  opset?: number;
  /** IR version (default 8). */
  irVersion?: number;
}

/** Wraps a graph into a ModelDoc (IR 8, opset 17 of the default domain unless told otherwise). */
export function makeModel(graph: GraphDoc, options: ModelOptions = {}): ModelDoc {
  return {
    model: {
      irVersion: options.irVersion ?? 8,
      opsetImport: [{ domain: '', version: options.opset ?? 17 }],
      producerName: options.producerName ?? 'gridpipe',
      producerVersion: options.producerVersion ?? '0.1.0',
      modelVersion: 1,
      ...(options.docString ? { docString: options.docString } : {}),
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    },
    graph,
  };
}
