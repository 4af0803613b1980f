/**
 * Finds mixture-of-experts layers in any ONNX graph by their dataflow, not by names: a router (MatMul/Gemm
 * of the layer input x, optionally a bias and a Softmax) feeds a TopK; the top-k weights become dense gates
 * G [..., E]; each expert e is a sub-graph that reads only x and whose output y_e is multiplied by the gate
 * G[..., e] (a Gather or a one-wide Slice on the last axis); the products are summed (Sum or a chain of
 * Add) into the layer output. Selective activation needs exactly this split: the router says which experts
 * each token needs, each expert runs on its tokens alone, and the weighted sum is done by whoever called them.
 */
import { int64ToNumber, type NodeProto } from '../../proto/onnx.js';
import type { GraphIndex } from '../analysis/graph.js';
import type { TensorInfo, TensorValue } from '../analysis/infer.js';

/** How the router's scores (TopK's input) turn into weights when the chosen set changes (fallback). */
export type ScoreKind = 'logits' | 'probabilities';

/** One recognised layer; node lists are positions in `index.nodes`, ascending. */
export interface MoeLayer {
  /** Experts per token. */
  topK: number;
  /** The layer input every expert and the router read. */
  input: string;
  /** The layer output: Σ_e G[..., e] · y_e. */
  output: string;
  /** TopK's input: router logits, or probabilities when a Softmax precedes TopK. */
  scores: string;
  scoreKind: ScoreKind;
  /** Dense gates [..., E]: the weight of each chosen expert, 0 elsewhere. */
  gates: string;
  routerNodes: number[];
  experts: { index: number; output: string; nodes: number[] }[];
  /** Gate extraction, the products and the sum: what the caller of the experts does instead. */
  combineNodes: number[];
}

export interface MoeRecognition {
  layers: MoeLayer[];
  /** TopK nodes that did not turn out to be MoE routers, with why. */
  skipped: { node: string; reason: string }[];
}

/** Ops that pass the router's values through unchanged in meaning, walking back from TopK to the router MatMul. */
const ROUTER_PASS = new Set(['Softmax', 'Cast', 'Identity']);
/** Ops that may stand between a gate extraction and the product that uses it. */
const GATE_PASS = new Set(['Unsqueeze', 'Squeeze', 'Reshape', 'Identity', 'Cast']);

class NotMoe extends Error {}

/** Recognises the MoE layers of an indexed graph (see module doc). `values`: constants from analyzeModel. */
export function recogniseMoeLayers(index: GraphIndex, infos: Map<string, TensorInfo>, values: Map<string, TensorValue>): MoeRecognition {
  const layers: MoeLayer[] = [];
  const skipped: MoeRecognition['skipped'] = [];
  index.nodes.forEach((node, pos) => {
    if (node.opType !== 'TopK' || (node.domain ?? '') !== '' || index.staticNodes.has(pos)) return;
    try {
      layers.push(recogniseAt(index, infos, values, pos));
    } catch (err) {
      if (!(err instanceof NotMoe)) throw err;
      skipped.push({ node: node.name || `TopK #${pos}`, reason: err.message });
    }
  });
  return { layers, skipped };
}

