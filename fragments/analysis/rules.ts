/**
 * Per-operator type and shape rules (ONNX opsets 7..22 and the com.microsoft contrib ops that exporters
 * emit), with constant propagation of small integer tensors for shape arithmetic. A rule sees its node's
 * inputs through a RuleCtx and returns what it knows of each output; anything it cannot tell it leaves
 * out. Rules never have to be complete: the engine merges their results with declared value infos.
 */
import { int64ToNumber, type AttributeProto, type GraphProto, type NodeProto, type TensorProto } from '../../proto/onnx.js';
import { DataType } from '../onnx/dtype.js';
import {
  dimAdd, dimCeilDiv, dimEquals, dimExactDiv, dimFloorDiv, dimMax, dimMul, dimProduct, dimSub, type Dim,
} from './symbolic.js';
import { isIntegerType, isTrackedType, readTensorValue, type TensorValue } from './tensor-values.js';
import {
  concatValues, filledValue, gatherValue, mapBroadcast, numel, reduceValue, reshapeValue, sAdd, sCast, sDiv,
  sEqual, sLess, sLessOrEqual, sliceValue, sMax, sMin, sMod, sMul, sPow, sSub, sUnary, tileValue, transposeValue,
  truthy, type Scalar,
} from './value-ops.js';

export interface TensorInfo {
  /** ONNX element type code (DataType); undefined when unknown. */
  dtype?: number;
  /** Dimensions, numbers or symbolic; undefined when even the rank is unknown. */
  shape?: Dim[];
}

/** What a rule tells of one output. */
export interface OutInfo extends TensorInfo {
  value?: TensorValue;
}

export interface RuleCtx {
  readonly node: NodeProto;
  /** Opset version of the node's domain. */
  readonly opset: number;
  readonly inputCount: number;
  readonly outputCount: number;
  has(i: number): boolean;
  dtype(i: number): number | undefined;
  shape(i: number): Dim[] | undefined;
  value(i: number): TensorValue | undefined;
  attr(name: string): AttributeProto | undefined;
  /** A new symbol for a dimension nothing tells. */
  fresh(): string;
  /** Infers a subgraph with the given input infos; returns its output infos. */
  subgraph(graph: GraphProto, inputs: TensorInfo[]): TensorInfo[];
}

export type Rule = (c: RuleCtx) => (OutInfo | undefined)[];

// ---------------------------------------------------------------------------------------------------
// Attribute helpers

export function attrInt(c: { attr(name: string): AttributeProto | undefined }, name: string, def: number): number {
  const a = c.attr(name);
  return a ? int64ToNumber(a.i) : def;
}
export function attrFloat(c: RuleCtx, name: string, def: number): number {
  const a = c.attr(name);
  return a && typeof a.f === 'number' ? a.f : def;
}
export function attrInts(c: { attr(name: string): AttributeProto | undefined }, name: string): number[] | undefined {
  const a = c.attr(name);
  return a ? (a.ints ?? []).map((x) => int64ToNumber(x)) : undefined;
}
export function attrString(c: { attr(name: string): AttributeProto | undefined }, name: string, def: string): string {
  const s = c.attr(name)?.s as Uint8Array | string | undefined;
  if (s === undefined || s === null) return def;
  return typeof s === 'string' ? s : Buffer.from(s).toString('utf8');
}
function attrTensor(c: RuleCtx, name: string): TensorProto | undefined {
  return c.attr(name)?.t ?? undefined;
}
function attrGraph(c: RuleCtx, name: string): GraphProto | undefined {
  return c.attr(name)?.g ?? undefined;
}

/**
 * A list argument given as an attribute (older opsets) or an input (newer): the values, null when the
 * input is there but its value is unknown, undefined when neither is given.
 */
function listArg(c: RuleCtx, attrName: string, input: number): Scalar[] | null | undefined {
  const a = attrInts(c, attrName);
  if (a !== undefined) return a;
  if (!c.has(input)) return undefined;
  const v = c.value(input);
  return v ? v.data : null;
}

/** A scalar argument from an input's constant value. */
function scalarArg(c: RuleCtx, input: number): Scalar {
  const v = c.value(input);
  return v && v.data.length === 1 ? v.data[0] : null;
}

// ---------------------------------------------------------------------------------------------------
// Shape helpers

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function validAxis(axis: number, rank: number): boolean {
  return Number.isInteger(axis) && axis >= 0 && axis < rank;
}

/** One broadcast dimension: numbers other than 1 win, then symbols (taken to be equal). */
function broadcastDim(dims: Dim[]): Dim {
  let num: number | undefined;
  let sym: Dim | undefined;
  for (const d of dims) {
    if (d === 1) continue;
    if (typeof d === 'number') num ??= d;
    else sym ??= d;
  }
  return num ?? sym ?? 1;
}

export function broadcastShapes(shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.length === 0 || shapes.some((s) => !s)) return undefined;
  const all = shapes as Dim[][];
  const rank = Math.max(...all.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const dims: Dim[] = [];
    for (const s of all) {
      const d = s[s.length - rank + i];
      if (d !== undefined) dims.push(d);
    }
    out.push(broadcastDim(dims));
  }
  return out;
}

function numericShape(shape: Dim[] | undefined): number[] | undefined {
  return shape && shape.every((d) => typeof d === 'number') ? (shape as number[]) : undefined;
}

/** Uses the value when it fits the output shape. */
function withValue(out: OutInfo, value: TensorValue | undefined): OutInfo {
  if (!value) return out;
  const s = numericShape(out.shape);
  if (out.shape && (!s || s.length !== value.shape.length || s.some((d, i) => d !== value.shape[i]))) return out;
  return { ...out, shape: out.shape ?? value.shape, value };
}

function dimOrFresh(c: RuleCtx, d: Scalar | undefined): Dim {
  return d === null || d === undefined || (typeof d === 'number' && (!Number.isInteger(d) || d < 0)) ? c.fresh() : d;
}

function same(c: RuleCtx, i = 0): OutInfo {
  return { dtype: c.dtype(i), shape: c.shape(i) };
}

function freshShape(c: RuleCtx, rank: number): Dim[] {
  return Array.from({ length: rank }, () => c.fresh());
}

// ---------------------------------------------------------------------------------------------------
// Elementwise

const UNARY_VALUE_OPS = new Set(['Identity', 'Neg', 'Abs', 'Floor', 'Ceil', 'Round', 'Relu', 'Sqrt', 'Reciprocal', 'Sign', 'Exp', 'Log']);

const unary: Rule = (c) => {
  const out = same(c);
  const op = c.node.opType ?? '';
  const v = c.value(0);
  if (v && UNARY_VALUE_OPS.has(op)) return [withValue(out, mapBroadcast([v], ([x]) => sUnary(op, x)))];
  return [out];
};

function binaryFn(c: RuleCtx): ((xs: Scalar[]) => Scalar) | undefined {
  const integer = isIntegerType(c.dtype(0));
  switch (c.node.opType) {
    case 'Add': case 'Sum': return (xs) => xs.reduce((a, b) => sAdd(a, b));
    case 'Sub': return ([a, b]) => sSub(a, b);
    case 'Mul': return (xs) => xs.reduce((a, b) => sMul(a, b));
    case 'Div': return ([a, b]) => sDiv(a, b, integer);
    case 'Mod': return ([a, b]) => sMod(a, b, attrInt(c, 'fmod', 0) === 1);
    case 'Pow': return ([a, b]) => sPow(a, b);
    case 'Max': return (xs) => xs.reduce((a, b) => sMax(a, b));
    case 'Min': return (xs) => xs.reduce((a, b) => sMin(a, b));
    case 'Mean': return (xs) => { const s = xs.reduce((a, b) => sAdd(a, b)); return s === null ? null : sDiv(s, xs.length, integer); };
    case 'Equal': return ([a, b]) => sEqual(a, b);
    case 'Less': return ([a, b]) => sLess(a, b);
    case 'Greater': return ([a, b]) => sLess(b, a);
    case 'LessOrEqual': return ([a, b]) => sLessOrEqual(a, b);
    case 'GreaterOrEqual': return ([a, b]) => sLessOrEqual(b, a);
    case 'And': return ([a, b]) => { const x = truthy(a); const y = truthy(b); return x === false || y === false ? 0 : x && y ? 1 : null; };
    case 'Or': return ([a, b]) => { const x = truthy(a); const y = truthy(b); return x === true || y === true ? 1 : x === false && y === false ? 0 : null; };
    case 'Xor': return ([a, b]) => { const x = truthy(a); const y = truthy(b); return x === null || y === null ? null : x !== y ? 1 : 0; };
    default: return undefined;
  }
}

function elementwise(resultType: (c: RuleCtx) => number | undefined): Rule {
  return (c) => {
    const n = c.inputCount;
    const idx = Array.from({ length: n }, (_, i) => i).filter((i) => c.has(i));
    const out: OutInfo = { dtype: resultType(c), shape: broadcastShapes(idx.map((i) => c.shape(i))) };
    const fn = binaryFn(c);
    const values = idx.map((i) => c.value(i));
    if (fn && values.length > 0 && values.every((v) => v !== undefined)) {
      const v = mapBroadcast(values as TensorValue[], fn);
      if (v && (out.dtype === undefined || isTrackedType(out.dtype))) return [withValue(out, v)];
    }
    return [out];
  };
}

