/**
 * Shape inference (fragments/analysis/): symbolic dimensions in canonical form, and tensor shapes propagated
 * through MatMul, broadcasting and PyTorch's dynamic Reshape chains.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { AttributeType, type AttributeProto, type GraphProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../../proto/onnx.js';
import type { ModelDoc, Weight } from '../../fragments/onnx/model-doc.js';
import { DataType, dataTypeFromOrt, ortTypeName } from '../../fragments/onnx/dtype.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { readModel } from '../../fragments/onnx/read.js';
import {
  analyzeModel, graphOpsets, inferTensorInfo, nodeFlops, resolveShape, UNKNOWN_DIM_PREFIX, type Dim, type TensorInfo,
} from '../../fragments/analysis/infer.js';
import { dimAdd, dimCeilDiv, dimEquals, dimFloorDiv, dimMax, dimMul, dimSub, normalizeDim } from '../../fragments/analysis/symbolic.js';
import { buildModel } from '../../fragments/builder/index.js';
import { writeExporterFixtures } from '../fixtures/exporter-shaped.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-infer-');
afterAll(() => tmp.cleanup());

const F = DataType.FLOAT;
const I64 = DataType.INT64;
const BOOL = DataType.BOOL;
/** INT64_MAX as exporters write it for "to the end" (encoded clamped to 2^63 - 1). */
const MAX = 2 ** 63;

// ---------------------------------------------------------------------------------------------------
// Graph building helpers

type DimSpec = number | string | null;

