/**
 * Static type and shape inference over a ModelDoc, with symbolic dimensions and constant propagation of
 * small integer tensors (so that shape arithmetic such as PyTorch's Shape → Gather → Unsqueeze → Concat →
 * Reshape gives Reshape a known, possibly symbolic, output shape), and per-node cost estimates.
 *
 * Inference never throws on what it does not know: an unknown operator, a malformed node or a missing
 * input leaves that node's outputs unknown (or as their value infos declare them). Declared value infos
 * (graph inputs and outputs, value_info) are authoritative and override what the rules infer; their
 * unnamed dimensions are filled from inference where the ranks agree. Initializers count as constants
 * even where an old-IR graph also lists them as inputs.
 */
import { int64ToNumber, type GraphProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../../proto/onnx.js';
import type { ModelDoc, TensorBytes } from '../onnx/model-doc.js';
import { dimSymbols, evaluateDim, type Dim } from './symbolic.js';
import { readTensorValue, type TensorValue } from './tensor-values.js';
import { ruleFor, type OutInfo, type RuleCtx, type TensorInfo } from './rules.js';

export type { Dim } from './symbolic.js';
export type { TensorInfo } from './rules.js';
export type { TensorValue } from './tensor-values.js';
export { nodeFlops } from './flops.js';

/** Opset assumed for the default domain when a model imports none. */
export const DEFAULT_ONNX_OPSET = 22;
/** Nesting depth of subgraphs followed. */
const MAX_SUBGRAPH_DEPTH = 16;

/** Prefix of the symbols made up for dimensions nothing tells (data-dependent sizes and the like). */
export const UNKNOWN_DIM_PREFIX = 'unk__';

/** Opset version per domain ('' is the default ONNX domain, also when imported as "ai.onnx"). */
export function graphOpsets(model: ModelDoc): Map<string, number> {
  const out = new Map<string, number>();
  for (const o of model.model.opsetImport ?? []) {
    const domain = !o.domain || o.domain === 'ai.onnx' ? '' : o.domain;
    out.set(domain, Math.max(out.get(domain) ?? 0, int64ToNumber(o.version)));
  }
  return out;
}

/** Inference results: every tensor's info, and the values of the small constants it tracked. */
export interface ModelAnalysis {
  infos: Map<string, TensorInfo>;
  /** Small (≤ 64 elements) numeric tensors whose values are known, elements possibly symbolic or null. */
  values: Map<string, TensorValue>;
}

/** Infers element type and shape of every tensor of the graph (subgraph bodies of If/Loop/Scan: outputs of the node only). */
export function inferTensorInfo(model: ModelDoc): Map<string, TensorInfo> {
  return analyzeModel(model).infos;
}

/** inferTensorInfo, plus the constant values it propagated. */
export function analyzeModel(model: ModelDoc): ModelAnalysis {
  const g = model.graph;
  const anchors = new Set<string>();
  for (const vi of g.input ?? []) {
    for (const d of declaredOf(vi)?.dims ?? []) {
      if (typeof d === 'string') { anchors.add(d); for (const s of dimSymbols(d)) anchors.add(s); }
    }
  }
  const reserved = new Set<string>();
  collectDimNames([g.input, g.output, g.valueInfo], g.node ?? [], reserved, 0);
  const engine = new Engine(graphOpsets(model), anchors, reserved);
  const scope = engine.runGraph({
    node: g.node ?? [],
    input: g.input ?? [],
    output: g.output ?? [],
    valueInfo: g.valueInfo ?? [],
    initializer: (g.initializer ?? []).map((w) => ({ header: w.header, bytes: w.bytes })),
  }, undefined, undefined, 0);
  return { infos: scope.infos, values: scope.values };
}

/**
 * Binds symbolic dims to numbers; unknown symbols use `fallback(symbol)`. Expressions like
 * "past_sequence_length + sequence_length" are evaluated (+, -, *, integer /, and min/max/floor/ceil).
 * A string that is exactly a key of `dims` takes that value, whatever characters it has.
 * Throws when a symbol is unbound and there is no fallback.
 */
export function resolveShape(shape: Dim[], dims: Record<string, number>, fallback?: (symbol: string) => number): number[] {
  const lookup = (symbol: string): number => {
    if (Object.prototype.hasOwnProperty.call(dims, symbol)) return dims[symbol];
    if (fallback) return fallback(symbol);
    throw new Error(`symbolic dimension "${symbol}" is not bound`);
  };
  return shape.map((d) => evaluateDim(d, lookup, dims));
}

// ---------------------------------------------------------------------------------------------------
// Engine

interface GraphLike {
  node: NodeProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  initializer: { header: TensorProto; bytes?: TensorBytes }[];
}

/** What a value info declares: element type and dims (null = a dimension it leaves unnamed). */
interface Declared { dtype?: number; dims?: (Dim | null)[] }

class Scope {
  readonly infos = new Map<string, TensorInfo>();
  readonly values = new Map<string, TensorValue>();
  constructor(readonly parent?: Scope) {}

  info(name: string): TensorInfo | undefined {
    return this.infos.get(name) ?? this.parent?.info(name);
  }

  value(name: string): TensorValue | undefined {
    return this.infos.has(name) ? this.values.get(name) : this.parent?.value(name);
  }
}

function declaredOf(vi: ValueInfoProto): Declared | undefined {
  const type = vi.type;
  const tt = type?.tensorType ?? type?.sparseTensorType ?? type?.optionalType?.elemType?.tensorType;
  if (!tt) return undefined;
  const dtype = tt.elemType ? tt.elemType : undefined;
  const dims = tt.shape ? (tt.shape.dim ?? []).map((d): Dim | null => {
    if (Object.prototype.hasOwnProperty.call(d, 'dimValue') && d.dimValue !== null && d.dimValue !== undefined) {
      const n = int64ToNumber(d.dimValue);
      return Number.isFinite(n) && n >= 0 ? n : null;
    }
    return typeof d.dimParam === 'string' && d.dimParam.length > 0 ? d.dimParam : null;
  }) : undefined;
  return { dtype, dims };
}

class Engine {
  private counter = 0;

  /**
   * @param anchors symbols of the main graph's input dims: declared dims made only of these are kept as
   *   declared; other declared symbols (names an exporter made up for unknown dims) give way to what
   *   inference derives from the inputs.
   * @param reserved every dim name the model declares anywhere, which made-up symbols must avoid.
   */
  constructor(private readonly opsets: Map<string, number>, private readonly anchors: Set<string>, private readonly reserved: Set<string>) {}

  fresh(): string {
    let name: string;
    do name = `${UNKNOWN_DIM_PREFIX}${this.counter++}`; while (this.reserved.has(name));
    return name;
  }

  /** True when every symbol of the dim is an input dim symbol. */
  private anchored(d: Dim): boolean {
    if (typeof d === 'number') return true;
    if (this.anchors.has(d)) return true;
    for (const s of dimSymbols(d)) if (!this.anchors.has(s)) return false;
    return true;
  }

  /** Declared dim, unless it is a made-up name and inference knows the dim in terms of the inputs. */
  private mergeDim(declared: Dim, inferred: Dim): Dim {
    if (typeof declared === 'number' || this.anchored(declared)) return declared;
    return this.anchored(inferred) ? inferred : declared;
  }

  private opsetOf(domain: string | undefined): number {
    const d = !domain || domain === 'ai.onnx' ? '' : domain;
    return this.opsets.get(d) ?? (d === '' ? DEFAULT_ONNX_OPSET : 1);
  }

  private merge(declared: Declared | undefined, inferred: OutInfo | TensorInfo | undefined): TensorInfo {
    const dtype = declared?.dtype ?? inferred?.dtype;
    let shape: Dim[] | undefined;
    if (declared?.dims) {
      const inf = inferred?.shape;
      const sameRank = inf !== undefined && inf.length === declared.dims.length;
      shape = declared.dims.map((d, i) => (d === null ? (sameRank ? inf[i] : this.fresh()) : sameRank ? this.mergeDim(d, inf[i]) : d));
    } else if (inferred?.shape) {
      shape = [...inferred.shape];
    }
    const out: TensorInfo = {};
    if (dtype !== undefined) out.dtype = dtype;
    if (shape !== undefined) out.shape = shape;
    return out;
  }

  runGraph(g: GraphLike, parent: Scope | undefined, inputInfos: TensorInfo[] | undefined, depth: number): Scope {
    const scope = new Scope(parent);
    const declared = new Map<string, Declared>();
    for (const list of [g.valueInfo, g.output, g.input]) {
      for (const vi of list ?? []) {
        if (!vi?.name) continue;
        const d = declaredOf(vi);
        if (d) declared.set(vi.name, d);
      }
    }

    (g.input ?? []).forEach((vi, i) => {
      if (!vi?.name) return;
      scope.infos.set(vi.name, this.merge(declared.get(vi.name), inputInfos?.[i]));
    });

    for (const w of g.initializer ?? []) {
      const name = w.header?.name;
      if (!name) continue;
      const info: TensorInfo = {
        dtype: w.header.dataType || undefined,
        shape: (w.header.dims ?? []).map((d) => int64ToNumber(d)),
      };
      const merged = this.merge(declared.get(name), info);
      scope.infos.set(name, merged);
      let value: TensorValue | undefined;
      try { value = readTensorValue(w.header, w.bytes); } catch { value = undefined; }
      if (value) scope.values.set(name, value);
    }

    for (const node of topologicalOrder(g.node ?? [])) {
      let outs: (OutInfo | undefined)[] = [];
      const rule = ruleFor(node.domain ?? '', node.opType ?? '');
      if (rule) {
        try {
          outs = rule(this.context(node, scope, depth));
        } catch {
          outs = [];
        }
      }
      (node.output ?? []).forEach((name, i) => {
        if (!name) return;
        const out = outs[i];
        const info = this.merge(declared.get(name), out);
        scope.infos.set(name, info);
        if (out?.value && valueFits(out.value, info)) scope.values.set(name, out.value);
        else scope.values.delete(name);
      });
    }

    // Graph outputs that nothing produced here (outer-scope names) still get their declared info.
    for (const vi of g.output ?? []) {
      if (vi?.name && !scope.info(vi.name)) scope.infos.set(vi.name, this.merge(declared.get(vi.name), undefined));
    }
    return scope;
  }

  private runSubgraph(graph: GraphProto, parent: Scope, inputs: TensorInfo[], depth: number): TensorInfo[] {
    const declaredOnly = (): TensorInfo[] => (graph.output ?? []).map((o) => this.merge(declaredOf(o), undefined));
    if (depth > MAX_SUBGRAPH_DEPTH) return declaredOnly();
    const scope = this.runGraph({
      node: graph.node ?? [],
      input: graph.input ?? [],
      output: graph.output ?? [],
      valueInfo: graph.valueInfo ?? [],
      initializer: (graph.initializer ?? []).map((t) => ({ header: t })),
    }, parent, inputs, depth);
    return (graph.output ?? []).map((o) => (o?.name ? scope.info(o.name) : undefined) ?? {});
  }

  private context(node: NodeProto, scope: Scope, depth: number): RuleCtx {
    const inputs = node.input ?? [];
    const info = (i: number): TensorInfo | undefined => (inputs[i] ? scope.info(inputs[i]) : undefined);
    return {
      node,
      opset: this.opsetOf(node.domain),
      inputCount: inputs.length,
      outputCount: (node.output ?? []).length,
      has: (i) => Boolean(inputs[i]),
      dtype: (i) => info(i)?.dtype,
      shape: (i) => info(i)?.shape,
      value: (i) => (inputs[i] ? scope.value(inputs[i]) : undefined),
      attr: (name) => (node.attribute ?? []).find((a) => a?.name === name),
      fresh: () => this.fresh(),
      subgraph: (graph, infos) => this.runSubgraph(graph, scope, infos, depth + 1),
    };
  }
}

/** Adds every declared dim name of the value infos and of the nodes' subgraphs to `into`. */
function collectDimNames(lists: (ValueInfoProto[] | undefined)[], nodes: NodeProto[], into: Set<string>, depth: number): void {
  for (const list of lists) {
    for (const vi of list ?? []) for (const d of declaredOf(vi)?.dims ?? []) if (typeof d === 'string') into.add(d);
  }
  if (depth > MAX_SUBGRAPH_DEPTH) return;
  for (const node of nodes) {
    for (const a of node?.attribute ?? []) {
      for (const sub of [a.g, ...(a.graphs ?? [])]) {
        if (sub) collectDimNames([sub.input, sub.output, sub.valueInfo], sub.node ?? [], into, depth + 1);
      }
    }
  }
}

function valueFits(v: TensorValue, info: TensorInfo): boolean {
  const s = info.shape;
  return s !== undefined && s.length === v.shape.length && s.every((d, i) => d === v.shape[i]);
}

/**
 * Nodes in an order where producers come before consumers: the file's order when it is already valid
 * (the ONNX rule), else a depth-first order that keeps the file's order where it can; cycles are broken.
 */
function topologicalOrder(nodes: NodeProto[]): NodeProto[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const o of n?.output ?? []) if (o && !producer.has(o)) producer.set(o, i);
  });
  let sorted = true;
  nodes.forEach((n, i) => {
    for (const x of n?.input ?? []) {
      const p = x ? producer.get(x) : undefined;
      if (p !== undefined && p > i) sorted = false;
    }
  });
  if (sorted) return nodes.filter((n) => n);

  const state = new Uint8Array(nodes.length); // 0 new, 1 on stack, 2 done
  const order: NodeProto[] = [];
  for (let root = 0; root < nodes.length; root++) {
    if (state[root] !== 0 || !nodes[root]) continue;
    const stack: { i: number; next: number }[] = [{ i: root, next: 0 }];
    state[root] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const ins = nodes[top.i].input ?? [];
      if (top.next < ins.length) {
        const x = ins[top.next++];
        const p = x ? producer.get(x) : undefined;
        if (p !== undefined && state[p] === 0 && nodes[p]) {
          state[p] = 1;
          stack.push({ i: p, next: 0 });
        }
        continue;
      }
      state[top.i] = 2;
      order.push(nodes[top.i]);
      stack.pop();
    }
  }
  return order;
}