const firstType = (c: RuleCtx): number | undefined => {
  for (let i = 0; i < c.inputCount; i++) if (c.has(i) && c.dtype(i) !== undefined) return c.dtype(i);
  return undefined;
};
const boolType = (): number => DataType.BOOL;

const where: Rule = (c) => {
  const out: OutInfo = { dtype: c.dtype(1) ?? c.dtype(2), shape: broadcastShapes([c.shape(0), c.shape(1), c.shape(2)]) };
  const [cond, x, y] = [c.value(0), c.value(1), c.value(2)];
  if (cond && x && y) {
    return [withValue(out, mapBroadcast([cond, x, y], ([k, a, b]) => {
      const t = truthy(k);
      if (t === null) return a !== null && b !== null && dimEquals(a, b) ? a : null;
      return t ? a : b;
    }))];
  }
  return [out];
};

const prelu: Rule = (c) => [{ dtype: c.dtype(0), shape: broadcastShapes([c.shape(0), c.shape(1)]) }];

// ---------------------------------------------------------------------------------------------------
// Type conversion and constants

const cast: Rule = (c) => {
  const to = c.attr('to') ? attrInt(c, 'to', 0) : undefined;
  const out: OutInfo = { dtype: to, shape: c.shape(0) };
  const v = c.value(0);
  if (v && to !== undefined && isTrackedType(to)) return [withValue(out, mapBroadcast([v], ([x]) => sCast(x, to)))];
  return [out];
};

const castLike: Rule = (c) => {
  const to = c.dtype(1);
  const out: OutInfo = { dtype: to, shape: c.shape(0) };
  const v = c.value(0);
  if (v && to !== undefined && isTrackedType(to)) return [withValue(out, mapBroadcast([v], ([x]) => sCast(x, to)))];
  return [out];
};

const constant: Rule = (c) => {
  const t = attrTensor(c, 'value');
  if (t) {
    const shape = (t.dims ?? []).map((d) => int64ToNumber(d));
    return [withValue({ dtype: t.dataType || undefined, shape }, readTensorValue(t))];
  }
  const a = (name: string): AttributeProto | undefined => c.attr(name);
  if (a('value_float')) return [withValue({ dtype: DataType.FLOAT, shape: [] }, { shape: [], data: [attrFloat(c, 'value_float', 0)] })];
  if (a('value_floats')) {
    const f = a('value_floats')?.floats ?? [];
    return [withValue({ dtype: DataType.FLOAT, shape: [f.length] }, f.length <= 64 ? { shape: [f.length], data: [...f] } : undefined)];
  }
  if (a('value_int')) return [withValue({ dtype: DataType.INT64, shape: [] }, { shape: [], data: [attrInt(c, 'value_int', 0)] })];
  if (a('value_ints')) {
    const v = attrInts(c, 'value_ints') ?? [];
    return [withValue({ dtype: DataType.INT64, shape: [v.length] }, v.length <= 64 ? { shape: [v.length], data: v } : undefined)];
  }
  if (a('value_string')) return [{ dtype: DataType.STRING, shape: [] }];
  if (a('value_strings')) return [{ dtype: DataType.STRING, shape: [(a('value_strings')?.strings ?? []).length] }];
  const sparse = a('sparse_value')?.sparseTensor as { dims?: unknown[]; values?: { dataType?: number } } | undefined;
  if (sparse) {
    return [{ dtype: sparse.values?.dataType || undefined, shape: (sparse.dims ?? []).map((d) => int64ToNumber(d as number)) }];
  }
  return [{}];
};

const constantOfShape: Rule = (c) => {
  const t = attrTensor(c, 'value');
  const dtype = t?.dataType || DataType.FLOAT;
  const fill = t ? (readTensorValue(t)?.data[0] ?? null) : 0;
  const sv = c.value(0);
  let shape: Dim[] | undefined;
  if (sv) shape = sv.data.map((d) => dimOrFresh(c, d));
  else {
    const s = c.shape(0);
    if (s && s.length === 1 && typeof s[0] === 'number') shape = freshShape(c, s[0]);
  }
  const out: OutInfo = { dtype, shape };
  const ns = numericShape(shape);
  return [ns && isTrackedType(dtype) ? withValue(out, filledValue(ns, fill)) : out];
};

const shapeOp: Rule = (c) => {
  const s = c.shape(0);
  if (!s) return [{ dtype: DataType.INT64, shape: [c.fresh()] }];
  const r = s.length;
  const clamp = (x: number): number => Math.min(Math.max(normAxis(x, r), 0), r);
  const start = clamp(attrInt(c, 'start', 0));
  const end = c.attr('end') ? clamp(attrInt(c, 'end', r)) : r;
  const dims = s.slice(start, Math.max(start, end));
  return [withValue({ dtype: DataType.INT64, shape: [dims.length] }, { shape: [dims.length], data: dims })];
};

const size: Rule = (c) => {
  const s = c.shape(0);
  const out: OutInfo = { dtype: DataType.INT64, shape: [] };
  return [s ? withValue(out, { shape: [], data: [dimProduct(s)] }) : out];
};

const range: Rule = (c) => {
  const dtype = c.dtype(0) ?? c.dtype(1);
  const [start, limit, delta] = [scalarArg(c, 0), scalarArg(c, 1), scalarArg(c, 2)];
  let n: Dim | undefined;
  if (typeof start === 'number' && typeof limit === 'number' && typeof delta === 'number' && delta !== 0) {
    n = Math.max(Math.ceil((limit - start) / delta), 0);
    const out: OutInfo = { dtype, shape: [n] };
    if (n <= 64) return [withValue(out, { shape: [n], data: Array.from({ length: n }, (_, i) => start + i * delta) })];
    return [out];
  }
  if (start !== null && limit !== null && typeof delta === 'number' && delta > 0 && Number.isInteger(delta)
    && (typeof start !== 'number' || Number.isInteger(start)) && (typeof limit !== 'number' || Number.isInteger(limit))) {
    n = dimCeilDiv(dimSub(limit, start), delta);
  }
  return [{ dtype, shape: [n ?? c.fresh()] }];
};

// ---------------------------------------------------------------------------------------------------
// Shape manipulation

const reshape: Rule = (c) => {
  const dtype = c.dtype(0);
  const input = c.shape(0);
  const sv = listArg(c, 'shape', 1);
  if (sv === undefined) return [{ dtype }];
  if (sv === null) {
    const s = c.shape(1);
    return [{ dtype, shape: s && s.length === 1 && typeof s[0] === 'number' ? freshShape(c, s[0]) : undefined }];
  }
  const allowZero = attrInt(c, 'allowzero', 0) === 1;
  const out: (Dim | undefined)[] = [];
  let inferAt = -1;
  let knownProduct: Dim | undefined = 1;
  for (let i = 0; i < sv.length; i++) {
    const t = sv[i];
    let d: Dim | undefined;
    if (t === null) d = undefined;
    else if (t === -1) { inferAt = i; out.push(undefined); continue; }
    else if (t === 0 && !allowZero) d = input?.[i];
    else d = t;
    out.push(d);
    knownProduct = d === undefined || knownProduct === undefined ? undefined : dimMul(knownProduct, d);
  }
  if (inferAt >= 0 && input && knownProduct !== undefined) {
    out[inferAt] = dimExactDiv(dimProduct(input), knownProduct);
  }
  const shape = out.map((d) => d ?? c.fresh());
  const v = c.value(0);
  const ns = numericShape(shape);
  return [withValue({ dtype, shape }, v && ns ? reshapeValue(v, ns) : undefined)];
};

const flatten: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype, shape: [c.fresh(), c.fresh()] }];
  const axis = normAxis(attrInt(c, 'axis', 1), s.length);
  const shape = [dimProduct(s.slice(0, axis)), dimProduct(s.slice(axis))];
  const v = c.value(0);
  const ns = numericShape(shape);
  return [withValue({ dtype, shape }, v && ns ? reshapeValue(v, ns) : undefined)];
};

const squeeze: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const axes = listArg(c, 'axes', 1);
  if (!s || axes === null) return [{ dtype }];
  let shape: Dim[];
  if (axes === undefined) {
    shape = s.filter((d) => d !== 1);
  } else {
    if (axes.some((a) => typeof a !== 'number')) return [{ dtype }];
    const set = new Set((axes as number[]).map((a) => normAxis(a, s.length)));
    shape = s.filter((_, i) => !set.has(i));
  }
  const v = c.value(0);
  const ns = numericShape(shape);
  return [withValue({ dtype, shape }, v && ns ? reshapeValue(v, ns) : undefined)];
};

const unsqueeze: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const axes = listArg(c, 'axes', 1);
  if (!s || !axes || axes.some((a) => typeof a !== 'number')) return [{ dtype }];
  const rank = s.length + axes.length;
  const set = new Set((axes as number[]).map((a) => normAxis(a, rank)));
  const shape: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) shape.push(set.has(i) ? 1 : (s[k++] ?? c.fresh()));
  const v = c.value(0);
  const ns = numericShape(shape);
  return [withValue({ dtype, shape }, v && ns ? reshapeValue(v, ns) : undefined)];
};