function vi(name: string, elemType?: number, dims?: DimSpec[]): ValueInfoProto {
  if (elemType === undefined) return { name };
  const shape = dims ? { dim: dims.map((d) => (d === null ? {} : typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } : undefined;
  return { name, type: { tensorType: shape ? { elemType, shape } : { elemType } } };
}

function bytesOf(dataType: number, values: number[]): Uint8Array {
  const typed = dataType === I64 ? BigInt64Array.from(values.map((v) => (v >= 2 ** 63 ? 2n ** 63n - 1n : BigInt(v))))
    : dataType === DataType.INT32 ? Int32Array.from(values)
      : dataType === BOOL || dataType === DataType.UINT8 ? Uint8Array.from(values)
        : Float32Array.from(values);
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

function weight(name: string, dataType: number, dims: number[], values?: number[]): Weight {
  const count = dims.reduce((a, b) => a * b, 1);
  const data = values ?? Array.from({ length: count }, (_, i) => ((i * 7919) % 97) / 97 - 0.5);
  return { header: { name, dataType, dims }, bytes: { kind: 'inline', bytes: bytesOf(dataType, data) } };
}

function tensor(dataType: number, dims: number[], values: number[]): TensorProto {
  return { dataType, dims, rawData: bytesOf(dataType, values) };
}

type AttrValue = { i: number } | { f: number } | { s: string } | { ints: number[] } | { floats: number[] } | { t: TensorProto } | { g: GraphProto };

function attr(name: string, v: AttrValue): AttributeProto {
  if ('i' in v) return { name, type: AttributeType.INT, i: v.i };
  if ('f' in v) return { name, type: AttributeType.FLOAT, f: v.f };
  if ('s' in v) return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v.s) };
  if ('ints' in v) return { name, type: AttributeType.INTS, ints: v.ints };
  if ('floats' in v) return { name, type: AttributeType.FLOATS, floats: v.floats };
  if ('t' in v) return { name, type: AttributeType.TENSOR, t: v.t };
  return { name, type: AttributeType.GRAPH, g: v.g };
}

let nodeCounter = 0;
function n(opType: string, input: string[], output: string[], attrs: Record<string, AttrValue> = {}, domain?: string): NodeProto {
  const node: NodeProto = { opType, input, output, name: `${opType}_${nodeCounter++}` };
  const list = Object.entries(attrs).map(([k, v]) => attr(k, v));
  if (list.length) node.attribute = list;
  if (domain) node.domain = domain;
  return node;
}

function constI64(out: string, values: number[], dims: number[] = [values.length]): NodeProto {
  return n('Constant', [], [out], { value: { t: tensor(I64, dims, values) } });
}

function model(opts: {
  nodes: NodeProto[]; inputs: ValueInfoProto[]; outputs: ValueInfoProto[]; inits?: Weight[];
  opset?: number; valueInfo?: ValueInfoProto[]; ms?: boolean;
}): ModelDoc {
  const opsetImport = [{ domain: '', version: opts.opset ?? 17 }];
  if (opts.ms) opsetImport.push({ domain: 'com.microsoft', version: 1 });
  return {
    model: { irVersion: 8, opsetImport, producerName: 'infer-test' },
    graph: {
      name: 'g', node: opts.nodes, input: opts.inputs, output: opts.outputs, valueInfo: opts.valueInfo ?? [],
      initializer: opts.inits ?? [], rest: {},
    },
  };
}

function shapeOf(infos: Map<string, TensorInfo>, name: string): Dim[] | undefined {
  return infos.get(name)?.shape;
}

// ---------------------------------------------------------------------------------------------------

describe('symbolic dimensions', () => {
  it('keeps a canonical form for sums, products and divisions', () => {
    expect(dimAdd('sequence_length', 'past_sequence_length')).toBe('past_sequence_length + sequence_length');
    expect(dimEquals('seq + past', 'past + seq')).toBe(true);
    expect(dimMul('batch', 'seq')).toBe('batch*seq');
    expect(dimSub(dimAdd('a', 3), 3)).toBe('a');
    expect(dimFloorDiv(dimMul('batch', 768), 12)).toBe('64*batch');
    expect(dimFloorDiv(dimSub('H', 1), 2)).toBe('(H + 1) / 2 - 1');
    expect(dimAdd(dimFloorDiv(dimSub('H', 1), 2) as Dim, 1)).toBe('(H + 1) / 2');
    expect(dimCeilDiv('H', 2)).toBe('(H + 1) / 2');
    expect(dimMax('P', dimAdd('P', 'S'))).toBe('P + S');
    expect(normalizeDim('2 * (a + 1) - 2')).toBe('2*a');
    expect(normalizeDim('batch size')).toBe('batch size');
  });

  it('resolveShape binds symbols and evaluates expressions', () => {
    const dims = { batch: 2, sequence_length: 5, past_sequence_length: 7, H: 9 };
    expect(resolveShape(['batch', 'past_sequence_length + sequence_length', 3], dims)).toEqual([2, 12, 3]);
    expect(resolveShape(['(H + 1) / 2', '2*sequence_length - 1', 'batch*sequence_length', 'H / 2'], dims)).toEqual([5, 9, 10, 4]);
    expect(resolveShape(['max(sequence_length, past_sequence_length)', 'min(batch, 1) + floor(H / 4)'], dims)).toEqual([7, 3]);
    // A key that is no expression still binds exactly.
    expect(resolveShape(['batch size', 'p2o.DynamicDimension.0'], { 'batch size': 4, 'p2o.DynamicDimension.0': 3 })).toEqual([4, 3]);
    expect(resolveShape(['unknown + 1', 'batch'], dims, () => 10)).toEqual([11, 2]);
    expect(() => resolveShape(['nobody'], dims)).toThrow(/nobody/);
  });
});

describe('inferTensorInfo', () => {
  it('propagates MatMul and broadcasting through a chain', () => {
    const doc = model({
      nodes: [
        n('MatMul', ['x', 'w'], ['h']),
        n('Add', ['h', 'bias'], ['h2']),
        n('Mul', ['h2', 'scale'], ['h3']),
        n('Relu', ['h3'], ['h4']),
        n('MatMul', ['h4', 'y'], ['scores']),
        n('MatMul', ['v', 'w2'], ['vec']),
        n('MatMul', ['h4', 'v2'], ['mv']),
        n('Add', ['scores', 'mask'], ['masked']),
        n('Transpose', ['h4'], ['t'], { perm: { ints: [0, 2, 1] } }),
        n('Softmax', ['masked'], ['probs'], { axis: { i: -1 } }),
        n('Sum', ['scores', 'mask', 'one'], ['sum3']),
      ],
      inputs: [
        vi('x', F, ['batch', 'seq', 64]), vi('scale', F, ['batch', 1, 1]), vi('y', F, ['batch', 128, 'seq']),
        vi('v', F, [64]), vi('v2', F, [128]), vi('mask', F, [1, 1, 'seq']), vi('one', F, [1]),
      ],
      outputs: [vi('probs', F)],
      inits: [weight('w', F, [64, 128]), weight('bias', F, [128]), weight('w2', F, [64, 10])],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('h')).toEqual({ dtype: F, shape: ['batch', 'seq', 128] });
    expect(shapeOf(infos, 'h2')).toEqual(['batch', 'seq', 128]);
    expect(shapeOf(infos, 'h3')).toEqual(['batch', 'seq', 128]);
    expect(infos.get('scores')).toEqual({ dtype: F, shape: ['batch', 'seq', 'seq'] });
    expect(shapeOf(infos, 'vec')).toEqual([10]);
    expect(shapeOf(infos, 'mv')).toEqual(['batch', 'seq']);
    expect(shapeOf(infos, 'masked')).toEqual(['batch', 'seq', 'seq']);
    expect(shapeOf(infos, 't')).toEqual(['batch', 128, 'seq']);
    expect(infos.get('probs')).toEqual({ dtype: F, shape: ['batch', 'seq', 'seq'] });
    expect(shapeOf(infos, 'sum3')).toEqual(['batch', 'seq', 'seq']);
    // Initializers and inputs are there too.
    expect(infos.get('w')).toEqual({ dtype: F, shape: [64, 128] });
    expect(infos.get('x')).toEqual({ dtype: F, shape: ['batch', 'seq', 64] });
  });

  it('gives Reshape a symbolic shape through a PyTorch Shape→Gather→Unsqueeze→Concat chain', () => {
    const doc = model({
      opset: 13,
      nodes: [
        n('Shape', ['x'], ['s']),
        constI64('i0', [0], []),
        constI64('i1', [1], []),
        n('Gather', ['s', 'i0'], ['b'], { axis: { i: 0 } }),
        n('Gather', ['s', 'i1'], ['q'], { axis: { i: 0 } }),
        constI64('ax0', [0]),
        n('Unsqueeze', ['b', 'ax0'], ['b1']),
        n('Unsqueeze', ['q', 'ax0'], ['q1']),
        constI64('heads', [12, 64]),
        n('Concat', ['b1', 'q1', 'heads'], ['shape4'], { axis: { i: 0 } }),
        n('Reshape', ['x', 'shape4'], ['r4']),
        n('Transpose', ['r4'], ['t4'], { perm: { ints: [0, 2, 1, 3] } }),
        // x.view(b, -1, 64): -1 becomes 12*seq.
        constI64('m1', [-1, 64]),
        n('Concat', ['b1', 'm1'], ['shape3'], { axis: { i: 0 } }),
        n('Reshape', ['x', 'shape3'], ['r3']),
        // Reshape back with 0 (copy) and a computed product: [b, q*12*64] via Mul on shape values.
        constI64('c768', [768]),
        n('Mul', ['q1', 'c768'], ['qd']),
        n('Concat', ['b1', 'qd'], ['shape2'], { axis: { i: 0 } }),
        n('Reshape', ['x', 'shape2'], ['r2']),
        // A constant-of-shape mask [b, 1, q, q] and a Range over q.
        constI64('one', [1]),
        n('Concat', ['b1', 'one', 'q1', 'q1'], ['mshape'], { axis: { i: 0 } }),
        n('ConstantOfShape', ['mshape'], ['mask'], { value: { t: tensor(DataType.FLOAT, [1], [0]) } }),
        constI64('zero', [0], []),
        constI64('step', [1], []),
        n('Range', ['zero', 'q', 'step'], ['positions']),
        n('Expand', ['positions', 'b1q'], ['pos2']),
        n('Concat', ['b1', 'q1'], ['b1q'], { axis: { i: 0 } }),
      ],
      inputs: [vi('x', F, ['batch', 'seq', 768])],
      outputs: [vi('t4', F), vi('r3', F), vi('r2', F), vi('mask', F), vi('pos2', I64)],
    });
    const { infos, values } = analyzeModel(doc);
    expect(values.get('shape4')?.data).toEqual(['batch', 'seq', 12, 64]);
    expect(infos.get('shape4')).toEqual({ dtype: I64, shape: [4] });
    expect(infos.get('r4')).toEqual({ dtype: F, shape: ['batch', 'seq', 12, 64] });
    expect(infos.get('t4')).toEqual({ dtype: F, shape: ['batch', 12, 'seq', 64] });
    expect(shapeOf(infos, 'r3')).toEqual(['batch', '12*seq', 64]);
    expect(shapeOf(infos, 'r2')).toEqual(['batch', '768*seq']);
    expect(infos.get('mask')).toEqual({ dtype: F, shape: ['batch', 1, 'seq', 'seq'] });
    expect(infos.get('positions')).toEqual({ dtype: I64, shape: ['seq'] });
    // The graph lists the Concat after its consumer: inference still orders nodes.
    expect(shapeOf(infos, 'pos2')).toEqual(['batch', 'seq']);
  });

  it('handles Conv and pooling with pads, strides, auto_pad and ceil_mode', () => {
    const doc = model({
      nodes: [
        n('Conv', ['img', 'w1', 'b1'], ['c1'], { kernel_shape: { ints: [7, 7] }, strides: { ints: [2, 2] }, pads: { ints: [3, 3, 3, 3] } }),
        n('MaxPool', ['c1'], ['p1', 'idx'], { kernel_shape: { ints: [3, 3] }, strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] } }),
        n('Conv', ['p1', 'w2'], ['c2'], { auto_pad: { s: 'SAME_UPPER' }, strides: { ints: [2, 2] } }),
        n('AveragePool', ['c2'], ['p2'], { kernel_shape: { ints: [3, 3] }, strides: { ints: [2, 2] }, ceil_mode: { i: 1 } }),
        n('GlobalAveragePool', ['p2'], ['gap']),
        n('Flatten', ['gap'], ['flat']),
        n('Conv', ['dyn', 'w3'], ['d1'], { pads: { ints: [1, 1, 1, 1] } }),
        n('Conv', ['dyn', 'w3'], ['d2'], { strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] } }),
        n('ConvTranspose', ['d1', 'wt'], ['up'], { strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] }, output_padding: { ints: [1, 1] } }),
        n('Conv', ['dyn', 'wg'], ['dw'], { group: { i: 8 }, kernel_shape: { ints: [3, 3] }, dilations: { ints: [2, 2] }, auto_pad: { s: 'VALID' } }),
      ],
      inputs: [vi('img', F, ['N', 3, 224, 224]), vi('dyn', F, [1, 8, 'H', 'W'])],
      outputs: [vi('flat', F)],
      inits: [weight('w1', F, [64, 3, 7, 7]), weight('b1', F, [64]), weight('w2', F, [32, 64, 3, 3]), weight('w3', F, [16, 8, 3, 3]),
        weight('wt', F, [16, 4, 3, 3]), weight('wg', F, [8, 1, 3, 3])],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('c1')).toEqual({ dtype: F, shape: ['N', 64, 112, 112] });
    expect(infos.get('p1')).toEqual({ dtype: F, shape: ['N', 64, 56, 56] });
    expect(infos.get('idx')).toEqual({ dtype: I64, shape: ['N', 64, 56, 56] });
    expect(shapeOf(infos, 'c2')).toEqual(['N', 32, 28, 28]);
    expect(shapeOf(infos, 'p2')).toEqual(['N', 32, 14, 14]);
    expect(shapeOf(infos, 'gap')).toEqual(['N', 32, 1, 1]);
    expect(shapeOf(infos, 'flat')).toEqual(['N', 32]);
    expect(shapeOf(infos, 'd1')).toEqual([1, 16, 'H', 'W']);
    expect(shapeOf(infos, 'd2')).toEqual([1, 16, '(H + 1) / 2', '(W + 1) / 2']);
    expect(shapeOf(infos, 'up')).toEqual([1, 4, '2*H', '2*W']);
    expect(shapeOf(infos, 'dw')).toEqual([1, 8, 'H - 4', 'W - 4']);
  });

  it('types Cast, comparisons, logic and Where', () => {
    const doc = model({
      nodes: [
        n('Cast', ['x'], ['xi'], { to: { i: I64 } }),
        n('Cast', ['x'], ['xh'], { to: { i: DataType.FLOAT16 } }),
        n('CastLike', ['xi', 'x'], ['xf']),
        n('Equal', ['xi', 'k'], ['eq']),
        n('Less', ['x', 'x'], ['lt']),
        n('Not', ['eq'], ['ne']),
        n('And', ['eq', 'lt'], ['both']),
        n('IsNaN', ['x'], ['nan']),
        n('Where', ['eq', 'xi', 'k'], ['w']),
        n('Where', ['both', 'x', 'fz'], ['wf']),
        n('Shape', ['x'], ['sh']),
        n('Size', ['x'], ['sz']),
        n('ArgMax', ['x'], ['am'], { axis: { i: 1 }, keepdims: { i: 0 } }),
        n('NonZero', ['eq'], ['nz']),
      ],
      inputs: [vi('x', F, ['b', 4]), vi('k', I64, [1])],
      outputs: [vi('w', I64)],
      inits: [weight('fz', F, [], [0])],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('xi')).toEqual({ dtype: I64, shape: ['b', 4] });
    expect(infos.get('xh')?.dtype).toBe(DataType.FLOAT16);
    expect(infos.get('xf')?.dtype).toBe(F);
    for (const t of ['eq', 'lt', 'ne', 'both', 'nan']) expect(infos.get(t)).toEqual({ dtype: BOOL, shape: ['b', 4] });
    expect(infos.get('w')).toEqual({ dtype: I64, shape: ['b', 4] });
    expect(infos.get('wf')).toEqual({ dtype: F, shape: ['b', 4] });
    expect(infos.get('sh')).toEqual({ dtype: I64, shape: [2] });
    expect(infos.get('sz')).toEqual({ dtype: I64, shape: [] });
    expect(infos.get('am')).toEqual({ dtype: I64, shape: ['b'] });
    const nz = infos.get('nz');
    expect(nz?.dtype).toBe(I64);
    expect(nz?.shape?.[0]).toBe(2);
    expect(String(nz?.shape?.[1])).toMatch(new RegExp(`^${UNKNOWN_DIM_PREFIX}`));
  });

  it('gives TopK [T, int64] outputs with k from a constant input or attribute', () => {
    const doc = model({
      nodes: [
        constI64('k', [5]),
        n('TopK', ['x', 'k'], ['vals', 'inds']),
        n('TopK', ['x', 'k'], ['v0', 'i0'], { axis: { i: 0 } }),
        n('TopK', ['x', 'kin'], ['vd', 'id']),
      ],
      inputs: [vi('x', DataType.FLOAT16, ['batch', 100]), vi('kin', I64, [1])],
      outputs: [vi('vals', DataType.FLOAT16), vi('inds', I64)],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('vals')).toEqual({ dtype: DataType.FLOAT16, shape: ['batch', 5] });
    expect(infos.get('inds')).toEqual({ dtype: I64, shape: ['batch', 5] });
    expect(shapeOf(infos, 'v0')).toEqual([5, 100]);
    const vd = shapeOf(infos, 'vd');
    expect(vd?.[0]).toBe('batch');
    expect(String(vd?.[1])).toMatch(/^unk__/);
    expect(infos.get('id')?.dtype).toBe(I64);
  });

  it('splits by attribute, by input, evenly and with num_outputs', () => {
    const doc = model({
      opset: 18,
      nodes: [
        constI64('sizes', [16, 48]),
        n('Split', ['x', 'sizes'], ['a', 'b'], { axis: { i: -1 } }),
        n('Split', ['qkv'], ['q', 'k', 'v'], { axis: { i: 2 }, num_outputs: { i: 3 } }),
        n('Split', ['odd'], ['o1', 'o2', 'o3'], { num_outputs: { i: 3 } }),
      ],
      inputs: [vi('x', F, ['batch', 64]), vi('qkv', F, ['batch', 'seq', '3*hidden']), vi('odd', F, [10])],
      outputs: [vi('a', F)],
    });
    const infos = inferTensorInfo(doc);
    expect(shapeOf(infos, 'a')).toEqual(['batch', 16]);
    expect(shapeOf(infos, 'b')).toEqual(['batch', 48]);
    for (const t of ['q', 'k', 'v']) expect(infos.get(t)).toEqual({ dtype: F, shape: ['batch', 'seq', 'hidden'] });
    expect([shapeOf(infos, 'o1'), shapeOf(infos, 'o2'), shapeOf(infos, 'o3')]).toEqual([[4], [4], [2]]);

    const old = model({
      opset: 11,
      nodes: [n('Split', ['x'], ['a', 'b'], { axis: { i: 1 }, split: { ints: [40, 24] } })],
      inputs: [vi('x', F, ['batch', 64])],
      outputs: [vi('a', F)],
    });
    const oi = inferTensorInfo(old);
    expect([shapeOf(oi, 'a'), shapeOf(oi, 'b')]).toEqual([['batch', 40], ['batch', 24]]);
  });

  it('slices with constant starts, ends, axes and steps, also on symbolic axes', () => {
    const doc = model({
      nodes: [
        constI64('s0', [0]), constI64('eMax', [MAX]), constI64('ax2', [2]), constI64('st2', [2]),
        n('Slice', ['x', 's0', 'eMax', 'ax2', 'st2'], ['even']),
        constI64('sNeg', [-10]), constI64('ax1', [1]),
        n('Slice', ['x', 'sNeg', 'eMax', 'ax1'], ['last10']),
        constI64('s1', [1]),
        n('Slice', ['x', 's1', 'eMax', 'ax1'], ['tail']),
        constI64('sRev', [-1]), constI64('eRev', [-MAX]), constI64('stRev', [-1]),
        n('Slice', ['x', 'sRev', 'eRev', 'ax2', 'stRev'], ['rev']),
        constI64('a', [1, 4]), constI64('bnd', [3, 100]), constI64('ax12', [1, 2]),
        n('Slice', ['y', 'a', 'bnd', 'ax12'], ['box']),
        n('Shape', ['x'], ['shp']),
        n('Slice', ['shp', 's1', 'eMax'], ['shpTail']),
        constI64('parts', [1, 2]),
        n('Split', ['shp', 'parts'], ['shpHead', 'shpRest']),
      ],
      inputs: [vi('x', F, ['batch', 'seq', 64]), vi('y', F, [2, 8, 50])],
      outputs: [vi('even', F)],
    });
    const { infos, values } = analyzeModel(doc);
    expect(shapeOf(infos, 'even')).toEqual(['batch', 'seq', 32]);
    expect(shapeOf(infos, 'last10')).toEqual(['batch', 10, 64]);
    expect(shapeOf(infos, 'tail')).toEqual(['batch', 'seq - 1', 64]);
    expect(shapeOf(infos, 'rev')).toEqual(['batch', 'seq', 64]);
    expect(shapeOf(infos, 'box')).toEqual([2, 2, 46]);
    expect(values.get('shpTail')?.data).toEqual(['seq', 64]);
    expect(values.get('shpHead')?.data).toEqual(['batch']);
    expect(values.get('shpRest')?.data).toEqual(['seq', 64]);
  });

  it('infers If outputs from branch bodies, constant-folds a known condition, and handles Loop and Scan', () => {
    const thenBranch: GraphProto = {
      name: 'then',
      node: [n('Constant', [], ['t_out'], { value: { t: tensor(F, [1, 3], [1, 2, 3]) } })],
      output: [vi('t_out', F, [1, 3])],
    };
    const elseBranch: GraphProto = {
      name: 'else',
      // Reads the outer `x`; its output declares no type, so inference must look into the body.
      node: [n('Add', ['x', 'x'], ['e_out'])],
      output: [vi('e_out')],
    };
    const loopBody: GraphProto = {
      name: 'body',
      input: [vi('iter', I64, []), vi('cond_in', BOOL, []), vi('acc_in', F)],
      node: [
        n('Add', ['acc_in', 'x'], ['acc_out']),
        n('Identity', ['cond_in'], ['cond_out']),
        n('ReduceSum', ['acc_out'], ['scan_out'], { keepdims: { i: 0 } }),
      ],
      output: [vi('cond_out', BOOL, []), vi('acc_out'), vi('scan_out')],
    };
    const scanBody: GraphProto = {
      name: 'scan',
      input: [vi('state_in'), vi('elem')],
      node: [n('Add', ['state_in', 'elem'], ['state_out']), n('Identity', ['state_out'], ['scan_y'])],
      output: [vi('state_out'), vi('scan_y')],
    };
    const doc = model({
      nodes: [
        n('If', ['cond'], ['y'], { then_branch: { g: thenBranch }, else_branch: { g: elseBranch } }),
        n('Constant', [], ['yes'], { value: { t: tensor(BOOL, [], [1]) } }),
        n('If', ['yes'], ['known'], { then_branch: { g: thenBranch }, else_branch: { g: elseBranch } }),
        constI64('trips', [4], []),
        n('Loop', ['trips', '', 'x'], ['acc', 'scanned'], { body: { g: loopBody } }),
        // A constant-true condition that the body passes through: the trip count still decides.
        n('Loop', ['trips', 'yes', 'x'], ['acc2', 'scanned2'], { body: { g: loopBody } }),
        // A condition the body computes: the iteration count is unknown.
        n('Loop', ['trips', 'cond', 'x'], ['acc3', 'scanned3'], { body: { g: { ...loopBody, node: [...(loopBody.node ?? []).slice(0, 1), n('Not', ['cond_in'], ['cond_out']), ...(loopBody.node ?? []).slice(2)] } } }),
        n('Scan', ['x', 'seqs'], ['final', 'ys'], { body: { g: scanBody }, num_scan_inputs: { i: 1 } }),
      ],
      inputs: [vi('cond', BOOL, []), vi('x', F, [1, 3]), vi('seqs', F, ['T', 1, 3])],
      outputs: [vi('y')],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('y')).toEqual({ dtype: F, shape: [1, 3] });
    expect(infos.get('known')).toEqual({ dtype: F, shape: [1, 3] });
    expect(infos.get('acc')).toEqual({ dtype: F, shape: [1, 3] });
    // ReduceSum without axes reduces all: a scalar per iteration.
    expect(infos.get('scanned')).toEqual({ dtype: F, shape: [4] });
    expect(infos.get('scanned2')).toEqual({ dtype: F, shape: [4] });
    expect(String(infos.get('scanned3')?.shape?.[0])).toMatch(/^unk__/);
    expect(infos.get('final')).toEqual({ dtype: F, shape: [1, 3] });
    expect(infos.get('ys')).toEqual({ dtype: F, shape: ['T', 1, 3] });
    // Tensors inside the bodies are not reported.
    expect(infos.has('t_out')).toBe(false);
    expect(infos.has('acc_out')).toBe(false);
  });

  it('covers normalization, quantization, Unique, Gather, Expand, Tile, Reduce, Pad, Resize, Einsum and constants', () => {
    const doc = model({
      opset: 18,
      nodes: [
        n('LayerNormalization', ['x', 'g', 'bb'], ['ln', 'mean', 'istd'], { axis: { i: -1 } }),
        n('DynamicQuantizeLinear', ['x'], ['q', 'qs', 'qz']),
        n('QuantizeLinear', ['x', 'sc', 'zp8'], ['q8']),
        n('DequantizeLinear', ['q8', 'sc', 'zp8'], ['dq']),
        n('MatMulInteger', ['q', 'wq'], ['mi']),
        n('Unique', ['ids'], ['u', 'ui', 'uinv', 'uc']),
        n('Gather', ['emb', 'ids'], ['e']),
        n('Gather', ['x', 'one'], ['col'], { axis: { i: 2 } }),
        n('ReduceMean', ['x', 'ax'], ['rm']),
        n('ReduceSum', ['x', 'ax'], ['rs'], { keepdims: { i: 0 } }),
        n('ReduceMax', ['x'], ['rall'], { keepdims: { i: 0 } }),
        constI64('pads', [0, 1, 0, 0, 2, 0]),
        n('Pad', ['x', 'pads'], ['padded']),
        n('Resize', ['img', '', 'scales'], ['up'], { mode: { s: 'nearest' } }),
        constI64('tsize', [1, 3, 10, 12]),
        n('Resize', ['img', '', '', 'tsize'], ['sized']),
        n('Einsum', ['qh', 'kh'], ['att'], { equation: { s: 'bhqd,bhkd->bhqk' } }),
        n('Einsum', ['x'], ['xsum'], { equation: { s: 'bsd->bd' } }),
        constI64('rep', [1, 2, 1]),
        n('Tile', ['x', 'rep'], ['tiled']),
        constI64('eshape', [4, 1, 1, 1]),
        n('Expand', ['x', 'eshape'], ['expanded']),
        n('Constant', [], ['cf'], { value_floats: { floats: [1, 2, 3] } }),
        n('Constant', [], ['ci'], { value_int: { i: 7 } }),
        n('ConstantOfShape', ['eshape'], ['filled'], { value: { t: tensor(I64, [1], [3]) } }),
        n('OneHot', ['ids', 'depth', 'ohv'], ['oh']),
        n('Squeeze', ['col2', 'ax1'], ['sq']),
        n('Unsqueeze', ['x', 'ax0'], ['usq']),
        n('Gather', ['x', 'one1'], ['col2'], { axis: { i: 2 } }),
        n('Dropout', ['x'], ['dr', 'drm']),
        n('BatchNormalization', ['img', 'bn', 'bn', 'bn', 'bn'], ['bnout']),
        n('DepthToSpace', ['img4'], ['d2s'], { blocksize: { i: 2 } }),
        n('RandomNormalLike', ['x'], ['rnd'], { dtype: { i: DataType.DOUBLE } }),
        n('EyeLike', ['sqm'], ['eye']),
        n('GatherElements', ['x', 'gidx'], ['ge'], { axis: { i: 1 } }),
        n('CumSum', ['x', 'ax'], ['cs']),
        n('Mod', ['ids', 'depth'], ['md']),
        n('LSTM', ['seqx', 'lw', 'lr'], ['ly', 'lh', 'lc'], { hidden_size: { i: 5 }, direction: { s: 'bidirectional' } }),
      ],
      inputs: [
        vi('x', F, ['b', 's', 8]), vi('ids', I64, ['b', 's']), vi('img', F, [1, 3, 'H', 'W']), vi('img4', F, [1, 8, 'H', 'W']),
        vi('qh', F, ['b', 4, 's', 16]), vi('kh', F, ['b', 4, 't', 16]), vi('sqm', F, [3, 3]), vi('gidx', I64, ['b', 2, 8]),
        vi('seqx', F, ['T', 'b', 7]),
      ],
      outputs: [vi('ln', F)],
      inits: [
        weight('g', F, [8]), weight('bb', F, [8]), weight('sc', F, [], [0.1]), weight('zp8', DataType.INT8, [], [0]),
        weight('wq', DataType.UINT8, [8, 4]), weight('emb', F, [100, 16]), weight('one', I64, [], [1]),
        weight('one1', I64, [1], [1]), weight('ax', I64, [1], [1]), weight('ax0', I64, [1], [0]), weight('ax1', I64, [1], [2]),
        weight('scales', F, [4], [1, 1, 2, 2]), weight('depth', I64, [], [10]), weight('ohv', F, [2], [0, 1]),
        weight('bn', F, [3]), weight('lw', F, [2, 20, 7]), weight('lr', F, [2, 20, 5]),
      ],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('ln')).toEqual({ dtype: F, shape: ['b', 's', 8] });
    expect(infos.get('mean')).toEqual({ dtype: F, shape: ['b', 's', 1] });
    expect(infos.get('istd')).toEqual({ dtype: F, shape: ['b', 's', 1] });
    expect(infos.get('q')).toEqual({ dtype: DataType.UINT8, shape: ['b', 's', 8] });
    expect(infos.get('qs')).toEqual({ dtype: F, shape: [] });
    expect(infos.get('qz')).toEqual({ dtype: DataType.UINT8, shape: [] });
    expect(infos.get('q8')?.dtype).toBe(DataType.INT8);
    expect(infos.get('dq')?.dtype).toBe(F);
    expect(infos.get('mi')).toEqual({ dtype: DataType.INT32, shape: ['b', 's', 4] });
    expect(infos.get('u')?.dtype).toBe(I64);
    expect(infos.get('ui')?.dtype).toBe(I64);
    expect(infos.get('uinv')).toEqual({ dtype: I64, shape: ['b*s'] });
    expect(infos.get('uc')?.dtype).toBe(I64);
    expect(infos.get('e')).toEqual({ dtype: F, shape: ['b', 's', 16] });
    expect(shapeOf(infos, 'col')).toEqual(['b', 's']);
    expect(shapeOf(infos, 'rm')).toEqual(['b', 1, 8]);
    expect(shapeOf(infos, 'rs')).toEqual(['b', 8]);
    expect(shapeOf(infos, 'rall')).toEqual([]);
    expect(shapeOf(infos, 'padded')).toEqual(['b', 's + 3', 8]);
    expect(shapeOf(infos, 'up')).toEqual([1, 3, '2*H', '2*W']);
    expect(shapeOf(infos, 'sized')).toEqual([1, 3, 10, 12]);
    expect(shapeOf(infos, 'att')).toEqual(['b', 4, 's', 't']);
    expect(shapeOf(infos, 'xsum')).toEqual(['b', 8]);
    expect(shapeOf(infos, 'tiled')).toEqual(['b', '2*s', 8]);
    expect(shapeOf(infos, 'expanded')).toEqual([4, 'b', 's', 8]);
    expect(infos.get('cf')).toEqual({ dtype: F, shape: [3] });
    expect(infos.get('ci')).toEqual({ dtype: I64, shape: [] });
    expect(infos.get('filled')).toEqual({ dtype: I64, shape: [4, 1, 1, 1] });
    expect(infos.get('oh')).toEqual({ dtype: F, shape: ['b', 's', 10] });
    expect(shapeOf(infos, 'sq')).toEqual(['b', 's']);
    expect(shapeOf(infos, 'usq')).toEqual([1, 'b', 's', 8]);
    expect(infos.get('drm')).toEqual({ dtype: BOOL, shape: ['b', 's', 8] });
    expect(shapeOf(infos, 'bnout')).toEqual([1, 3, 'H', 'W']);
    expect(shapeOf(infos, 'd2s')).toEqual([1, 2, '2*H', '2*W']);
    expect(infos.get('rnd')?.dtype).toBe(DataType.DOUBLE);
    expect(infos.get('eye')).toEqual({ dtype: F, shape: [3, 3] });
    expect(shapeOf(infos, 'ge')).toEqual(['b', 2, 8]);
    expect(shapeOf(infos, 'cs')).toEqual(['b', 's', 8]);
    expect(infos.get('md')).toEqual({ dtype: I64, shape: ['b', 's'] });
    expect(shapeOf(infos, 'ly')).toEqual(['T', 2, 'b', 5]);
    expect(shapeOf(infos, 'lh')).toEqual([2, 'b', 5]);
    expect(shapeOf(infos, 'lc')).toEqual([2, 'b', 5]);
  });

  it('knows the com.microsoft ops that exporters emit', () => {
    const ms = 'com.microsoft';
    const doc = model({
      ms: true,
      nodes: [
        n('SkipLayerNormalization', ['x', 'skip', 'g', 'bb'], ['sln', 'slm', 'sli', 'slsum'], {}, ms),
        n('Attention', ['x', 'qkvw', 'qkvb', '', 'past'], ['att', 'present'], { num_heads: { i: 4 } }, ms),
        n('MultiHeadAttention', ['x', 'k3', 'v3', '', '', '', 'pk', 'pv'], ['mha', 'pko', 'pvo'], { num_heads: { i: 4 } }, ms),
        n('GroupQueryAttention', ['x', 'kv', 'kv', 'gpk', 'gpv', 'seqlens', 'total'], ['gqa', 'gk', 'gv'], { num_heads: { i: 4 }, kv_num_heads: { i: 2 } }, ms),
        n('FastGelu', ['x', 'bb'], ['fg'], {}, ms),
        n('BiasGelu', ['x', 'bb'], ['bg'], {}, ms),
        n('QuickGelu', ['x'], ['qg'], {}, ms),
        n('RotaryEmbedding', ['q4', 'pos', 'cos', 'sin'], ['rot'], {}, ms),
        n('SimplifiedLayerNormalization', ['x', 'g'], ['rms', 'rmsi'], {}, ''),
        n('SkipSimplifiedLayerNormalization', ['x', 'skip', 'g'], ['ssl', '', '', 'sslsum'], {}, ms),
        n('MatMulNBits', ['xh', 'qw', 'qsc'], ['mnb'], { K: { i: 32 }, N: { i: 96 }, bits: { i: 4 }, block_size: { i: 32 } }, ms),
        n('Gelu', ['x'], ['gelu'], {}, ms),
      ],
      inputs: [
        vi('x', F, ['batch', 'seq', 32]), vi('skip', F, ['batch', 'seq', 32]), vi('past', F, [2, 'batch', 4, 'past_seq', 8]),
        vi('k3', F, ['batch', 'kv_seq', 32]), vi('v3', F, ['batch', 'kv_seq', 32]), vi('pk', F, ['batch', 4, 'past_seq', 8]),
        vi('pv', F, ['batch', 4, 'past_seq', 8]), vi('kv', F, ['batch', 'seq', 16]), vi('gpk', F, ['batch', 2, 'max_seq', 8]),
        vi('gpv', F, ['batch', 2, 'max_seq', 8]), vi('seqlens', DataType.INT32, ['batch']), vi('total', DataType.INT32, []),
        vi('q4', DataType.FLOAT16, ['batch', 'seq', 32]), vi('pos', I64, ['batch', 'seq']), vi('cos', DataType.FLOAT16, [128, 4]),
        vi('sin', DataType.FLOAT16, [128, 4]), vi('xh', DataType.FLOAT16, ['batch', 'seq', 32]),
      ],
      outputs: [vi('att', F)],
      inits: [weight('g', F, [32]), weight('bb', F, [32]), weight('qkvw', F, [32, 96]), weight('qkvb', F, [96]),
        weight('qw', DataType.UINT8, [96, 1, 16]), weight('qsc', DataType.FLOAT16, [96])],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('sln')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('slsum')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('att')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('present')).toEqual({ dtype: F, shape: [2, 'batch', 4, 'past_seq + seq', 8] });
    expect(infos.get('mha')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('pko')).toEqual({ dtype: F, shape: ['batch', 4, 'kv_seq + past_seq', 8] });
    expect(infos.get('gqa')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('gk')?.shape?.slice(0, 2)).toEqual(['batch', 2]);
    expect(infos.get('gk')?.shape?.[3]).toBe(8);
    for (const t of ['fg', 'bg', 'qg', 'gelu', 'ssl', 'sslsum']) expect(infos.get(t)).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('rot')).toEqual({ dtype: DataType.FLOAT16, shape: ['batch', 'seq', 32] });
    expect(infos.get('rms')).toEqual({ dtype: F, shape: ['batch', 'seq', 32] });
    expect(infos.get('mnb')).toEqual({ dtype: DataType.FLOAT16, shape: ['batch', 'seq', 96] });
  });

  it('treats declared value infos as authoritative and survives unknown ops and malformed nodes', () => {
    const doc = model({
      nodes: [
        n('MatMul', ['x', 'w'], ['h']),
        n('MyCustomOp', ['h'], ['c'], {}, 'my.domain'),
        n('Relu', ['c'], ['r']),
        n('MatMul', ['missing_input', 'w'], ['m']),
        n('Reshape', ['x'], ['bad']),
        n('Concat', ['x', 'x'], ['bad2'], { axis: { i: 7 } }),
        n('Transpose', ['x'], ['bad3'], { perm: { ints: [0] } }),
        n('Gather', ['x', 'x'], ['bad4'], { axis: { i: -9 } }),
        { opType: 'Add' } as NodeProto,
        n('Identity', ['h'], ['declared']),
        n('Identity', ['h'], ['madeUp']),
        n('Identity', ['c'], ['partly']),
      ],
      inputs: [vi('x', F, ['batch', 16])],
      outputs: [vi('r', F)],
      valueInfo: [vi('declared', F, [7, 'batch']), vi('madeUp', F, ['Identity_dim_0', null]), vi('partly', DataType.DOUBLE, [null, 'cols'])],
      inits: [weight('w', F, [16, 4])],
    });
    const infos = inferTensorInfo(doc);
    expect(infos.get('h')).toEqual({ dtype: F, shape: ['batch', 4] });
    expect(infos.get('c')).toEqual({});
    // Relu keeps type, but knows nothing of an unknown input.
    expect(infos.get('r')).toEqual({ dtype: F });
    expect(infos.get('m')?.shape).toBeUndefined();
    expect(infos.get('bad')?.dtype).toBe(F);
    // Declared numbers and input-dim symbols win, even against inference.
    expect(infos.get('declared')).toEqual({ dtype: F, shape: [7, 'batch'] });
    // Unnamed declared dims, and names an exporter made up, take what inference derives from the inputs.
    expect(infos.get('madeUp')).toEqual({ dtype: F, shape: ['batch', 4] });
    const partly = infos.get('partly');
    expect(partly?.dtype).toBe(DataType.DOUBLE);
    expect(partly?.shape?.[1]).toBe('cols');
  });

  it('never throws on shuffled, cyclic or mangled graphs', () => {
    const base = readModel(path.resolve('test/fixtures/real/ch_ppocr_mobile_v2.0_cls_infer.onnx'));
    let seed = 7;
    const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
    const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
    const outputs = base.graph.node.flatMap((nd) => nd.output ?? []);
    for (let round = 0; round < 8; round++) {
      const nodes = base.graph.node.map((nd) => ({ ...nd, input: [...(nd.input ?? [])], attribute: [...(nd.attribute ?? [])] }));
      for (let i = nodes.length - 1; i > 0; i--) { const j = Math.floor(random() * (i + 1)); [nodes[i], nodes[j]] = [nodes[j], nodes[i]]; }
      for (const nd of nodes) {
        const r = random();
        if (r < 0.05) nd.input = nd.input.slice(0, 1);
        else if (r < 0.1) nd.input = nd.input.map(() => pick(outputs)); // may close cycles
        else if (r < 0.15) nd.attribute = nd.attribute.map((a) => ({ ...a, i: 999, ints: [999, -999], t: null, g: null }));
        else if (r < 0.17) nd.input = [...nd.input, 'nowhere', ''];
      }
      const doc: ModelDoc = { ...base, graph: { ...base.graph, node: nodes, valueInfo: [{ name: 'x' }, { name: 'y', type: { tensorType: { shape: { dim: [{}] } } } }] } };
      const infos = inferTensorInfo(doc);
      for (const o of outputs) expect(infos.has(o)).toBe(true);
    }
  });

  it('reads small initializers from inline bytes, typed fields and file ranges', () => {
    const file = path.join(tmp.dir, 'shape.bin');
    const bytes = bytesOf(I64, [7, 0, 2, 99]);
    writeFileSync(file, bytes);
    const doc = model({
      nodes: [
        n('Reshape', ['x', 'fileShape'], ['a']),
        n('Reshape', ['x', 'typedShape'], ['b']),
      ],
      inputs: [vi('x', F, ['batch', 28])],
      outputs: [vi('a', F)],
      inits: [
        // Bytes 8..24 of the file: [0, 2, 99]... use [0, 2] then -1 from typed.
        { header: { name: 'fileShape', dataType: I64, dims: [2] }, bytes: { kind: 'file', path: file, offset: 8, length: 16 } },
        { header: { name: 'typedShape', dataType: I64, dims: [3], int64Data: [0, -1, 4] } },
      ],
    });
    const { infos, values } = analyzeModel(doc);
    expect(values.get('fileShape')?.data).toEqual([0, 2]);
    expect(shapeOf(infos, 'a')).toEqual(['batch', 2]);
    expect(shapeOf(infos, 'b')).toEqual(['batch', 7, 4]);
    expect(graphOpsets(doc)).toEqual(new Map([['', 17]]));
  });
});

describe('nodeFlops', () => {
  it('counts 2·M·N·K for MatMul and Gemm, kernel×output for Conv', () => {
    const mm = n('MatMul', ['a', 'b'], ['c']);
    const gemm = n('Gemm', ['g', 'gw'], ['go'], { transB: { i: 1 } });
    const conv = n('Conv', ['img', 'w'], ['out'], { kernel_shape: { ints: [7, 7] }, strides: { ints: [2, 2] }, pads: { ints: [3, 3, 3, 3] } });
    const pool = n('MaxPool', ['out'], ['p'], { kernel_shape: { ints: [3, 3] }, strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] } });
    const relu = n('Relu', ['c'], ['r']);
    const reshape = n('Reshape', ['c', 'shape'], ['rs']);
    const softmax = n('Softmax', ['c'], ['sm']);
    const doc = model({
      nodes: [mm, gemm, conv, pool, relu, reshape, softmax],
      inputs: [vi('a', F, ['batch', 8, 16]), vi('g', F, ['m', 64]), vi('img', F, [1, 3, 224, 224]), vi('shape', I64, [2])],
      outputs: [vi('c', F)],
      inits: [weight('b', F, [16, 32]), weight('gw', F, [10, 64]), weight('w', F, [64, 3, 7, 7])],
    });
    const infos = inferTensorInfo(doc);
    expect(nodeFlops(mm, infos, { batch: 3 })).toBe(2 * 3 * 8 * 32 * 16);
    expect(nodeFlops(mm, infos, {})).toBe(2 * 1 * 8 * 32 * 16); // unbound symbols count as 1
    expect(nodeFlops(gemm, infos, { m: 5 })).toBe(2 * 5 * 10 * 64);
    expect(nodeFlops(conv, infos, {})).toBe(2 * 64 * 112 * 112 * 3 * 7 * 7);
    expect(nodeFlops(pool, infos, {})).toBe(64 * 56 * 56 * 9);
    expect(nodeFlops(relu, infos, { batch: 2 })).toBe(2 * 8 * 32);
    expect(nodeFlops(reshape, infos, { batch: 2 })).toBe(0);
    expect(nodeFlops(softmax, infos, { batch: 2 })).toBe(3 * 2 * 8 * 32);
    expect(nodeFlops(n('Nothing', ['zz'], ['yy']), infos, {})).toBe(0);
  });

  it('estimates attention and Einsum', () => {
    const mha = n('MultiHeadAttention', ['q', 'k', 'v'], ['o'], { num_heads: { i: 4 } }, 'com.microsoft');
    const ein = n('Einsum', ['qh', 'kh'], ['s'], { equation: { s: 'bhqd,bhkd->bhqk' } });
    const doc = model({
      ms: true,
      nodes: [mha, ein],
      inputs: [vi('q', F, ['b', 's', 32]), vi('k', F, ['b', 't', 32]), vi('v', F, ['b', 't', 32]),
        vi('qh', F, ['b', 4, 's', 8]), vi('kh', F, ['b', 4, 't', 8])],
      outputs: [vi('o', F)],
    });
    const infos = inferTensorInfo(doc);
    const dims = { b: 2, s: 5, t: 7 };
    expect(nodeFlops(mha, infos, dims)).toBe(2 * 2 * 5 * 7 * 32 * 2 + 3 * 2 * 4 * 5 * 7);
    expect(nodeFlops(ein, infos, dims)).toBe(2 * 2 * 4 * 5 * 7 * 8);
  });
});

