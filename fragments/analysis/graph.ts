/**
 * Graph analysis: topological order, who produces and who consumes each tensor (counting the tensors
 * that If/Loop/Scan bodies read from the enclosing graph), and which nodes are "static", i.e. compute
 * only from weights (Constant nodes and what derives from them and initializers alone). Static nodes are
 * weights in disguise: the partitioner copies them into every fragment that needs them rather than
 * sending their outputs over the wire.
 */
import { AttributeType, type GraphProto, type NodeProto, type ValueInfoProto } from '../../proto/onnx.js';
import { FragmentError } from '../onnx/errors.js';
import type { ModelDoc, Weight } from '../onnx/model-doc.js';

export interface GraphIndex {
  readonly doc: ModelDoc;
  /** Nodes in topological order (stable: the file's order wherever it is already valid). */
  readonly nodes: NodeProto[];
  /** Inputs of each node (by position in `nodes`): explicit ones plus outer-scope reads of its subgraphs. */
  readonly nodeInputs: string[][];
  /** Position in `nodes` of the producer of each tensor. */
  readonly producer: Map<string, number>;
  /** Positions of the consumers of each tensor (sorted ascending). */
  readonly consumers: Map<string, number[]>;
  /** Initializers by name. */
  readonly weights: Map<string, Weight>;
  /** Positions of static nodes (see module doc). */
  readonly staticNodes: Set<number>;
  /** Graph inputs that the caller feeds (initializer-backed inputs of old IR versions excluded). */
  readonly graphInputs: ValueInfoProto[];
  readonly graphOutputs: ValueInfoProto[];
  /** True when a node carries subgraphs (If, Loop, Scan and the like). */
  hasSubgraph(position: number): boolean;
}

/** Names a subgraph reads from enclosing scopes (recursively through nested subgraphs). */
export function outerScopeReads(graph: GraphProto): Set<string> {
  const local = new Set<string>();
  for (const i of graph.input ?? []) if (i.name) local.add(i.name);
  for (const t of graph.initializer ?? []) if (t.name) local.add(t.name);
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) local.add(o);
  const reads = new Set<string>();
  for (const n of graph.node ?? []) {
    for (const i of n.input ?? []) if (i && !local.has(i)) reads.add(i);
    for (const g of subgraphsOf(n)) for (const r of outerScopeReads(g)) if (!local.has(r)) reads.add(r);
  }
  for (const o of graph.output ?? []) if (o.name && !local.has(o.name)) reads.add(o.name);
  return reads;
}

/** The subgraphs held in a node's attributes. */
export function subgraphsOf(node: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of node.attribute ?? []) {
    if (a.g && (a.type === AttributeType.GRAPH || a.type === undefined || a.type === 0)) out.push(a.g);
    if (a.graphs?.length) out.push(...a.graphs);
  }
  return out;
}

/** Builds the index; throws when the graph reads a tensor nothing provides or has a cycle. */
export function indexGraph(doc: ModelDoc): GraphIndex {
  const graph = doc.graph;
  const weights = new Map<string, Weight>();
  for (const w of graph.initializer) if (w.header.name) weights.set(w.header.name, w);
  const graphInputs = graph.input.filter((i) => i.name && !weights.has(i.name));
  const available = new Set<string>([...graphInputs.map((i) => i.name!), ...weights.keys()]);

  const original = graph.node;
  const inputsOf = original.map((n) => {
    const names = new Set<string>();
    for (const i of n.input ?? []) if (i) names.add(i);
    for (const g of subgraphsOf(n)) for (const r of outerScopeReads(g)) names.add(r);
    return [...names];
  });
  const producerOriginal = new Map<string, number>();
  original.forEach((n, idx) => {
    for (const o of n.output ?? []) {
      if (!o) continue;
      if (producerOriginal.has(o) || available.has(o)) {
        throw new FragmentError('NOT_ONNX', `tensor "${o}" is produced more than once (node "${n.name ?? n.opType}")`);
      }
      producerOriginal.set(o, idx);
    }
  });
  for (let idx = 0; idx < original.length; idx++) {
    for (const i of inputsOf[idx]) {
      if (!available.has(i) && !producerOriginal.has(i)) {
        throw new FragmentError('NOT_ONNX', `node "${original[idx].name || original[idx].opType}" reads tensor "${i}", which no node, input or initializer provides`);
      }
    }
  }

  // Kahn's algorithm, always taking the ready node that comes first in the file.
  const pending = original.map((_, idx) => inputsOf[idx].filter((i) => producerOriginal.has(i)).length);
  const dependents = new Map<number, number[]>();
  original.forEach((_, idx) => {
    for (const i of inputsOf[idx]) {
      const p = producerOriginal.get(i);
      if (p === undefined) continue;
      const list = dependents.get(p) ?? [];
      list.push(idx);
      dependents.set(p, list);
    }
  });
  const ready = new MinHeap();
  pending.forEach((count, idx) => { if (count === 0) ready.push(idx); });
  const order: number[] = [];
  while (ready.size > 0) {
    const idx = ready.pop();
    order.push(idx);
    for (const d of dependents.get(idx) ?? []) if (--pending[d] === 0) ready.push(d);
  }
  if (order.length !== original.length) {
    const stuck = original.findIndex((_, idx) => pending[idx] > 0);
    throw new FragmentError('NOT_ONNX', `the graph has a cycle (at node "${original[stuck].name || original[stuck].opType}")`);
  }

  const nodes = order.map((i) => original[i]);
  const nodeInputs = order.map((i) => inputsOf[i]);
  const producer = new Map<string, number>();
  nodes.forEach((n, pos) => { for (const o of n.output ?? []) if (o) producer.set(o, pos); });
  const consumers = new Map<string, number[]>();
  nodeInputs.forEach((inputs, pos) => {
    for (const i of inputs) {
      const list = consumers.get(i) ?? [];
      list.push(pos);
      consumers.set(i, list);
    }
  });

  const staticNodes = new Set<number>();
  const staticTensors = new Set<string>(weights.keys());
  const hasSub = nodes.map((n) => subgraphsOf(n).length > 0);
  nodes.forEach((n, pos) => {
    if (hasSub[pos] || NON_DETERMINISTIC.has(n.opType ?? '')) return;
    if (nodeInputs[pos].every((i) => staticTensors.has(i))) {
      staticNodes.add(pos);
      for (const o of n.output ?? []) if (o) staticTensors.add(o);
    }
  });

  return {
    doc, nodes, nodeInputs, producer, consumers, weights, staticNodes, graphInputs,
    graphOutputs: graph.output,
    hasSubgraph: (position) => hasSub[position],
  };
}

/** Ops whose output is not a function of their inputs: never replicate them. */
const NON_DETERMINISTIC = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

class MinHeap {
  private items: number[] = [];
  get size(): number { return this.items.length; }
  push(v: number): void {
    const a = this.items;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= a[i]) break;
      [a[p], a[i]] = [a[i], a[p]];
      i = p;
    }
  }
  pop(): number {
    const a = this.items;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && a[l] < a[m]) m = l;
        if (r < a.length && a[r] < a[m]) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i], a[m]];
        i = m;
      }
    }
    return top;
  }
}