const transpose: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }];
  const perm = attrInts(c, 'perm') ?? s.map((_, i) => s.length - 1 - i);
  if (perm.length !== s.length) return [{ dtype }];
  const shape = perm.map((p) => s[normAxis(p, s.length)] ?? c.fresh());
  const v = c.value(0);
  return [withValue({ dtype, shape }, v ? transposeValue(v, perm.map((p) => normAxis(p, s.length))) : undefined)];
};

const concat: Rule = (c) => {
  const idx = Array.from({ length: c.inputCount }, (_, i) => i).filter((i) => c.has(i));
  const shapes = idx.map((i) => c.shape(i));
  const dtype = idx.map((i) => c.dtype(i)).find((d) => d !== undefined);
  const known = shapes.find((s) => s !== undefined);
  if (!known) return [{ dtype }];
  const rank = known.length;
  const axis = normAxis(attrInt(c, 'axis', 0), rank);
  if (!validAxis(axis, rank)) return [{ dtype }];
  const shape: Dim[] = [];
  for (let k = 0; k < rank; k++) {
    if (k === axis) {
      let total: Dim | undefined = 0;
      for (const s of shapes) total = s && total !== undefined ? dimAdd(total, s[k]) : undefined;
      shape.push(total ?? c.fresh());
    } else {
      const dims = shapes.filter((s): s is Dim[] => s !== undefined).map((s) => s[k]);
      shape.push(dims.find((d) => typeof d === 'number') ?? dims[0]);
    }
  }
  const values = idx.map((i) => c.value(i));
  const v = values.every((x) => x !== undefined) ? concatValues(values as TensorValue[], axis) : undefined;
  return [withValue({ dtype, shape }, v)];
};

const split: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const n = c.outputCount;
  if (!s) return Array.from({ length: n }, () => ({ dtype }));
  const axis = normAxis(attrInt(c, 'axis', 0), s.length);
  if (!validAxis(axis, s.length)) return Array.from({ length: n }, () => ({ dtype }));
  const splitArg = listArg(c, 'split', 1);
  const dim = s[axis];
  let sizes: Dim[];
  if (splitArg) {
    sizes = Array.from({ length: n }, (_, i) => dimOrFresh(c, splitArg[i]));
  } else if (splitArg === null) {
    sizes = freshShape(c, n);
  } else if (typeof dim === 'number') {
    const chunk = Math.ceil(dim / n);
    sizes = Array.from({ length: n }, (_, i) => (i < n - 1 ? chunk : dim - chunk * (n - 1)));
  } else {
    const chunk = dimExactDiv(dim, n) ?? dimCeilDiv(dim, n) ?? c.fresh();
    sizes = Array.from({ length: n }, (_, i) => (i < n - 1 ? chunk : dimSub(dim, dimMul(chunk, n - 1))));
  }
  const v = c.value(0);
  let offset: number | undefined = 0;
  return sizes.map((size) => {
    const shape = [...s];
    shape[axis] = size;
    let value: TensorValue | undefined;
    if (typeof size !== 'number') offset = undefined;
    if (v && typeof size === 'number' && offset !== undefined) {
      const at = offset;
      const starts = v.shape.map((_, k) => (k === axis ? at : 0));
      const lengths = v.shape.map((d, k) => (k === axis ? size : d));
      value = sliceValue(v, starts, v.shape.map(() => 1), lengths);
      offset += size;
    }
    return withValue({ dtype, shape }, value);
  });
};

const BIG = 2 ** 30;

/** Clamped numeric slice of one axis: start index and length. */
function sliceNumeric(dim: number, start: number, end: number, step: number): { start: number; length: number } {
  let s = start < 0 ? start + dim : start;
  let e = end < 0 ? end + dim : end;
  if (step > 0) {
    s = Math.min(Math.max(s, 0), dim);
    e = Math.min(Math.max(e, 0), dim);
    return { start: s, length: Math.max(0, Math.ceil((e - s) / step)) };
  }
  s = Math.min(Math.max(s, 0), dim - 1);
  e = Math.min(Math.max(e, -1), dim - 1);
  return { start: s, length: Math.max(0, Math.ceil((s - e) / -step)) };
}

/** Length of a slice along a symbolic axis (indices taken in range). */
function sliceSymbolic(dim: Dim, start: Dim, end: Dim, step: number): Dim | undefined {
  if (typeof start === 'number' && !Number.isInteger(start)) return undefined;
  if (typeof end === 'number' && !Number.isInteger(end)) return undefined;
  if (step > 0) {
    const s = typeof start === 'number' ? (start >= BIG ? dim : start < 0 ? dimAdd(dim, start) : start) : start;
    const e = typeof end === 'number' ? (end >= BIG ? dim : end < 0 ? dimAdd(dim, end) : end) : end;
    return dimCeilDiv(dimSub(e, s), step);
  }
  const s = typeof start === 'number' ? (start >= BIG ? dimSub(dim, 1) : start < 0 ? dimAdd(dim, start) : start) : start;
  const e = typeof end === 'number' ? (end <= -BIG ? -1 : end < 0 ? dimAdd(dim, end) : end) : end;
  return dimCeilDiv(dimSub(s, e), -step);
}

const slice: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }];
  const r = s.length;
  let starts: Scalar[] | null | undefined;
  let ends: Scalar[] | null | undefined;
  let axes: Scalar[] | null | undefined;
  let steps: Scalar[] | null | undefined;
  if (c.opset < 10 || c.attr('starts')) {
    starts = attrInts(c, 'starts');
    ends = attrInts(c, 'ends');
    axes = attrInts(c, 'axes');
  } else {
    starts = c.has(1) ? (c.value(1)?.data ?? null) : undefined;
    ends = c.has(2) ? (c.value(2)?.data ?? null) : undefined;
    axes = c.has(3) ? (c.value(3)?.data ?? null) : undefined;
    steps = c.has(4) ? (c.value(4)?.data ?? null) : undefined;
  }
  if (axes === null || (axes && axes.some((a) => typeof a !== 'number'))) {
    return [{ dtype, shape: freshShape(c, r) }];
  }
  const count = starts?.length ?? ends?.length ?? 0;
  const axisList = axes ? (axes as number[]).map((a) => normAxis(a, r)) : Array.from({ length: count }, (_, i) => i);
  if (!starts || !ends || steps === null) {
    const shape = [...s];
    for (const a of axisList) if (validAxis(a, r)) shape[a] = c.fresh();
    return [{ dtype, shape }];
  }
  const shape = [...s];
  const v = c.value(0);
  const vStarts = v ? v.shape.map(() => 0) : [];
  const vSteps = v ? v.shape.map(() => 1) : [];
  const vLengths = v ? [...v.shape] : [];
  let valueOk = v !== undefined;
  axisList.forEach((axis, j) => {
    if (!validAxis(axis, r)) return;
    const st = steps ? steps[j] : 1;
    const start = starts[j];
    const end = ends[j];
    const dim = s[axis];
    if (typeof st !== 'number' || st === 0 || start === null || start === undefined || end === null || end === undefined) {
      shape[axis] = c.fresh();
      valueOk = false;
      return;
    }
    if (typeof dim === 'number' && typeof start === 'number' && typeof end === 'number') {
      const { start: s0, length } = sliceNumeric(dim, start, end, st);
      shape[axis] = length;
      if (v) { vStarts[axis] = s0; vSteps[axis] = st; vLengths[axis] = length; }
    } else {
      shape[axis] = sliceSymbolic(dim, start, end, st) ?? c.fresh();
      valueOk = false;
    }
  });
  return [withValue({ dtype, shape }, v && valueOk ? sliceValue(v, vStarts, vSteps, vLengths) : undefined)];
};

const gather: Rule = (c) => {
  const s = c.shape(0);
  const ind = c.shape(1);
  const dtype = c.dtype(0);
  if (!s || !ind) return [{ dtype }];
  const axis = normAxis(attrInt(c, 'axis', 0), s.length);
  if (!validAxis(axis, s.length)) return [{ dtype }];
  const shape = [...s.slice(0, axis), ...ind, ...s.slice(axis + 1)];
  const dv = c.value(0);
  const iv = c.value(1);
  return [withValue({ dtype, shape }, dv && iv ? gatherValue(dv, iv, axis) : undefined)];
};

const gatherElements: Rule = (c) => [{ dtype: c.dtype(0), shape: c.shape(1) }];

const gatherND: Rule = (c) => {
  const s = c.shape(0);
  const ind = c.shape(1);
  const dtype = c.dtype(0);
  const b = attrInt(c, 'batch_dims', 0);
  if (!s || !ind || ind.length === 0) return [{ dtype }];
  const last = ind[ind.length - 1];
  if (typeof last !== 'number') return [{ dtype }];
  return [{ dtype, shape: [...ind.slice(0, -1), ...s.slice(b + last)] }];
};