// ---------------------------------------------------------------------------------------------------
// Against onnxruntime

/** A copy of the doc whose outputs carry only element types and which declares no value_info. */
function stripDeclarations(doc: ModelDoc): ModelDoc {
  const output = doc.graph.output.map((o) => ({ name: o.name, type: o.type?.tensorType ? { tensorType: { elemType: o.type.tensorType.elemType } } : o.type }));
  return { ...doc, graph: { ...doc.graph, output, valueInfo: [] } };
}

interface OrtCheck { checked: number; exact: number; withUnknownDims: number; untyped: string[]; mismatches: string[] }

/**
 * Infers the model with its output shapes and value_info stripped, exposes every top-level tensor whose
 * type inference knows as a graph output, runs onnxruntime and compares each tensor's dtype and dims with
 * the inferred ones (symbols bound from the feeds' shapes and `dims`; made-up symbols match anything).
 */
async function checkAgainstOrt(doc: ModelDoc, feeds: Record<string, ort.Tensor>, dims: Record<string, number>, file: string): Promise<OrtCheck> {
  const stripped = stripDeclarations(doc);
  const infos = inferTensorInfo(stripped);
  const bound: Record<string, number> = { ...dims };
  for (const input of doc.graph.input) {
    const feed = input.name ? feeds[input.name] : undefined;
    const shape = input.name ? infos.get(input.name)?.shape : undefined;
    if (feed && shape) shape.forEach((d, i) => { if (typeof d === 'string' && !(d in bound)) bound[d] = feed.dims[i]; });
  }
  const names = new Set(doc.graph.output.map((o) => o.name ?? ''));
  const untyped: string[] = [];
  const extra: ValueInfoProto[] = [];
  for (const node of doc.graph.node) {
    for (const o of node.output ?? []) {
      if (!o || names.has(o)) continue;
      const dtype = infos.get(o)?.dtype;
      if (dtype === undefined) { untyped.push(o); continue; }
      if (!ortTypeName(dtype)) continue;
      names.add(o);
      extra.push({ name: o, type: { tensorType: { elemType: dtype } } });
    }
  }
  const exposed: ModelDoc = { ...stripped, graph: { ...stripped.graph, output: [...stripped.graph.output, ...extra] } };
  await writeModel(exposed, file);
  const session = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'disabled' });
  const result: OrtCheck = { checked: 0, exact: 0, withUnknownDims: 0, untyped, mismatches: [] };
  try {
    const outputs = await session.run(feeds);
    for (const [name, t] of Object.entries(outputs)) {
      const info = infos.get(name);
      result.checked++;
      if (info?.dtype === undefined || dataTypeFromOrt(t.type) !== info.dtype) {
        result.mismatches.push(`${name}: dtype ${t.type} vs inferred ${info?.dtype}`);
        continue;
      }
      if (!info.shape) { result.mismatches.push(`${name}: shape unknown, ort [${t.dims.join(', ')}]`); continue; }
      let unknown = false;
      const resolved = resolveShape(info.shape, bound, () => { unknown = true; return -1; });
      const ok = resolved.length === t.dims.length && resolved.every((d, i) => d === t.dims[i] || (unknown && d < 0));
      if (!ok) result.mismatches.push(`${name}: [${info.shape.join(', ')}] = [${resolved.join(', ')}] vs ort [${t.dims.join(', ')}]`);
      else if (unknown) result.withUnknownDims++;
      else result.exact++;
    }
  } finally {
    await session.release();
  }
  return result;
}

