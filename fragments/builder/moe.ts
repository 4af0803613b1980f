/**
 * The mixture-of-experts MLP of `gpt-moe`: a router picks the top-k of E experts per token, the softmax of
 * their router logits gates them, and every expert is computed densely and combined Σ_e gate_e · expert_e(x)
 * (gates of unpicked experts are 0). Each expert's nodes share the prefix `/model/layers.{i}/moe/experts.{e}/`
 * and are listed in the model's `gridpipe.experts` metadata so a partitioner can place experts apart.
 */
import { gptMlp, linearStd } from './decoder.js';
import { makeTensor, type GraphBuilder } from './graph-builder.js';
import type { ResolvedOptions } from './options.js';

/** One MoE layer as recorded in `gridpipe.experts`. */
export interface ExpertGroup {
  layer: number;
  topK: number;
  /** The router logits tensor [batch, seq, experts]. */
  router: string;
  experts: { index: number; nodes: string[] }[];
}

/** Metadata key of the expert groups (JSON array of ExpertGroup). */
export const EXPERTS_METADATA_KEY = 'gridpipe.experts';

/** Builds the MoE MLP of layer `layer` on normalised hidden states `x`; returns its output and its expert group. */
export function moeMlp(g: GraphBuilder, o: ResolvedOptions, layer: number, x: string): { out: string; group: ExpertGroup } {
  const node = `/model/layers.${layer}/moe`;
  const param = `model.layers.${layer}.moe`;
  const routerW = g.generated(`${param}.router.weight`, [o.dModel, o.experts], { kind: 'normal', std: linearStd(o, o.dModel) });
  const router = g.op('MatMul', [x, routerW], { name: `${node}/router/MatMul` });
  const [topValues, topIndices] = g.node('TopK', [router, g.int64([o.topK])], {
    name: `${node}/router/TopK`, outputs: 2, attrs: { axis: -1, largest: 1, sorted: 1 },
  });
  const weights = g.op('Softmax', [topValues], { name: `${node}/router/Softmax`, attrs: { axis: -1 } });
  const shape = g.op('Shape', [router], { name: `${node}/router/Shape` });
  const zeros = g.op('ConstantOfShape', [shape], { name: `${node}/router/ConstantOfShape`, attrs: { value: makeTensor([1], Float32Array.of(0)) } });
  const gates = g.op('ScatterElements', [zeros, topIndices, weights], { name: `${node}/router/ScatterElements`, attrs: { axis: -1 } });
  const group: ExpertGroup = { layer, topK: o.topK, router, experts: [] };
  const outs: string[] = [];
  for (let e = 0; e < o.experts; e++) {
    const first = g.nodeList.length;
    const en = `${node}/experts.${e}`;
    const gate = g.op('Gather', [gates, g.int64([e])], { name: `${en}/gate/Gather`, attrs: { axis: -1 } });
    const y = gptMlp(g, o, x, en, `${param}.experts.${e}`);
    outs.push(g.op('Mul', [y, gate], { name: `${en}/Mul` }));
    group.experts.push({ index: e, nodes: g.nodeList.slice(first).map((n) => n.name ?? '') });
  }
  const out = g.op('Sum', outs, { name: `${node}/Sum` });
  return { out, group };
}