const expand: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const target = c.value(1);
  if (!s) return [{ dtype }];
  if (!target) {
    const ts = c.shape(1);
    if (!ts || typeof ts[0] !== 'number') return [{ dtype }];
    const rank = Math.max(ts[0], s.length);
    const shape: Dim[] = [];
    for (let i = 0; i < rank; i++) {
      const d = s[s.length - rank + i];
      shape.push(d !== undefined && d !== 1 ? d : c.fresh());
    }
    return [{ dtype, shape }];
  }
  const t = target.data;
  const rank = Math.max(t.length, s.length);
  const shape: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const a = s[s.length - rank + i];
    const b = t[t.length - rank + i];
    if (b === null) shape.push(a !== undefined && a !== 1 ? a : c.fresh());
    else if (b === undefined) shape.push(a ?? 1);
    else shape.push(broadcastDim(a === undefined ? [b] : [a, b]));
  }
  const v = c.value(0);
  const ns = numericShape(shape);
  return [withValue({ dtype, shape }, v && ns ? mapBroadcast([v, { shape: ns, data: new Array<Scalar>(numel(ns)).fill(0) }], ([x]) => x) : undefined)];
};

const tile: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const reps = c.value(1)?.data;
  if (!s) return [{ dtype }];
  if (!reps || reps.length !== s.length) return [{ dtype, shape: freshShape(c, s.length) }];
  const shape = s.map((d, i) => (reps[i] === null ? c.fresh() : dimMul(d, reps[i] as Dim)));
  const v = c.value(0);
  return [withValue({ dtype, shape }, v && reps.every((x) => typeof x === 'number') ? tileValue(v, reps as number[]) : undefined)];
};

function reducedShape(s: Dim[], axes: number[] | undefined, keepdims: boolean): Dim[] {
  const set = new Set(axes ?? s.map((_, i) => i));
  return keepdims ? s.map((d, i) => (set.has(i) ? 1 : d)) : s.filter((_, i) => !set.has(i));
}

const reduce: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }];
  const keepdims = attrInt(c, 'keepdims', 1) === 1;
  const axesArg = listArg(c, 'axes', 1);
  if (axesArg === null || (axesArg && axesArg.some((a) => typeof a !== 'number'))) {
    return [{ dtype, shape: keepdims ? freshShape(c, s.length) : undefined }];
  }
  let axes: number[] | undefined = axesArg ? (axesArg as number[]).map((a) => normAxis(a, s.length)) : undefined;
  if (axes && axes.length === 0) axes = undefined;
  if (!axes && attrInt(c, 'noop_with_empty_axes', 0) === 1) return [{ dtype, shape: s, value: c.value(0) }];
  const shape = reducedShape(s, axes, keepdims);
  const v = c.value(0);
  let value: TensorValue | undefined;
  if (v) {
    const all = axes ?? v.shape.map((_, i) => i);
    const op = c.node.opType;
    const fn = op === 'ReduceProd' ? (xs: Scalar[]) => xs.reduce((a, b) => sMul(a, b), 1 as Scalar)
      : op === 'ReduceSum' ? (xs: Scalar[]) => xs.reduce((a, b) => sAdd(a, b), 0 as Scalar)
        : op === 'ReduceMax' ? (xs: Scalar[]) => (xs.length ? xs.reduce((a, b) => sMax(a, b)) : null)
          : op === 'ReduceMin' ? (xs: Scalar[]) => (xs.length ? xs.reduce((a, b) => sMin(a, b)) : null)
            : undefined;
    if (fn) value = reduceValue(v, all, keepdims, fn);
  }
  return [withValue({ dtype, shape }, value)];
};

const argReduce: Rule = (c) => {
  const s = c.shape(0);
  if (!s) return [{ dtype: DataType.INT64 }];
  const axis = normAxis(attrInt(c, 'axis', 0), s.length);
  const keepdims = attrInt(c, 'keepdims', 1) === 1;
  return [{ dtype: DataType.INT64, shape: reducedShape(s, [axis], keepdims) }];
};

const topK: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }, { dtype: DataType.INT64 }];
  const axis = normAxis(attrInt(c, 'axis', -1), s.length);
  const k = c.attr('k') ? attrInt(c, 'k', 0) : scalarArg(c, 1);
  const shape = [...s];
  if (validAxis(axis, s.length)) shape[axis] = dimOrFresh(c, k);
  return [{ dtype, shape }, { dtype: DataType.INT64, shape: [...shape] }];
};

const pad: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }];
  const pads = listArg(c, c.attr('pads') ? 'pads' : 'paddings', 1);
  if (!pads) return [{ dtype, shape: freshShape(c, s.length) }];
  let axes: number[] = s.map((_, i) => i);
  if (c.has(3)) {
    const av = c.value(3)?.data;
    if (!av || av.some((a) => typeof a !== 'number')) return [{ dtype, shape: freshShape(c, s.length) }];
    axes = (av as number[]).map((a) => normAxis(a, s.length));
  }
  const n = axes.length;
  if (pads.length !== 2 * n) return [{ dtype, shape: freshShape(c, s.length) }];
  const shape = [...s];
  axes.forEach((a, i) => {
    if (!validAxis(a, s.length)) return;
    const b = pads[i];
    const e = pads[i + n];
    shape[a] = b === null || e === null ? c.fresh() : dimAdd(dimAdd(s[a], b), e);
  });
  return [{ dtype, shape }];
};

/** Output dim of x scaled by a float factor, when exact enough to say. */
function scaledDim(c: RuleCtx, d: Dim, scale: number): Dim {
  if (typeof d === 'number') return Math.floor(d * scale + 1e-6);
  if (scale === 1) return d;
  if (Number.isInteger(scale)) return dimMul(d, scale);
  const inv = 1 / scale;
  if (Math.abs(inv - Math.round(inv)) < 1e-6) return dimFloorDiv(d, Math.round(inv)) ?? c.fresh();
  return c.fresh();
}

const resize: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!s) return [{ dtype }];
  const op = c.node.opType;
  let scalesIn: number;
  let sizesIn = -1;
  if (op === 'Upsample') scalesIn = c.opset >= 9 ? 1 : -1;
  else if (c.opset < 11) scalesIn = 1;
  else { scalesIn = 2; sizesIn = 3; }
  const r = s.length;
  const axes = (attrInts(c, 'axes') ?? s.map((_, i) => i)).map((a) => normAxis(a, r));
  const shape = [...s];
  if (sizesIn >= 0 && c.has(sizesIn)) {
    const sizes = c.value(sizesIn)?.data;
    if (!sizes || sizes.length !== axes.length) return [{ dtype, shape: freshShape(c, r) }];
    const policy = attrString(c, 'keep_aspect_ratio_policy', 'stretch');
    if (policy !== 'stretch') {
      const ratios = axes.map((a, i) => (typeof s[a] === 'number' && typeof sizes[i] === 'number' ? (sizes[i] as number) / (s[a] as number) : undefined));
      if (ratios.some((x) => x === undefined)) return [{ dtype, shape: axes.reduce((acc, a) => { acc[a] = c.fresh(); return acc; }, [...s]) }];
      const scale = policy === 'not_larger' ? Math.min(...(ratios as number[])) : Math.max(...(ratios as number[]));
      axes.forEach((a) => { shape[a] = Math.round((s[a] as number) * scale); });
      return [{ dtype, shape }];
    }
    axes.forEach((a, i) => { if (validAxis(a, r)) shape[a] = dimOrFresh(c, sizes[i]); });
    return [{ dtype, shape }];
  }
  let scales: Scalar[] | undefined;
  if (scalesIn < 0) scales = c.attr('scales')?.floats ?? undefined;
  else if (c.has(scalesIn)) scales = c.value(scalesIn)?.data;
  if (!scales || scales.length !== axes.length) return [{ dtype, shape: freshShape(c, r) }];
  axes.forEach((a, i) => {
    if (!validAxis(a, r)) return;
    const f = scales?.[i];
    shape[a] = typeof f === 'number' ? scaledDim(c, s[a], f) : c.fresh();
  });
  return [{ dtype, shape }];
};

const depthToSpace: Rule = (c) => {
  const s = c.shape(0);
  const b = attrInt(c, 'blocksize', 1);
  if (!s || s.length !== 4) return [{ dtype: c.dtype(0) }];
  const [n, ch, h, w] = s;
  return [{ dtype: c.dtype(0), shape: [n, dimExactDiv(ch, b * b) ?? c.fresh(), dimMul(h, b), dimMul(w, b)] }];
};

const spaceToDepth: Rule = (c) => {
  const s = c.shape(0);
  const b = attrInt(c, 'blocksize', 1);
  if (!s || s.length !== 4) return [{ dtype: c.dtype(0) }];
  const [n, ch, h, w] = s;
  return [{ dtype: c.dtype(0), shape: [n, dimMul(ch, b * b), dimExactDiv(h, b) ?? c.fresh(), dimExactDiv(w, b) ?? c.fresh()] }];
};