function floats(dims: number[], seed = 1): ort.Tensor {
  const count = dims.reduce((a, b) => a * b, 1);
  return new ort.Tensor('float32', Float32Array.from({ length: count }, (_, i) => Math.sin(i * 0.37 + seed)), dims);
}

describe('inference against onnxruntime', () => {
  it('matches the dtypes and dims onnxruntime produces for a hand-built graph with symbolic dims', async () => {
    const doc = model({
      opset: 18,
      nodes: [
        // Projection + attention-style reshape via a Shape chain.
        n('MatMul', ['x', 'w'], ['h']),
        n('Add', ['h', 'bias'], ['hb']),
        n('Shape', ['hb'], ['s']),
        constI64('i0', [0], []), constI64('i1', [1], []),
        n('Gather', ['s', 'i0'], ['bsz'], { axis: { i: 0 } }),
        n('Gather', ['s', 'i1'], ['seq'], { axis: { i: 0 } }),
        constI64('ax0', [0]),
        n('Unsqueeze', ['bsz', 'ax0'], ['bsz1']),
        n('Unsqueeze', ['seq', 'ax0'], ['seq1']),
        constI64('hd', [4, -1]),
        n('Concat', ['bsz1', 'seq1', 'hd'], ['shp'], { axis: { i: 0 } }),
        n('Reshape', ['hb', 'shp'], ['heads']),
        n('Transpose', ['heads'], ['ht'], { perm: { ints: [0, 2, 1, 3] } }),
        n('Transpose', ['heads'], ['htT'], { perm: { ints: [0, 2, 3, 1] } }),
        n('MatMul', ['ht', 'htT'], ['scores']),
        n('Softmax', ['scores'], ['probs'], { axis: { i: -1 } }),
        // KV-cache style concat with a past of another length.
        n('Concat', ['past', 'hb'], ['present'], { axis: { i: 1 } }),
        n('ReduceMean', ['present', 'ax1'], ['pm'], { keepdims: { i: 1 } }),
        constI64('ax1', [1]),
        // Type-changing ops.
        n('Cast', ['present'], ['pi'], { to: { i: I64 } }),
        n('Equal', ['pi', 'zero'], ['isz']),
        n('Where', ['isz', 'present', 'pm'], ['wsel']),
        constI64('k', [3]),
        n('TopK', ['present', 'k'], ['tv', 'ti'], { axis: { i: 1 } }),
        constI64('sl0', [1]), constI64('slE', [MAX]),
        n('Slice', ['present', 'sl0', 'slE', 'ax1'], ['sliced']),
        constI64('split', [8, 24]),
        n('Split', ['present', 'split'], ['sp1', 'sp2'], { axis: { i: 2 } }),
        n('Range', ['i0', 'seq', 'i1'], ['rng']),
        n('Concat', ['bsz1', 'seq1'], ['bs2'], { axis: { i: 0 } }),
        n('Expand', ['rng', 'bs2'], ['rngx']),
        n('Concat', ['bsz1', 'seq1', 'seq1'], ['mshp'], { axis: { i: 0 } }),
        n('ConstantOfShape', ['mshp'], ['ones3'], { value: { t: tensor(F, [1], [1]) } }),
        n('LayerNormalization', ['hb', 'lng', 'lnb'], ['ln'], { axis: { i: -1 } }),
        // Convolutions on an image with symbolic size.
        n('Conv', ['img', 'cw', 'cb'], ['c1'], { kernel_shape: { ints: [3, 3] }, strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] } }),
        n('Relu', ['c1'], ['c1r']),
        n('MaxPool', ['c1r'], ['p1'], { kernel_shape: { ints: [3, 3] }, strides: { ints: [2, 2] }, ceil_mode: { i: 1 } }),
        n('AveragePool', ['c1r'], ['p2'], { kernel_shape: { ints: [2, 2] }, strides: { ints: [2, 2] }, auto_pad: { s: 'SAME_UPPER' } }),
        n('ConvTranspose', ['c1r', 'tw'], ['up'], { strides: { ints: [2, 2] }, pads: { ints: [1, 1, 1, 1] }, output_padding: { ints: [1, 1] } }),
        n('GlobalAveragePool', ['p1'], ['gap']),
        n('Flatten', ['gap'], ['flat']),
        n('Gemm', ['flat', 'fw', 'fb'], ['logits'], { transB: { i: 1 } }),
        n('Resize', ['c1r', '', 'scales'], ['rz'], { mode: { s: 'nearest' } }),
        n('Pad', ['c1r', 'pads'], ['pd']),
      ],
      inputs: [
        vi('x', F, ['batch', 'sequence_length', 16]), vi('past', F, ['batch', 'past_sequence_length', 32]),
        vi('img', F, ['N', 3, 'height', 'width']),
      ],
      outputs: [vi('probs', F, ['batch', 4, 'sequence_length', 'sequence_length']), vi('logits', F, ['N', 5])],
      inits: [
        weight('w', F, [16, 32]), weight('bias', F, [32]), weight('zero', I64, [], [0]), weight('lng', F, [32]), weight('lnb', F, [32]),
        weight('cw', F, [8, 3, 3, 3]), weight('cb', F, [8]), weight('tw', F, [8, 4, 3, 3]), weight('fw', F, [5, 8]), weight('fb', F, [5]),
        weight('scales', F, [4], [1, 1, 2, 2]), weight('pads', I64, [8], [0, 0, 1, 2, 0, 0, 3, 0]),
      ],
    });
    const feeds = {
      x: floats([2, 5, 16]),
      past: floats([2, 3, 32], 2),
      img: floats([1, 3, 17, 23], 3),
    };
    const result = await checkAgainstOrt(doc, feeds, {}, path.join(tmp.dir, 'hand.onnx'));
    expect(result.mismatches).toEqual([]);
    expect(result.untyped).toEqual([]);
    expect(result.withUnknownDims).toBe(0);
    expect(result.checked).toBeGreaterThan(40);
    expect(result.exact).toBe(result.checked);
  });

  it('matches onnxruntime on the com.microsoft ops that exporters emit', async () => {
    const ms = 'com.microsoft';
    const doc = model({
      ms: true,
      nodes: [
        n('SkipLayerNormalization', ['x', 'skip', 'g', 'bb'], ['sln', '', '', 'slsum'], {}, ms),
        n('FastGelu', ['sln', 'bb'], ['fg'], {}, ms),
        n('BiasGelu', ['sln', 'bb'], ['bg'], {}, ms),
        n('QuickGelu', ['sln'], ['qg'], { alpha: { f: 1.702 } }, ms),
        n('Gelu', ['sln'], ['gl'], {}, ms),
        n('SimplifiedLayerNormalization', ['x', 'g'], ['rms'], { epsilon: { f: 1e-5 } }),
        n('SkipSimplifiedLayerNormalization', ['x', 'skip', 'g'], ['ssl', '', '', 'sslsum'], {}, ms),
        n('Attention', ['x', 'qkvw', 'qkvb', '', 'past'], ['att', 'present'], { num_heads: { i: 4 }, unidirectional: { i: 1 } }, ms),
        n('MultiHeadAttention', ['x', 'kx', 'kx', '', '', '', 'pk', 'pv'], ['mha', 'pko', 'pvo'], { num_heads: { i: 4 } }, ms),
        n('GroupQueryAttention', ['x', 'kv', 'kv', 'gpk', 'gpv', 'seqlens', 'total'], ['gqa', 'gk', 'gv'], { num_heads: { i: 4 }, kv_num_heads: { i: 2 } }, ms),
        n('MatMulNBits', ['x', 'qw', 'qsc'], ['mnb'], { K: { i: 32 }, N: { i: 16 }, bits: { i: 4 }, block_size: { i: 32 } }, ms),
        n('RotaryEmbedding', ['x', 'pos', 'cos', 'sin'], ['rot'], { num_heads: { i: 4 } }, ms),
        n('FusedMatMul', ['x', 'wt'], ['fmm'], { transB: { i: 1 } }, ms),
      ],
      inputs: [
        vi('x', F, ['batch', 'seq', 32]), vi('skip', F, ['batch', 'seq', 32]), vi('past', F, [2, 'batch', 4, 'past', 8]),
        vi('kx', F, ['batch', 'kv_seq', 32]), vi('pk', F, ['batch', 4, 'past', 8]), vi('pv', F, ['batch', 4, 'past', 8]),
        vi('kv', F, ['batch', 'seq', 16]), vi('gpk', F, ['batch', 2, 'past', 8]), vi('gpv', F, ['batch', 2, 'past', 8]),
        vi('seqlens', DataType.INT32, ['batch']), vi('total', DataType.INT32, []), vi('pos', I64, ['batch', 'seq']),
      ],
      outputs: [vi('att', F)],
      inits: [
        weight('g', F, [32]), weight('bb', F, [32]), weight('qkvw', F, [32, 96]), weight('qkvb', F, [96]),
        weight('qw', DataType.UINT8, [16, 1, 16], Array.from({ length: 256 }, (_, i) => (i * 37) % 256)), weight('qsc', F, [16]),
        weight('cos', F, [64, 4]), weight('sin', F, [64, 4]), weight('wt', F, [24, 32]),
      ],
    });
    // GroupQueryAttention takes a batch of 1 when it gets several new tokens and a past.
    const [b, sq, p, kvs] = [1, 3, 4, 5];
    const feeds = {
      x: floats([b, sq, 32]), skip: floats([b, sq, 32], 2), past: floats([2, b, 4, p, 8], 3), kx: floats([b, kvs, 32], 4),
      pk: floats([b, 4, p, 8], 5), pv: floats([b, 4, p, 8], 6), kv: floats([b, sq, 16], 7), gpk: floats([b, 2, p, 8], 8),
      gpv: floats([b, 2, p, 8], 9),
      seqlens: new ort.Tensor('int32', Int32Array.from({ length: b }, () => p + sq - 1), [b]),
      total: new ort.Tensor('int32', Int32Array.of(p + sq), []),
      pos: new ort.Tensor('int64', BigInt64Array.from({ length: b * sq }, (_, i) => BigInt(p + (i % sq))), [b, sq]),
    };
    const result = await checkAgainstOrt(doc, feeds, {}, path.join(tmp.dir, 'ms.onnx'));
    expect(result.mismatches).toEqual([]);
    expect(result.untyped).toEqual([]);
    expect(result.withUnknownDims).toBe(0);
    expect(result.exact).toBe(result.checked);
    expect(result.checked).toBe(20);
  });

  it('matches onnxruntime on every tensor of the synthetic builder models', async () => {
    const dims = { batch_size: 2, sequence_length: 3, past_sequence_length: 4 };
    for (const arch of ['gpt', 'llama', 'gpt-moe', 'cnn'] as const) {
      const doc = buildModel({ arch, layers: 1 });
      const feeds: Record<string, ort.Tensor> = {};
      for (const input of doc.graph.input) {
        const name = input.name ?? '';
        const shape = resolveShape(inferTensorInfo(doc).get(name)?.shape ?? [], dims);
        const count = shape.reduce((a, c) => a * c, 1);
        if (input.type?.tensorType?.elemType === I64) {
          const value = name === 'position_ids' ? (i: number) => dims.past_sequence_length + (i % dims.sequence_length)
            : name === 'attention_mask' ? () => 1 : (i: number) => (i * 31) % 256;
          feeds[name] = new ort.Tensor('int64', BigInt64Array.from({ length: count }, (_, i) => BigInt(value(i))), shape);
        } else {
          feeds[name] = floats(shape);
        }
      }
      const result = await checkAgainstOrt(doc, feeds, dims, path.join(tmp.dir, `${arch}.onnx`));
      expect({ arch, mismatches: result.mismatches, untyped: result.untyped }).toEqual({ arch, mismatches: [], untyped: [] });
      expect(result.exact).toBe(result.checked);
    }
  });

  it('matches onnxruntime on every tensor of the exporter-shaped fixtures', async () => {
    const fixtures = await writeExporterFixtures(path.join(tmp.dir, 'fixtures'));
    for (const fx of fixtures) {
      const doc = readModel(fx.path);
      const feeds: Record<string, ort.Tensor> = {};
      for (const input of fx.inputs) {
        const count = input.shape.reduce((a, b) => a * b, 1);
        feeds[input.name] = input.type === 'float32' ? floats(input.shape)
          : input.type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from({ length: count }, (_, i) => BigInt(i % 3)), input.shape)
            : input.type === 'int32' ? new ort.Tensor('int32', Int32Array.from({ length: count }, (_, i) => i % 3), input.shape)
              : new ort.Tensor('bool', Uint8Array.from({ length: count }, (_, i) => i % 2), input.shape);
      }
      const result = await checkAgainstOrt(doc, feeds, fx.dims, path.join(tmp.dir, `${fx.name}-exposed.onnx`));
      expect({ fixture: fx.name, mismatches: result.mismatches, untyped: result.untyped }).toEqual({ fixture: fx.name, mismatches: [], untyped: [] });
      expect(result.checked).toBeGreaterThan(0);
      expect(result.withUnknownDims).toBe(0);
    }
  });

  it('matches onnxruntime on every tensor of real exported models', async () => {
    const real = path.resolve('test/fixtures/real');
    const cases: { file: string; feeds: Record<string, ort.Tensor> }[] = [
      { file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx', feeds: { x: floats([2, 3, 48, 192]) } },
      { file: 'ch_PP-OCRv4_det_infer.onnx', feeds: { x: floats([1, 3, 64, 96]) } },
      {
        file: 'silero_vad_legacy.onnx',
        feeds: {
          input: floats([1, 512]),
          sr: new ort.Tensor('int64', BigInt64Array.of(16000n), []),
          h: new ort.Tensor('float32', new Float32Array(2 * 64), [2, 1, 64]),
          c: new ort.Tensor('float32', new Float32Array(2 * 64), [2, 1, 64]),
        },
      },
    ];
    for (const { file, feeds } of cases) {
      const doc = readModel(path.join(real, file));
      const result = await checkAgainstOrt(doc, feeds, {}, path.join(tmp.dir, `${file}-exposed.onnx`));
      expect({ file, mismatches: result.mismatches, untyped: result.untyped }).toEqual({ file, mismatches: [], untyped: [] });
      expect(result.checked).toBeGreaterThan(0);
      // Every tensor's dims are known statically (no data-dependent sizes in these models).
      expect({ file, unknown: result.withUnknownDims }).toEqual({ file, unknown: 0 });
    }
  });
});
