/**
 * Constant propagation on small tensors whose elements may be symbolic dimensions (shape arithmetic of
 * exported graphs: Shape → Gather → Unsqueeze → Concat → Reshape and the like). An element is a number,
 * a symbolic dimension, or null when unknown.
 */
import { DataType } from '../onnx/dtype.js';
import {
  dimAdd, dimEquals, dimExactDiv, dimFloorDiv, dimMax, dimMin, dimMul, dimSub, dimToPoly, type Dim,
} from './symbolic.js';
import { isFloatType, isIntegerType, MAX_VALUE_ELEMENTS, type TensorValue } from './tensor-values.js';

export type Scalar = Dim | null;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
  return s;
}

function unravel(index: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = shape[i] === 0 ? 0 : index % shape[i];
    index = shape[i] === 0 ? 0 : Math.floor(index / shape[i]);
  }
  return out;
}

function small(shape: readonly number[]): boolean {
  return shape.every((d) => Number.isInteger(d) && d >= 0) && numel(shape) <= MAX_VALUE_ELEMENTS;
}

/** Numpy broadcast of numeric shapes; undefined when incompatible. */
export function broadcastNumeric(shapes: readonly (readonly number[])[]): number[] | undefined {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) return undefined;
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** Applies `fn` elementwise over broadcast inputs. */
export function mapBroadcast(values: readonly TensorValue[], fn: (xs: Scalar[]) => Scalar): TensorValue | undefined {
  const shape = broadcastNumeric(values.map((v) => v.shape));
  if (!shape || !small(shape)) return undefined;
  const count = numel(shape);
  const data: Scalar[] = [];
  const perInput = values.map((v) => {
    const st = stridesOf(v.shape);
    const offset = shape.length - v.shape.length;
    return { v, st, offset };
  });
  for (let i = 0; i < count; i++) {
    const idx = unravel(i, shape);
    const xs = perInput.map(({ v, st, offset }) => {
      let flat = 0;
      for (let k = 0; k < v.shape.length; k++) flat += (v.shape[k] === 1 ? 0 : idx[k + offset]) * st[k];
      return v.data[flat] ?? null;
    });
    data.push(fn(xs));
  }
  return { shape, data };
}

export function reshapeValue(v: TensorValue, shape: number[]): TensorValue | undefined {
  if (!small(shape) || numel(shape) !== v.data.length) return undefined;
  return { shape, data: v.data };
}

export function transposeValue(v: TensorValue, perm: number[]): TensorValue | undefined {
  if (perm.length !== v.shape.length) return undefined;
  const shape = perm.map((p) => v.shape[p]);
  const inStrides = stridesOf(v.shape);
  const data: Scalar[] = [];
  for (let i = 0; i < v.data.length; i++) {
    const idx = unravel(i, shape);
    let flat = 0;
    for (let k = 0; k < perm.length; k++) flat += idx[k] * inStrides[perm[k]];
    data.push(v.data[flat] ?? null);
  }
  return { shape, data };
}

export function concatValues(values: readonly TensorValue[], axis: number): TensorValue | undefined {
  if (values.length === 0) return undefined;
  const rank = values[0].shape.length;
  if (axis < 0 || axis >= rank || values.some((v) => v.shape.length !== rank)) return undefined;
  for (const v of values) {
    for (let k = 0; k < rank; k++) if (k !== axis && v.shape[k] !== values[0].shape[k]) return undefined;
  }
  const shape = [...values[0].shape];
  shape[axis] = values.reduce((s, v) => s + v.shape[axis], 0);
  if (!small(shape)) return undefined;
  const outer = numel(shape.slice(0, axis));
  const data: Scalar[] = [];
  for (let o = 0; o < outer; o++) {
    for (const v of values) {
      const chunk = numel(v.shape.slice(axis));
      data.push(...v.data.slice(o * chunk, (o + 1) * chunk));
    }
  }
  return { shape, data };
}

/** Slices with per-axis (already normalized, clamped) start and step and output length. */
export function sliceValue(v: TensorValue, starts: number[], steps: number[], lengths: number[]): TensorValue | undefined {
  const rank = v.shape.length;
  if (starts.length !== rank || steps.length !== rank || lengths.length !== rank) return undefined;
  const shape = lengths;
  if (!small(shape)) return undefined;
  const st = stridesOf(v.shape);
  const data: Scalar[] = [];
  for (let i = 0; i < numel(shape); i++) {
    const idx = unravel(i, shape);
    let flat = 0;
    for (let k = 0; k < rank; k++) flat += (starts[k] + idx[k] * steps[k]) * st[k];
    data.push(v.data[flat] ?? null);
  }
  return { shape, data };
}