const oneHot: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(2);
  if (!s) return [{ dtype }];
  const rank = s.length + 1;
  const axis = normAxis(attrInt(c, 'axis', -1), rank);
  const depth = scalarArg(c, 1);
  const d = typeof depth === 'number' ? Math.trunc(depth) : dimOrFresh(c, depth);
  const shape = [...s];
  shape.splice(validAxis(axis, rank) ? axis : rank - 1, 0, d);
  return [{ dtype, shape }];
};

const nonZero: Rule = (c) => {
  const s = c.shape(0);
  return [{ dtype: DataType.INT64, shape: [s ? s.length : c.fresh(), c.fresh()] }];
};

const compress: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  if (!c.attr('axis')) return [{ dtype, shape: [c.fresh()] }];
  if (!s) return [{ dtype }];
  const axis = normAxis(attrInt(c, 'axis', 0), s.length);
  const shape = [...s];
  if (validAxis(axis, s.length)) shape[axis] = c.fresh();
  return [{ dtype, shape }];
};

const unique: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const u = c.fresh();
  const hasAxis = c.attr('axis') !== undefined;
  let y: Dim[] | undefined = [u];
  let inverse: Dim[] | undefined = s ? [dimProduct(s)] : undefined;
  if (hasAxis) {
    if (s) {
      const axis = normAxis(attrInt(c, 'axis', 0), s.length);
      y = [...s];
      if (validAxis(axis, s.length)) y[axis] = u;
      inverse = validAxis(axis, s.length) ? [s[axis]] : undefined;
    } else y = undefined;
  }
  return [{ dtype, shape: y }, { dtype: DataType.INT64, shape: [u] }, { dtype: DataType.INT64, shape: inverse }, { dtype: DataType.INT64, shape: [u] }];
};

const einsum: Rule = (c) => {
  const eq = attrString(c, 'equation', '');
  const shapes = Array.from({ length: c.inputCount }, (_, i) => c.shape(i));
  return [{ dtype: c.dtype(0), shape: einsumShape(eq, shapes) }];
};

interface EinsumParsed { inputs: string[]; output: string; labels: Map<string, Dim>; ellipsis: Dim[] }

/** Parses an einsum equation against input shapes; undefined when they do not fit. */
export function parseEinsum(equation: string, shapes: (Dim[] | undefined)[]): EinsumParsed | undefined {
  const eq = equation.replace(/\s+/g, '');
  const [lhs, rhs] = eq.split('->');
  if (lhs === undefined) return undefined;
  const inputs = lhs.split(',');
  if (inputs.length !== shapes.length) return undefined;
  const labels = new Map<string, Dim>();
  const ellipses: Dim[][] = [];
  for (let k = 0; k < inputs.length; k++) {
    const s = shapes[k];
    if (!s) return undefined;
    const term = inputs[k];
    const dots = term.indexOf('...');
    const letters = term.replace('...', '');
    if (!/^[A-Za-z]*$/.test(letters)) return undefined;
    const ellRank = dots >= 0 ? s.length - letters.length : 0;
    if (ellRank < 0 || (dots < 0 && letters.length !== s.length)) return undefined;
    let pos = 0;
    for (let i = 0; i < term.length;) {
      if (term.startsWith('...', i)) { ellipses.push(s.slice(pos, pos + ellRank)); pos += ellRank; i += 3; continue; }
      const ch = term[i];
      const d = s[pos++];
      const prev = labels.get(ch);
      labels.set(ch, prev === undefined || prev === 1 ? d : d === 1 ? prev : typeof prev === 'number' ? prev : d);
      i++;
    }
  }
  const ellipsis = broadcastShapes(ellipses.length ? ellipses : [[]]) ?? [];
  let output: string;
  if (rhs !== undefined) output = rhs;
  else {
    const counts = new Map<string, number>();
    for (const t of inputs) for (const ch of t.replace('...', '')) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    output = (ellipses.length ? '...' : '') + [...counts.entries()].filter(([, n]) => n === 1).map(([ch]) => ch).sort().join('');
  }
  return { inputs, output, labels, ellipsis };
}

