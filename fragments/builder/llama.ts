/**
 * Llama style decoder: token embedding, blocks of RMSNorm / rotary grouped-query attention / RMSNorm /
 * SwiGLU MLP without biases, a final RMSNorm and a separate (untied) LM head.
 */
import {
  attention, attentionAllowed, decoderInputs, decoderOutputs, embeddingStd, hiddenInfo, linear, linearStd, rmsNorm, rotaryTables,
  type KvPair,
} from './decoder.js';
import { GraphBuilder } from './graph-builder.js';
import type { ResolvedOptions } from './options.js';

/** Builds a llama graph. */
export function buildLlama(o: ResolvedOptions): { g: GraphBuilder } {
  const g = new GraphBuilder(o.name, o.seed);
  const inputs = decoderInputs(g, o);
  const embed = g.generated('model.embed_tokens.weight', [o.vocab, o.dModel], { kind: 'normal', std: embeddingStd(o) });
  let x = hiddenInfo(g, o, g.op('Gather', [embed, inputs.inputIds], { name: '/model/embed_tokens/Gather', attrs: { axis: 0 } }));
  const allowed = attentionAllowed(g, inputs);
  const rotary = rotaryTables(g, o, inputs.positionIds);
  const present: KvPair[] = [];
  for (let i = 0; i < o.layers; i++) {
    const node = `/model/layers.${i}`;
    const param = `model.layers.${i}`;
    const h1 = rmsNorm(g, x, `${node}/input_layernorm`, `${param}.input_layernorm`, o.dModel);
    const attn = attention(g, o, { layer: i, node: `${node}/attn`, param: `${param}.attn`, x: h1, allowed, past: inputs.past[i], bias: false, rotary });
    if (attn.present) present.push(attn.present);
    x = g.op('Add', [x, attn.out], { name: `${node}/attn_residual/Add` });
    const h2 = rmsNorm(g, x, `${node}/post_attention_layernorm`, `${param}.post_attention_layernorm`, o.dModel);
    const mlp = `${node}/mlp`;
    const mp = `${param}.mlp`;
    const gate = linear(g, h2, { node: `${mlp}/gate_proj`, param: `${mp}.gate_proj`, inFeatures: o.dModel, outFeatures: o.dFf, bias: false, std: linearStd(o, o.dModel) });
    const up = linear(g, h2, { node: `${mlp}/up_proj`, param: `${mp}.up_proj`, inFeatures: o.dModel, outFeatures: o.dFf, bias: false, std: linearStd(o, o.dModel) });
    const sig = g.op('Sigmoid', [gate], { name: `${mlp}/act/Sigmoid` });
    const silu = g.op('Mul', [gate, sig], { name: `${mlp}/act/Mul` });
    const prod = g.op('Mul', [silu, up], { name: `${mlp}/Mul` });
    const down = linear(g, prod, { node: `${mlp}/down_proj`, param: `${mp}.down_proj`, inFeatures: o.dFf, outFeatures: o.dModel, bias: false, std: linearStd(o, o.dFf, true) });
    x = hiddenInfo(g, o, g.op('Add', [x, down], { name: `${node}/mlp_residual/Add` }));
  }
  const h = rmsNorm(g, x, '/model/norm', 'model.norm', o.dModel);
  const head = g.generated('lm_head.weight', [o.dModel, o.vocab], { kind: 'normal', std: linearStd(o, o.dModel) });
  const logits = g.op('MatMul', [h, head], { name: '/lm_head/MatMul', output: 'logits' });
  decoderOutputs(g, o, logits, present);
  return { g };
}