export function gatherValue(data: TensorValue, indices: TensorValue, axis: number): TensorValue | undefined {
  const rank = data.shape.length;
  if (axis < 0 || axis >= rank) return undefined;
  const dimLen = data.shape[axis];
  const shape = [...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)];
  if (!small(shape)) return undefined;
  const st = stridesOf(data.shape);
  const out: Scalar[] = [];
  const ir = indices.shape.length;
  for (let i = 0; i < numel(shape); i++) {
    const idx = unravel(i, shape);
    const indexIdx = idx.slice(axis, axis + ir);
    const flatIndex = indexIdx.reduce((s, x, k) => s * indices.shape[k] + x, 0);
    let at = indices.data[flatIndex];
    if (typeof at !== 'number') return undefined;
    if (at < 0) at += dimLen;
    if (at < 0 || at >= dimLen) return undefined;
    const dataIdx = [...idx.slice(0, axis), at, ...idx.slice(axis + ir)];
    let flat = 0;
    for (let k = 0; k < rank; k++) flat += dataIdx[k] * st[k];
    out.push(data.data[flat] ?? null);
  }
  return { shape, data: out };
}

export function reduceValue(v: TensorValue, axes: number[], keepdims: boolean, fn: (xs: Scalar[]) => Scalar): TensorValue | undefined {
  const rank = v.shape.length;
  const set = new Set(axes);
  const keptShape = v.shape.map((d, k) => (set.has(k) ? 1 : d));
  const groups = new Map<number, Scalar[]>();
  const ks = stridesOf(keptShape);
  for (let i = 0; i < v.data.length; i++) {
    const idx = unravel(i, v.shape);
    let flat = 0;
    for (let k = 0; k < rank; k++) flat += (set.has(k) ? 0 : idx[k]) * ks[k];
    let g = groups.get(flat);
    if (!g) { g = []; groups.set(flat, g); }
    g.push(v.data[i] ?? null);
  }
  const shape = keepdims ? keptShape : v.shape.filter((_, k) => !set.has(k));
  const data: Scalar[] = [];
  for (let i = 0; i < numel(keptShape); i++) data.push(fn(groups.get(i) ?? []));
  return { shape, data };
}

export function tileValue(v: TensorValue, repeats: number[]): TensorValue | undefined {
  if (repeats.length !== v.shape.length) return undefined;
  const shape = v.shape.map((d, k) => d * repeats[k]);
  if (!small(shape)) return undefined;
  const st = stridesOf(v.shape);
  const data: Scalar[] = [];
  for (let i = 0; i < numel(shape); i++) {
    const idx = unravel(i, shape);
    let flat = 0;
    for (let k = 0; k < idx.length; k++) flat += (idx[k] % v.shape[k]) * st[k];
    data.push(v.data[flat] ?? null);
  }
  return { shape, data };
}

export function filledValue(shape: number[], fill: Scalar): TensorValue | undefined {
  if (!small(shape)) return undefined;
  return { shape, data: new Array<Scalar>(numel(shape)).fill(fill) };
}

// ---------------------------------------------------------------------------------------------------
// Scalar arithmetic (symbols are non-negative integers)

function bothNumbers(a: Scalar, b: Scalar): boolean { return typeof a === 'number' && typeof b === 'number'; }
/** Symbolic arithmetic only mixes with integers. */
function symbolicOk(a: Scalar, b: Scalar): boolean {
  return a !== null && b !== null && (typeof a !== 'number' || Number.isInteger(a)) && (typeof b !== 'number' || Number.isInteger(b));
}

export function sAdd(a: Scalar, b: Scalar): Scalar {
  if (bothNumbers(a, b)) return (a as number) + (b as number);
  return symbolicOk(a, b) ? dimAdd(a as Dim, b as Dim) : null;
}
export function sSub(a: Scalar, b: Scalar): Scalar {
  if (bothNumbers(a, b)) return (a as number) - (b as number);
  return symbolicOk(a, b) ? dimSub(a as Dim, b as Dim) : null;
}
export function sMul(a: Scalar, b: Scalar): Scalar {
  if (bothNumbers(a, b)) return (a as number) * (b as number);
  return symbolicOk(a, b) ? dimMul(a as Dim, b as Dim) : null;
}
export function sDiv(a: Scalar, b: Scalar, integer: boolean): Scalar {
  if (bothNumbers(a, b)) {
    if (b === 0) return integer ? null : (a as number) / (b as number);
    return integer ? Math.trunc((a as number) / (b as number)) : (a as number) / (b as number);
  }
  if (!symbolicOk(a, b) || b === 0) return null;
  const exact = dimExactDiv(a as Dim, b as Dim);
  if (exact !== undefined) return exact;
  return integer ? (dimFloorDiv(a as Dim, b as Dim) ?? null) : null;
}
export function sMod(a: Scalar, b: Scalar, fmod: boolean): Scalar {
  if (!bothNumbers(a, b) || b === 0) return null;
  const x = a as number;
  const y = b as number;
  if (fmod) return x % y;
  const r = x % y;
  return r !== 0 && (r < 0) !== (y < 0) ? r + y : r;
}
export function sMax(a: Scalar, b: Scalar): Scalar {
  if (bothNumbers(a, b)) return Math.max(a as number, b as number);
  return symbolicOk(a, b) ? dimMax(a as Dim, b as Dim) : null;
}
export function sMin(a: Scalar, b: Scalar): Scalar {
  if (bothNumbers(a, b)) return Math.min(a as number, b as number);
  return symbolicOk(a, b) ? dimMin(a as Dim, b as Dim) : null;
}
export function sPow(a: Scalar, b: Scalar): Scalar {
  return bothNumbers(a, b) ? (a as number) ** (b as number) : null;
}