function einsumShape(equation: string, shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  const p = parseEinsum(equation, shapes);
  if (!p) return undefined;
  const out: Dim[] = [];
  for (let i = 0; i < p.output.length;) {
    if (p.output.startsWith('...', i)) { out.push(...p.ellipsis); i += 3; continue; }
    const d = p.labels.get(p.output[i]);
    if (d === undefined) return undefined;
    out.push(d);
    i++;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Linear algebra, convolution, pooling

function matmulShape(a: Dim[] | undefined, b: Dim[] | undefined): Dim[] | undefined {
  if (!a || !b || a.length === 0 || b.length === 0) return undefined;
  const aa = a.length === 1 ? [1, a[0]] : a;
  const bb = b.length === 1 ? [b[0], 1] : b;
  const batch = broadcastShapes([aa.slice(0, -2), bb.slice(0, -2)]) ?? [];
  const out = [...batch];
  if (a.length > 1) out.push(aa[aa.length - 2]);
  if (b.length > 1) out.push(bb[bb.length - 1]);
  return out;
}

function swapLast(s: Dim[] | undefined, yes: boolean): Dim[] | undefined {
  if (!s || !yes || s.length < 2) return s;
  const out = [...s];
  [out[out.length - 2], out[out.length - 1]] = [out[out.length - 1], out[out.length - 2]];
  return out;
}

const matmul: Rule = (c) => [{ dtype: c.dtype(0), shape: matmulShape(c.shape(0), c.shape(1)) }];
const matmulInteger: Rule = (c) => [{ dtype: DataType.INT32, shape: matmulShape(c.shape(0), c.shape(1)) }];
const qlinearMatmul: Rule = (c) => [{ dtype: c.dtype(7) ?? DataType.UINT8, shape: matmulShape(c.shape(0), c.shape(3)) }];
const fusedMatmul: Rule = (c) => [{
  dtype: c.dtype(0),
  shape: matmulShape(swapLast(c.shape(0), attrInt(c, 'transA', 0) === 1), swapLast(c.shape(1), attrInt(c, 'transB', 0) === 1)),
}];

const gemm: Rule = (c) => {
  const a = c.shape(0);
  const b = c.shape(1);
  const m = a && a.length === 2 ? a[attrInt(c, 'transA', 0) ? 1 : 0] : c.fresh();
  const n = b && b.length === 2 ? b[attrInt(c, 'transB', 0) ? 0 : 1] : c.fresh();
  return [{ dtype: c.dtype(0), shape: [m, n] }];
};

interface WindowParams {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  autoPad: string;
  ceilMode: boolean;
}

export function windowParams(c: { attr(name: string): AttributeProto | undefined }, kernel: number[]): WindowParams {
  const n = kernel.length;
  const strides = attrInts(c, 'strides') ?? [];
  const dilations = attrInts(c, 'dilations') ?? [];
  const pads = attrInts(c, 'pads') ?? [];
  return {
    kernel,
    strides: kernel.map((_, i) => strides[i] || 1),
    dilations: kernel.map((_, i) => dilations[i] || 1),
    padsBegin: kernel.map((_, i) => pads[i] ?? 0),
    padsEnd: kernel.map((_, i) => pads[i + n] ?? 0),
    autoPad: attrString(c, 'auto_pad', 'NOTSET'),
    ceilMode: attrInt(c, 'ceil_mode', 0) === 1,
  };
}

function windowOutDim(c: RuleCtx, input: Dim, p: WindowParams, i: number): Dim {
  const stride = p.strides[i];
  const ek = p.dilations[i] * (p.kernel[i] - 1) + 1;
  if (p.autoPad === 'SAME_UPPER' || p.autoPad === 'SAME_LOWER') return dimCeilDiv(input, stride) ?? c.fresh();
  const padded = p.autoPad === 'VALID' ? dimSub(input, ek) : dimSub(dimAdd(input, p.padsBegin[i] + p.padsEnd[i]), ek);
  const q = p.ceilMode && p.autoPad !== 'VALID' ? dimCeilDiv(padded, stride) : dimFloorDiv(padded, stride);
  if (q === undefined) return c.fresh();
  let out = dimAdd(q, 1);
  if (p.ceilMode && typeof out === 'number' && typeof input === 'number' && (out - 1) * stride >= input + p.padsBegin[i]) out -= 1;
  return out;
}

function convLike(c: RuleCtx, x: number, w: number, dtype: number | undefined): OutInfo {
  const xs = c.shape(x);
  const ws = c.shape(w);
  const kernel = attrInts(c, 'kernel_shape') ?? (ws && ws.slice(2).every((d) => typeof d === 'number') ? (ws.slice(2) as number[]) : undefined);
  const rank = xs?.length ?? ws?.length;
  if (rank === undefined) return { dtype };
  const outChannels = ws ? ws[0] : c.fresh();
  if (!xs || !kernel || kernel.length !== rank - 2) {
    return { dtype, shape: [xs?.[0] ?? c.fresh(), outChannels, ...freshShape(c, rank - 2)] };
  }
  const p = windowParams(c, kernel);
  return { dtype, shape: [xs[0], outChannels, ...xs.slice(2).map((d, i) => windowOutDim(c, d, p, i))] };
}

const conv: Rule = (c) => [convLike(c, 0, 1, c.dtype(0))];
const convInteger: Rule = (c) => [convLike(c, 0, 1, DataType.INT32)];
const qlinearConv: Rule = (c) => [convLike(c, 0, 3, c.dtype(7) ?? DataType.UINT8)];

const convTranspose: Rule = (c) => {
  const xs = c.shape(0);
  const ws = c.shape(1);
  const dtype = c.dtype(0);
  if (!xs) return [{ dtype }];
  const group = attrInt(c, 'group', 1);
  const n = xs.length - 2;
  const outChannels = ws ? dimMul(ws[1], group) : c.fresh();
  const kernel = attrInts(c, 'kernel_shape') ?? (ws && ws.slice(2).every((d) => typeof d === 'number') ? (ws.slice(2) as number[]) : undefined);
  const outputShape = attrInts(c, 'output_shape');
  if (outputShape && outputShape.length >= n) return [{ dtype, shape: [xs[0], outChannels, ...outputShape.slice(-n)] }];
  if (!kernel || kernel.length !== n) return [{ dtype, shape: [xs[0], outChannels, ...freshShape(c, n)] }];
  const p = windowParams(c, kernel);
  const outPad = attrInts(c, 'output_padding') ?? [];
  const spatial = xs.slice(2).map((d, i) => {
    if (p.autoPad === 'SAME_UPPER' || p.autoPad === 'SAME_LOWER') return dimMul(d, p.strides[i]);
    const ek = p.dilations[i] * (kernel[i] - 1) + 1;
    const pads = p.autoPad === 'VALID' ? 0 : p.padsBegin[i] + p.padsEnd[i];
    return dimAdd(dimMul(p.strides[i], dimSub(d, 1)), (outPad[i] ?? 0) + ek - pads);
  });
  return [{ dtype, shape: [xs[0], outChannels, ...spatial] }];
};

const pool: Rule = (c) => {
  const xs = c.shape(0);
  const dtype = c.dtype(0);
  const kernel = attrInts(c, 'kernel_shape');
  let out: OutInfo = { dtype };
  if (xs && kernel && kernel.length === xs.length - 2) {
    const p = windowParams(c, kernel);
    out = { dtype, shape: [xs[0], xs[1], ...xs.slice(2).map((d, i) => windowOutDim(c, d, p, i))] };
  } else if (xs) {
    out = { dtype, shape: [xs[0], xs[1], ...freshShape(c, xs.length - 2)] };
  }
  return [out, { dtype: DataType.INT64, shape: out.shape }];
};

const globalPool: Rule = (c) => {
  const xs = c.shape(0);
  return [{ dtype: c.dtype(0), shape: xs ? [...xs.slice(0, 2), ...xs.slice(2).map(() => 1)] : undefined }];
};

const maxUnpool: Rule = (c) => {
  const xs = c.shape(0);
  const dtype = c.dtype(0);
  if (c.has(2)) {
    const v = c.value(2)?.data;
    return [{ dtype, shape: v ? v.map((d) => dimOrFresh(c, d)) : xs ? freshShape(c, xs.length) : undefined }];
  }
  const kernel = attrInts(c, 'kernel_shape');
  if (!xs || !kernel) return [{ dtype }];
  const p = windowParams(c, kernel);
  return [{ dtype, shape: [xs[0], xs[1], ...xs.slice(2).map((d, i) => dimSub(dimAdd(dimMul(dimSub(d, 1), p.strides[i]), kernel[i]), p.padsBegin[i] + p.padsEnd[i]))] }];
};

const roiAlign: Rule = (c) => {
  const xs = c.shape(0);
  const rois = c.shape(1);
  return [{
    dtype: c.dtype(0),
    shape: [rois?.[0] ?? c.fresh(), xs?.[1] ?? c.fresh(), attrInt(c, 'output_height', 1), attrInt(c, 'output_width', 1)],
  }];
};

const maxRoiPool: Rule = (c) => {
  const xs = c.shape(0);
  const rois = c.shape(1);
  const pooled = attrInts(c, 'pooled_shape') ?? [];
  return [{ dtype: c.dtype(0), shape: [rois?.[0] ?? c.fresh(), xs?.[1] ?? c.fresh(), ...pooled] }];
};

const gridSample: Rule = (c) => {
  const xs = c.shape(0);
  const g = c.shape(1);
  if (!xs || !g) return [{ dtype: c.dtype(0) }];
  return [{ dtype: c.dtype(0), shape: [xs[0], xs[1], ...g.slice(1, -1)] }];
};

// ---------------------------------------------------------------------------------------------------
// Normalization, recurrent, misc

function statsShape(s: Dim[] | undefined, axis: number): Dim[] | undefined {
  if (!s) return undefined;
  const a = normAxis(axis, s.length);
  return s.map((d, i) => (i < a ? d : 1));
}

const layerNorm: Rule = (c) => {
  const s = c.shape(0);
  const u = attrInt(c, 'stash_type', DataType.FLOAT) || DataType.FLOAT;
  const stats = statsShape(s, attrInt(c, 'axis', -1));
  return [same(c), { dtype: u, shape: stats }, { dtype: u, shape: stats && [...stats] }];
};

const batchNorm: Rule = (c) => {
  const s = c.shape(0);
  const channels: Dim[] | undefined = s && s.length > 1 ? [s[1]] : c.shape(1);
  const statType = c.dtype(3) ?? c.dtype(0);
  return [same(c), ...Array.from({ length: Math.max(0, c.outputCount - 1) }, () => ({ dtype: statType, shape: channels }))];
};

const dropout: Rule = (c) => [same(c), { dtype: c.opset >= 10 ? DataType.BOOL : c.dtype(0), shape: c.shape(0) }];

const rnn: Rule = (c) => {
  const x = c.shape(0);
  const r = c.shape(2);
  const dtype = c.dtype(0);
  const layout = attrInt(c, 'layout', 0);
  const dirs = attrString(c, 'direction', 'forward') === 'bidirectional' ? 2 : 1;
  const hidden: Dim = c.attr('hidden_size') ? attrInt(c, 'hidden_size', 0) : (r?.[2] ?? c.fresh());
  if (!x || x.length !== 3) return Array.from({ length: c.outputCount }, () => ({ dtype }));
  const [seq, batch] = layout === 0 ? [x[0], x[1]] : [x[1], x[0]];
  const y = layout === 0 ? [seq, dirs, batch, hidden] : [batch, seq, dirs, hidden];
  const yh = layout === 0 ? [dirs, batch, hidden] : [batch, dirs, hidden];
  return [{ dtype, shape: y }, { dtype, shape: yh }, { dtype, shape: [...yh] }];
};

const det: Rule = (c) => {
  const s = c.shape(0);
  return [{ dtype: c.dtype(0), shape: s && s.length >= 2 ? s.slice(0, -2) : undefined }];
};

const withDtypeAttr = (def: (c: RuleCtx) => number | undefined, shapeFrom: 'input' | 'attr'): Rule => (c) => {
  const dtype = c.attr('dtype') ? attrInt(c, 'dtype', 0) : def(c);
  const shape = shapeFrom === 'input' ? c.shape(0) : attrInts(c, 'shape');
  return [{ dtype, shape }];
};

const multinomial: Rule = (c) => {
  const s = c.shape(0);
  return [{ dtype: c.attr('dtype') ? attrInt(c, 'dtype', 0) : DataType.INT32, shape: [s?.[0] ?? c.fresh(), attrInt(c, 'sample_size', 1)] }];
};

const quantize: Rule = (c) => {
  const od = attrInt(c, 'output_dtype', 0);
  return [{ dtype: od || c.dtype(2) || DataType.UINT8, shape: c.shape(0) }];
};
const dequantize: Rule = (c) => {
  const od = attrInt(c, 'output_dtype', 0);
  return [{ dtype: od || c.dtype(1), shape: c.shape(0) }];
};
const dynamicQuantize: Rule = (c) => [
  { dtype: DataType.UINT8, shape: c.shape(0) }, { dtype: DataType.FLOAT, shape: [] }, { dtype: DataType.UINT8, shape: [] },
];

const nonMaxSuppression: Rule = (c) => [{ dtype: DataType.INT64, shape: [c.fresh(), 3] }];

const window: Rule = (c) => {
  const n = scalarArg(c, 0);
  return [{ dtype: attrInt(c, 'output_datatype', DataType.FLOAT) || DataType.FLOAT, shape: [dimOrFresh(c, n)] }];
};

const centerCropPad: Rule = (c) => {
  const s = c.shape(0);
  const dtype = c.dtype(0);
  const target = c.value(1)?.data;
  if (!s) return [{ dtype }];
  const axes = (attrInts(c, 'axes') ?? s.map((_, i) => i)).map((a) => normAxis(a, s.length));
  const shape = [...s];
  axes.forEach((a, i) => { if (validAxis(a, s.length)) shape[a] = dimOrFresh(c, target?.[i]); });
  return [{ dtype, shape }];
};

const stringNormalizer: Rule = () => [{ dtype: DataType.STRING }];

// ---------------------------------------------------------------------------------------------------
// Control flow

function mergeBranches(c: RuleCtx, a: TensorInfo | undefined, b: TensorInfo | undefined): OutInfo {
  const dtype = a?.dtype ?? b?.dtype;
  const sa = a?.shape;
  const sb = b?.shape;
  if (!sa || !sb || sa.length !== sb.length) return { dtype };
  return { dtype, shape: sa.map((d, i) => (dimEquals(d, sb[i]) ? d : c.fresh())) };
}

const ifOp: Rule = (c) => {
  const thenG = attrGraph(c, 'then_branch');
  const elseG = attrGraph(c, 'else_branch');
  const cond = scalarArg(c, 0);
  const t = truthy(cond);
  const thenOut = thenG && t !== false ? c.subgraph(thenG, []) : undefined;
  const elseOut = elseG && t !== true ? c.subgraph(elseG, []) : undefined;
  return Array.from({ length: c.outputCount }, (_, i) => {
    if (t === true) return thenOut?.[i] ?? {};
    if (t === false) return elseOut?.[i] ?? {};
    return mergeBranches(c, thenOut?.[i], elseOut?.[i]);
  });
};

const loop: Rule = (c) => {
  const body = attrGraph(c, 'body');
  const nCarried = Math.max(0, c.inputCount - 2);
  const carried = Array.from({ length: nCarried }, (_, i) => ({ dtype: c.dtype(i + 2), shape: c.shape(i + 2) }));
  const bodyOut = body
    ? c.subgraph(body, [{ dtype: DataType.INT64, shape: [] }, { dtype: DataType.BOOL, shape: [] }, ...carried])
    : [];
  const trip = scalarArg(c, 0);
  const runsAllTrips = !c.has(1) || (truthy(scalarArg(c, 1)) === true && body !== undefined && conditionStaysTrue(body));
  const iterations: Dim = !runsAllTrips || typeof trip !== 'number' || trip >= BIG ? c.fresh() : trip;
  return Array.from({ length: c.outputCount }, (_, i) => {
    if (i < nCarried) {
      const init = carried[i];
      const b = bodyOut[i + 1];
      if (!b) return { ...init };
      return mergeBranches(c, { dtype: b.dtype ?? init.dtype, shape: b.shape }, { dtype: init.dtype, shape: init.shape });
    }
    const b = bodyOut[i + 1];
    return { dtype: b?.dtype, shape: b?.shape ? [iterations, ...b.shape] : undefined };
  });
};

/** True when a Loop body passes its condition input through unchanged (so only the trip count ends it). */
function conditionStaysTrue(body: GraphProto): boolean {
  const condIn = body.input?.[1]?.name;
  let condOut = body.output?.[0]?.name;
  for (let hops = 0; condOut && hops < 8; hops++) {
    if (condOut === condIn) return true;
    const producer = (body.node ?? []).find((nd) => (nd.output ?? []).includes(condOut as string));
    if (!producer || producer.opType !== 'Identity' || (producer.domain ?? '') !== '') return false;
    condOut = producer.input?.[0];
  }
  return false;
}

const scan: Rule = (c) => {
  const body = attrGraph(c, 'body');
  const m = attrInt(c, 'num_scan_inputs', 0);
  if (c.opset < 9) {
    const out = body ? c.subgraph(body, []) : [];
    return Array.from({ length: c.outputCount }, (_, i) => ({ dtype: out[i]?.dtype }));
  }
  const nState = Math.max(0, c.inputCount - m);
  const inAxes = attrInts(c, 'scan_input_axes') ?? [];
  const outAxes = attrInts(c, 'scan_output_axes') ?? [];
  const bodyInputs: TensorInfo[] = [];
  let seqLen: Dim | undefined;
  for (let i = 0; i < c.inputCount; i++) {
    const s = c.shape(i);
    if (i < nState) { bodyInputs.push({ dtype: c.dtype(i), shape: s }); continue; }
    const axis = s ? normAxis(inAxes[i - nState] ?? 0, s.length) : 0;
    if (s && validAxis(axis, s.length)) {
      seqLen ??= s[axis];
      bodyInputs.push({ dtype: c.dtype(i), shape: s.filter((_, k) => k !== axis) });
    } else bodyInputs.push({ dtype: c.dtype(i) });
  }
  const out = body ? c.subgraph(body, bodyInputs) : [];
  const len = seqLen ?? c.fresh();
  return Array.from({ length: c.outputCount }, (_, i) => {
    const b = out[i];
    if (i < nState) return { dtype: b?.dtype ?? c.dtype(i), shape: b?.shape ?? c.shape(i) };
    if (!b?.shape) return { dtype: b?.dtype };
    const rank = b.shape.length + 1;
    const axis = normAxis(outAxes[i - nState] ?? 0, rank);
    const shape = [...b.shape];
    shape.splice(validAxis(axis, rank) ? axis : 0, 0, len);
    return { dtype: b.dtype, shape };
  });
};

// ---------------------------------------------------------------------------------------------------
// com.microsoft contrib ops

function lastDim(s: Dim[] | undefined): Dim | undefined {
  return s && s.length ? s[s.length - 1] : undefined;
}

function withLast(s: Dim[] | undefined, d: Dim): Dim[] | undefined {
  return s && s.length ? [...s.slice(0, -1), d] : undefined;
}

const msAttention: Rule = (c) => {
  const x = c.shape(0);
  const w = c.shape(1);
  const bias = c.shape(2);
  const dtype = c.dtype(0);
  const heads = attrInt(c, 'num_heads', 1);
  const qkv = attrInts(c, 'qkv_hidden_sizes');
  const total = w?.[1] ?? bias?.[0];
  const vHidden: Dim | undefined = qkv && qkv.length === 3 ? qkv[2] : total !== undefined ? dimExactDiv(total, 3) : undefined;
  const qkHidden: Dim | undefined = qkv && qkv.length === 3 ? qkv[1] : vHidden;
  const out: OutInfo = { dtype, shape: x && x.length === 3 ? [x[0], x[1], vHidden ?? c.fresh()] : undefined };
  let present: OutInfo = { dtype };
  if (x && x.length === 3) {
    const past = c.shape(4);
    const pastLen = past && past.length === 5 ? past[3] : 0;
    const headSize = qkHidden !== undefined ? dimExactDiv(qkHidden, heads) : undefined;
    const shareBuffer = attrInt(c, 'past_present_share_buffer', 0) === 1;
    present = { dtype, shape: [2, x[0], heads, shareBuffer && past ? pastLen : dimAdd(pastLen, x[1]), headSize ?? c.fresh()] };
  }
  return [out, present];
};

/** Query [B, S, D] or packed [B, S, N, 3, H]: batch, sequence and query hidden size. */
function queryDims(q: Dim[] | undefined, heads: number): { b: Dim; s: Dim; d: Dim } | undefined {
  if (q && q.length === 3) return { b: q[0], s: q[1], d: q[2] };
  if (q && q.length === 5) return { b: q[0], s: q[1], d: dimMul(heads, q[4]) };
  return undefined;
}

const msMultiHeadAttention: Rule = (c) => {
  const dtype = c.dtype(0);
  const heads = attrInt(c, 'num_heads', 1);
  const q = queryDims(c.shape(0), heads);
  if (!q) return [{ dtype }, { dtype }, { dtype }];
  const k = c.shape(1);
  const v = c.shape(2);
  let vHidden: Dim = q.d;
  if (v && v.length === 3) vHidden = v[2];
  else if (v && v.length === 4) vHidden = dimMul(v[1], v[3]);
  const headSize = dimExactDiv(q.d, heads) ?? c.fresh();
  const vHead = dimExactDiv(vHidden, heads) ?? c.fresh();
  let kvLen: Dim | undefined;
  let cross4d = false;
  if (k && k.length === 3) kvLen = k[1];
  else if (k && k.length === 4) { kvLen = k[2]; cross4d = true; }
  else if (k && k.length === 5) kvLen = k[1];
  else if (!k) kvLen = q.s;
  const past = c.shape(6);
  const pastLen = past && past.length === 4 ? past[2] : 0;
  const total = kvLen === undefined ? c.fresh() : cross4d ? kvLen : dimAdd(pastLen, kvLen);
  return [
    { dtype, shape: [q.b, q.s, vHidden] },
    { dtype, shape: [q.b, heads, total, headSize] },
    { dtype, shape: [q.b, heads, total, vHead] },
  ];
};

const msGroupQueryAttention: Rule = (c) => {
  const dtype = c.dtype(0);
  const heads = attrInt(c, 'num_heads', 1);
  const kvHeads = attrInt(c, 'kv_num_heads', heads);
  const q = c.shape(0);
  if (!q || q.length !== 3) return [{ dtype }, { dtype }, { dtype }];
  const [b, s, d] = q;
  const packed = !c.has(1);
  const headSize = (packed ? dimExactDiv(d, heads + 2 * kvHeads) : dimExactDiv(d, heads)) ?? c.fresh();
  const past = c.shape(3);
  const pastLen = past && past.length === 4 ? past[2] : undefined;
  const totalArg = scalarArg(c, 6);
  const total: Dim = totalArg !== null && (typeof totalArg !== 'number' || Number.isInteger(totalArg)) ? totalArg : dimAdd(pastLen ?? 0, s);
  const present = pastLen !== undefined ? dimMax(pastLen, total) : total;
  return [
    { dtype, shape: [b, s, dimMul(heads, headSize)] },
    { dtype, shape: [b, kvHeads, present, headSize] },
    { dtype, shape: [b, kvHeads, present, headSize] },
  ];
};

const msSkipLayerNorm: Rule = (c) => {
  const s = c.shape(0);
  const stats = s ? withLast(s, 1) : undefined;
  return [same(c), { dtype: DataType.FLOAT, shape: stats }, { dtype: DataType.FLOAT, shape: stats && [...stats] }, same(c)];
};

const msSimplifiedLayerNorm: Rule = (c) => {
  const u = attrInt(c, 'stash_type', DataType.FLOAT) || DataType.FLOAT;
  return [same(c), { dtype: u, shape: statsShape(c.shape(0), attrInt(c, 'axis', -1)) }];
};

const msBiasSplitGelu: Rule = (c) => {
  const s = c.shape(0);
  const last = lastDim(s);
  return [{ dtype: c.dtype(0), shape: last === undefined ? undefined : withLast(s, dimExactDiv(last, 2) ?? c.fresh()) }];
};

const msMatMulNBits: Rule = (c) => {
  const n = c.attr('N') ? attrInt(c, 'N', 0) : undefined;
  const s = c.shape(0);
  return [{ dtype: c.dtype(0), shape: s && n !== undefined ? withLast(s, n) : undefined }];
};

const msEmbedLayerNorm: Rule = (c) => {
  const ids = c.shape(0);
  const word = c.shape(2);
  const dtype = c.dtype(2);
  const hidden = word?.[1] ?? c.fresh();
  const shape = ids && ids.length === 2 ? [ids[0], ids[1], hidden] : undefined;
  return [{ dtype, shape }, { dtype: DataType.INT32, shape: ids ? [ids[0]] : undefined }, { dtype, shape: shape && [...shape] }];
};

const msGemmFastGelu: Rule = (c) => [{ dtype: c.dtype(0), shape: matmulShape(c.shape(0), c.shape(1)) }];

const sameAll: Rule = (c) => Array.from({ length: Math.max(1, c.outputCount) }, () => same(c));

// ---------------------------------------------------------------------------------------------------
// Tables

const UNARY_SAME = [
  'Abs', 'Neg', 'Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Sign', 'Erf',
  'Sin', 'Cos', 'Tan', 'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh', 'Asinh', 'Acosh', 'Atanh', 'Softplus', 'Softsign', 'Elu',
  'Selu', 'LeakyRelu', 'ThresholdedRelu', 'HardSigmoid', 'HardSwish', 'Mish', 'Gelu', 'Celu', 'Clip', 'Shrink',
  'Softmax', 'LogSoftmax', 'Hardmax', 'Identity', 'InstanceNormalization', 'LRN', 'LpNormalization',
  'MeanVarianceNormalization', 'GroupNormalization', 'CumSum', 'Trilu', 'ReverseSequence', 'BitwiseNot',
  'ScatterElements', 'ScatterND', 'Scatter',
];

const REDUCE_OPS = [
  'ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum',
  'ReduceLogSumExp', 'ReduceSumSquare',
];

export const ONNX_RULES: Record<string, Rule> = {
  ...Object.fromEntries(UNARY_SAME.map((op) => [op, unary])),
  ...Object.fromEntries(REDUCE_OPS.map((op) => [op, reduce])),
  Add: elementwise(firstType), Sub: elementwise(firstType), Mul: elementwise(firstType), Div: elementwise(firstType),
  Pow: elementwise((c) => c.dtype(0)), Mod: elementwise(firstType), Max: elementwise(firstType), Min: elementwise(firstType),
  Sum: elementwise(firstType), Mean: elementwise(firstType), BitShift: elementwise(firstType),
  BitwiseAnd: elementwise(firstType), BitwiseOr: elementwise(firstType), BitwiseXor: elementwise(firstType),
  Equal: elementwise(boolType), Less: elementwise(boolType), Greater: elementwise(boolType),
  LessOrEqual: elementwise(boolType), GreaterOrEqual: elementwise(boolType),
  And: elementwise(boolType), Or: elementwise(boolType), Xor: elementwise(boolType),
  Not: (c) => { const v = c.value(0); const out = { dtype: DataType.BOOL, shape: c.shape(0) }; return [v ? withValue(out, mapBroadcast([v], ([x]) => sUnary('Not', x))) : out]; },
  IsNaN: (c) => [{ dtype: DataType.BOOL, shape: c.shape(0) }],
  IsInf: (c) => [{ dtype: DataType.BOOL, shape: c.shape(0) }],
  PRelu: prelu,
  Where: where,
  Cast: cast, CastLike: castLike,
  Constant: constant, ConstantOfShape: constantOfShape,
  Shape: shapeOp, Size: size, Range: range,
  Reshape: reshape, Flatten: flatten, Squeeze: squeeze, Unsqueeze: unsqueeze, Transpose: transpose,
  Concat: concat, Split: split, Slice: slice, Gather: gather, GatherElements: gatherElements, GatherND: gatherND,
  Expand: expand, Tile: tile,
  ArgMax: argReduce, ArgMin: argReduce, TopK: topK, Pad: pad, Resize: resize, Upsample: resize,
  DepthToSpace: depthToSpace, SpaceToDepth: spaceToDepth, OneHot: oneHot, NonZero: nonZero, Compress: compress,
  Unique: unique, Einsum: einsum,
  MatMul: matmul, MatMulInteger: matmulInteger, QLinearMatMul: qlinearMatmul, Gemm: gemm,
  Conv: conv, ConvInteger: convInteger, QLinearConv: qlinearConv, ConvTranspose: convTranspose,
  AveragePool: pool, MaxPool: pool, LpPool: pool,
  GlobalAveragePool: globalPool, GlobalMaxPool: globalPool, GlobalLpPool: globalPool,
  MaxUnpool: maxUnpool, RoiAlign: roiAlign, MaxRoiPool: maxRoiPool, GridSample: gridSample,
  LayerNormalization: layerNorm, BatchNormalization: batchNorm, Dropout: dropout,
  LSTM: rnn, GRU: rnn, RNN: rnn, Det: det,
  // onnxruntime registers this contrib op in the default domain.
  SimplifiedLayerNormalization: msSimplifiedLayerNorm,
  EyeLike: withDtypeAttr((c) => c.dtype(0), 'input'),
  RandomNormal: withDtypeAttr(() => DataType.FLOAT, 'attr'), RandomUniform: withDtypeAttr(() => DataType.FLOAT, 'attr'),
  RandomNormalLike: withDtypeAttr((c) => c.dtype(0), 'input'), RandomUniformLike: withDtypeAttr((c) => c.dtype(0), 'input'),
  Bernoulli: withDtypeAttr((c) => c.dtype(0), 'input'), Multinomial: multinomial,
  QuantizeLinear: quantize, DequantizeLinear: dequantize, DynamicQuantizeLinear: dynamicQuantize,
  NonMaxSuppression: nonMaxSuppression,
  HannWindow: window, HammingWindow: window, BlackmanWindow: window,
  CenterCropPad: centerCropPad, StringNormalizer: stringNormalizer,
  If: ifOp, Loop: loop, Scan: scan,
};

export const MS_RULES: Record<string, Rule> = {
  Attention: msAttention,
  MultiHeadAttention: msMultiHeadAttention,
  DecoderMaskedMultiHeadAttention: (c) => msMultiHeadAttention(c).slice(0, 1),
  GroupQueryAttention: msGroupQueryAttention,
  SkipLayerNormalization: msSkipLayerNorm,
  SkipSimplifiedLayerNormalization: msSkipLayerNorm,
  SimplifiedLayerNormalization: msSimplifiedLayerNorm,
  LayerNormalization: layerNorm,
  FastGelu: unary, BiasGelu: unary, Gelu: unary, QuickGelu: unary, BiasAdd: unary, BiasDropout: unary,
  BiasSoftmax: unary, Inverse: unary, RotaryEmbedding: unary, GroupNorm: unary, SkipGroupNorm: sameAll,
  MoE: unary, QMoE: unary, BiasSplitGelu: msBiasSplitGelu,
  MatMulNBits: msMatMulNBits,
  EmbedLayerNormalization: msEmbedLayerNorm,
  FusedMatMul: fusedMatmul, FusedConv: conv, FusedGemm: gemm, GemmFastGelu: msGemmFastGelu,
  QuantizeLinear: quantize, DequantizeLinear: dequantize, Trilu: unary, GridSample: gridSample, Range: range,
  Unique: unique,
};

/** The rule of an operator, by domain ('' for the default ONNX domain). */
export function ruleFor(domain: string, opType: string): Rule | undefined {
  if (domain === '' || domain === 'ai.onnx') return Object.prototype.hasOwnProperty.call(ONNX_RULES, opType) ? ONNX_RULES[opType] : undefined;
  if (domain === 'com.microsoft') return Object.prototype.hasOwnProperty.call(MS_RULES, opType) ? MS_RULES[opType] : undefined;
  return undefined;
}