function recogniseAt(index: GraphIndex, infos: Map<string, TensorInfo>, values: Map<string, TensorValue>, topKPos: number): MoeLayer {
  const topK = index.nodes[topKPos];
  const fail = (why: string): never => { throw new NotMoe(why); };
  const isStaticTensor = (t: string): boolean => index.weights.has(t) || (index.producer.has(t) && index.staticNodes.has(index.producer.get(t)!));
  const producerOf = (t: string): NodeProto | undefined => (index.producer.has(t) ? index.nodes[index.producer.get(t)!] : undefined);

  const k = topKValue(topK, values);
  if (k === undefined) fail('its K is not a constant');
  const scores = topK.input![0];
  const scoresShape = infos.get(scores)?.shape;
  const rank = scoresShape?.length;
  const axis = intAttr(topK, 'axis', -1);
  if (rank === undefined || (axis !== -1 && axis !== rank - 1)) fail('it does not pick along the last axis');
  if (intAttr(topK, 'largest', 1) !== 1) fail('it picks the smallest values');

  // The router: back from the scores through Softmax/Cast/Identity and a bias Add to a MatMul/Gemm with a weight.
  let scoreKind: ScoreKind = 'logits';
  let cur = scores;
  let x: string | undefined;
  for (let guard = 0; guard < 8 && x === undefined; guard++) {
    const p = producerOf(cur);
    if (!p || index.staticNodes.has(index.producer.get(cur)!)) fail('no router MatMul before it');
    const op = p!.opType ?? '';
    if (op === 'Softmax' && cur === scores) scoreKind = 'probabilities';
    if (ROUTER_PASS.has(op)) { cur = p!.input![0]; continue; }
    const dynamic = (p!.input ?? []).filter((i) => i && !isStaticTensor(i));
    if (op === 'Add' && dynamic.length === 1) { cur = dynamic[0]; continue; }
    if ((op === 'MatMul' || op === 'Gemm') && dynamic.length === 1) { x = dynamic[0]; break; }
    fail(`its scores come from ${op}, not from a router MatMul of the layer input`);
  }
  if (x === undefined) return fail('no router MatMul before it');
  const input = x;

  const dependsOnRouter = forwardFrom(index, topKPos);
  const dependsOnInput = forwardFrom(index, index.producer.get(input), input);
  const beforeInput = backwardFrom(index, input);
  const fromRouter = (t: string): boolean => index.producer.has(t) && (index.producer.get(t) === topKPos || dependsOnRouter.has(index.producer.get(t)!));
  const fromInputOnly = (t: string): boolean => (t === input || (index.producer.has(t) && dependsOnInput.has(index.producer.get(t)!))) && !fromRouter(t);

  // The products gate_e · y_e: a Mul of a router-derived gate and an input-derived, router-free value.
  const products: { pos: number; expert: number; value: string; gateChain: number[]; gates: string }[] = [];
  for (const pos of dependsOnRouter) {
    const n = index.nodes[pos];
    if (n.opType !== 'Mul' || (n.input ?? []).length !== 2) continue;
    const [a, b] = n.input!;
    const gateSide = fromRouter(a) && fromInputOnly(b) ? a : fromRouter(b) && fromInputOnly(a) ? b : undefined;
    if (!gateSide) continue;
    const extraction = gateExtraction(index, values, infos, gateSide);
    if (!extraction) continue;
    products.push({ pos, expert: extraction.expert, value: gateSide === a ? b : a, gateChain: extraction.chain, gates: extraction.gates });
  }
  if (products.length === 0) fail('no expert output is multiplied by one of its gates');
  const gates = products[0].gates;
  if (products.some((p) => p.gates !== gates)) fail('the experts\' gates come from different tensors');
  const experts = products.length;
  const declared = scoresShape![rank! - 1];
  if (typeof declared === 'number' && declared !== experts) fail(`the router scores ${declared} experts but ${experts} are gated`);
  const seen = new Set(products.map((p) => p.expert));
  if (seen.size !== experts || [...seen].some((e) => e < 0 || e >= experts)) fail('the gated expert indices are not 0..E-1, each once');
  if (k! > experts) fail(`K ${k} exceeds the ${experts} experts`);

  // Each expert: everything its value needs back to the layer input, and nothing else dynamic.
  const closure = (from: string[], what: string): number[] => {
    const found = new Set<number>();
    const stack = [...from];
    while (stack.length) {
      const t = stack.pop()!;
      if (t === input || isStaticTensor(t)) continue;
      const p = index.producer.get(t);
      if (p === undefined) fail(`${what} reads "${t}", not only the layer input`);
      if (found.has(p!)) continue;
      if (beforeInput.has(p!)) fail(`${what} reads "${t}", not only the layer input`);
      found.add(p!);
      stack.push(...index.nodeInputs[p!]);
    }
    return [...found].sort((a, b) => a - b);
  };
  const expertList = products.sort((a, b) => a.expert - b.expert).map((p) => {
    const nodes = closure([p.value], `expert ${p.expert}`);
    if (nodes.some((n) => dependsOnRouter.has(n) || n === topKPos)) fail(`expert ${p.expert} depends on the router`);
    return { index: p.expert, output: p.value, nodes };
  });
  const routerNodes = closure([gates, scores], 'the router');

  // The sum: Sum/Add nodes whose inputs are all products (or partial sums), until one covers every expert.
  const covered = new Map<string, Set<number>>();
  for (const p of products) covered.set(index.nodes[p.pos].output![0], new Set([p.expert]));
  const sumNodes: number[] = [];
  let output: string | undefined;
  for (let pos = Math.min(...products.map((p) => p.pos)); pos < index.nodes.length && output === undefined; pos++) {
    const n = index.nodes[pos];
    if ((n.opType !== 'Sum' && n.opType !== 'Add') || !(n.input ?? []).length || !n.input!.every((i) => covered.has(i))) continue;
    const union = new Set<number>();
    for (const i of n.input!) for (const e of covered.get(i)!) union.add(e);
    covered.set(n.output![0], union);
    sumNodes.push(pos);
    if (union.size === experts) output = n.output![0];
  }
  if (output === undefined && experts === 1) output = index.nodes[products[0].pos].output![0];
  if (output === undefined) return fail('the gated expert outputs are not summed into one tensor');

  const combineNodes = [...new Set([...products.flatMap((p) => [p.pos, ...p.gateChain]), ...sumNodes])].sort((a, b) => a - b);
  // The parts must not share dynamic nodes, and only the layer output may leave the layer.
  const owner = new Map<number, string>();
  const claim = (nodes: number[], who: string): void => {
    for (const n of nodes) {
      const other = owner.get(n);
      if (other !== undefined) fail(`${who} and ${other} share the node "${index.nodes[n].name || index.nodes[n].opType}"`);
      owner.set(n, who);
    }
  };
  claim(routerNodes, 'the router');
  for (const e of expertList) claim(e.nodes, `expert ${e.index}`);
  claim(combineNodes, 'the weighted sum');
  if (!owner.has(topKPos)) fail('the gates do not come from this TopK');
  for (const n of owner.keys()) {
    for (const o of index.nodes[n].output ?? []) {
      if (!o || o === output) continue;
      if (index.graphOutputs.some((g) => g.name === o)) fail(`"${o}", made inside the layer, is a model output`);
      for (const c of index.consumers.get(o) ?? []) if (!owner.has(c)) fail(`"${o}", made inside the layer, is read outside it`);
    }
  }
  return { topK: k!, input, output, scores, scoreKind, gates, routerNodes, experts: expertList, combineNodes };
}