/** The sign of a - b when it is known: a constant difference, or a symbol-only side against a negative number. */
function compare(a: Scalar, b: Scalar): number | null {
  if (a === null || b === null) return null;
  if (bothNumbers(a, b)) return Math.sign((a as number) - (b as number));
  if (typeof a === 'number' && !Number.isInteger(a)) return null;
  if (typeof b === 'number' && !Number.isInteger(b)) return null;
  const diff = dimToPoly(a).sub(dimToPoly(b));
  const c = diff.constantValue;
  if (c !== undefined) return Math.sign(c);
  // All terms non-negative with a non-negative constant: a - b >= 0; a - b > 0 when the constant > 0.
  let constant = 0;
  let allPositive = true;
  let allNegative = true;
  for (const t of diff.terms.values()) {
    if (t.key === '') { constant = t.coef; continue; }
    if (t.atoms.some((x) => x.kind !== 'sym')) return null;
    if (t.coef < 0) allPositive = false;
    else allNegative = false;
  }
  if (allPositive && constant > 0) return 1;
  if (allNegative && constant < 0) return -1;
  return null;
}

export function sEqual(a: Scalar, b: Scalar): Scalar {
  if (a === null || b === null) return null;
  if (bothNumbers(a, b)) return a === b ? 1 : 0;
  if (dimEquals(a, b)) return 1;
  const c = compare(a, b);
  return c === null ? null : c === 0 ? 1 : 0;
}
export function sLess(a: Scalar, b: Scalar): Scalar {
  const c = compare(a, b);
  return c === null ? null : c < 0 ? 1 : 0;
}
export function sLessOrEqual(a: Scalar, b: Scalar): Scalar {
  if (a !== null && b !== null && dimEquals(a, b)) return 1;
  const c = compare(a, b);
  return c === null ? null : c <= 0 ? 1 : 0;
}

export function truthy(a: Scalar): boolean | null {
  if (a === null) return null;
  if (typeof a === 'number') return a !== 0;
  return null;
}

/** A value converted to another element type; null when the conversion loses track of it. */
export function sCast(a: Scalar, to: number): Scalar {
  if (a === null) return null;
  if (to === DataType.BOOL) return typeof a === 'number' ? (a !== 0 ? 1 : 0) : null;
  if (isIntegerType(to)) {
    if (typeof a !== 'number') return a;
    if (!Number.isFinite(a)) return null;
    return Math.trunc(a);
  }
  if (isFloatType(to)) return to === DataType.FLOAT && typeof a === 'number' ? Math.fround(a) : a;
  return null;
}

export function sUnary(op: string, a: Scalar): Scalar {
  if (a === null) return null;
  if (typeof a !== 'number') {
    switch (op) {
      case 'Identity': case 'Abs': case 'Floor': case 'Ceil': case 'Round': case 'Relu': return a;
      case 'Neg': return dimMul(a, -1);
      default: return null;
    }
  }
  switch (op) {
    case 'Identity': return a;
    case 'Neg': return -a;
    case 'Abs': return Math.abs(a);
    case 'Floor': return Math.floor(a);
    case 'Ceil': return Math.ceil(a);
    case 'Round': { const f = Math.floor(a); const d = a - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1; }
    case 'Relu': return Math.max(0, a);
    case 'Sqrt': return Math.sqrt(a);
    case 'Reciprocal': return 1 / a;
    case 'Sign': return Math.sign(a);
    case 'Exp': return Math.exp(a);
    case 'Log': return Math.log(a);
    case 'Not': return a ? 0 : 1;
    default: return null;
  }
}