/** Traces a gate back through reshapes to `Gather(G, e)` or `Slice(G, e, e+1)` on G's last axis. */
function gateExtraction(index: GraphIndex, values: Map<string, TensorValue>, infos: Map<string, TensorInfo>, gate: string): { expert: number; gates: string; chain: number[] } | undefined {
  const chain: number[] = [];
  let cur = gate;
  for (let guard = 0; guard < 6; guard++) {
    const pos = index.producer.get(cur);
    if (pos === undefined) return undefined;
    const n = index.nodes[pos];
    chain.push(pos);
    if (GATE_PASS.has(n.opType ?? '')) { cur = n.input![0]; continue; }
    const data = n.input?.[0];
    if (!data) return undefined;
    const rank = infos.get(data)?.shape?.length;
    if (rank === undefined) return undefined;
    const last = (axis: number): boolean => axis === -1 || axis === rank - 1;
    const scalar = (t: string | undefined): number | undefined => {
      const v = t ? values.get(t) : undefined;
      return v && v.data.length === 1 && typeof v.data[0] === 'number' ? v.data[0] : undefined;
    };
    if (n.opType === 'Gather') {
      const e = scalar(n.input![1]);
      if (e === undefined || !last(intAttr(n, 'axis', 0))) return undefined;
      return { expert: normalise(e, data, infos), gates: data, chain };
    }
    if (n.opType === 'Slice') {
      const start = scalar(n.input![1]);
      const end = scalar(n.input![2]);
      const axis = n.input![3] ? scalar(n.input![3]) : 0;
      const step = n.input![4] ? scalar(n.input![4]) : 1;
      if (start === undefined || end === undefined || axis === undefined || !last(axis) || step !== 1) return undefined;
      const e = normalise(start, data, infos);
      if (normalise(end, data, infos) !== e + 1 && !(end >= Number.MAX_SAFE_INTEGER / 2)) return undefined;
      return { expert: e, gates: data, chain };
    }
    return undefined;
  }
  return undefined;
}

function normalise(i: number, tensor: string, infos: Map<string, TensorInfo>): number {
  const width = infos.get(tensor)?.shape?.at(-1);
  return i < 0 && typeof width === 'number' ? width + i : i;
}

function topKValue(node: NodeProto, values: Map<string, TensorValue>): number | undefined {
  const kInput = node.input?.[1];
  if (!kInput) {
    const a = node.attribute?.find((x) => x.name === 'k');
    return a ? int64ToNumber(a.i) : undefined;
  }
  const v = values.get(kInput);
  return v && v.data.length === 1 && typeof v.data[0] === 'number' ? v.data[0] : undefined;
}

function intAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a ? int64ToNumber(a.i) : fallback;
}

/** Positions of the dynamic nodes downstream of the node at `start` (or of `tensor`, when given; start excluded). */
function forwardFrom(index: GraphIndex, start: number | undefined, tensor?: string): Set<number> {
  const found = new Set<number>();
  const stack: string[] = tensor !== undefined ? [tensor] : start !== undefined ? [...(index.nodes[start].output ?? [])] : [];
  while (stack.length) {
    const t = stack.pop()!;
    for (const c of index.consumers.get(t) ?? []) {
      if (found.has(c) || c === start) continue;
      found.add(c);
      for (const o of index.nodes[c].output ?? []) if (o) stack.push(o);
    }
  }
  return found;
}

/** Positions of the dynamic nodes that `tensor` depends on (its producer included). */
function backwardFrom(index: GraphIndex, tensor: string): Set<number> {
  const found = new Set<number>();
  const stack = [tensor];
  while (stack.length) {
    const t = stack.pop()!;
    const p = index.producer.get(t);
    if (p === undefined || found.has(p) || index.staticNodes.has(p)) continue;
    found.add(p);
    stack.push(...index.nodeInputs[p]);
  }
  return found;
}
