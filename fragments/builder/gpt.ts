/**
 * GPT-2 style decoder (and its mixture-of-experts variant `gpt-moe`): token + learned position
 * embeddings, pre-LayerNorm blocks of causal multi-head attention and a GELU MLP (or MoE), a final
 * LayerNorm and an LM head tied to the token embedding (a Transpose of the same initializer).
 */
import {
  attention, attentionAllowed, decoderInputs, decoderOutputs, embeddingStd, gptMlp, hiddenInfo, layerNorm, type KvPair,
} from './decoder.js';
import { GraphBuilder } from './graph-builder.js';
import { moeMlp, type ExpertGroup } from './moe.js';
import type { ResolvedOptions } from './options.js';

/** Name of the token embedding, shared by the embedding Gather and the LM head Transpose. */
export const GPT_EMBEDDING = 'model.embed_tokens.weight';

/** Builds a gpt (or gpt-moe when `o.arch` is 'gpt-moe') graph; returns the builder and, for gpt-moe, the expert groups. */
export function buildGpt(o: ResolvedOptions): { g: GraphBuilder; experts?: ExpertGroup[] } {
  const g = new GraphBuilder(o.name, o.seed);
  const inputs = decoderInputs(g, o);
  const wte = g.generated(GPT_EMBEDDING, [o.vocab, o.dModel], { kind: 'normal', std: embeddingStd(o) });
  const wpe = g.generated('model.embed_positions.weight', [o.maxPositions, o.dModel], { kind: 'normal', std: embeddingStd(o) / 2 });
  const tok = g.op('Gather', [wte, inputs.inputIds], { name: '/model/embed_tokens/Gather', attrs: { axis: 0 } });
  const pos = g.op('Gather', [wpe, inputs.positionIds], { name: '/model/embed_positions/Gather', attrs: { axis: 0 } });
  let x = hiddenInfo(g, o, g.op('Add', [tok, pos], { name: '/model/embed/Add' }));
  const allowed = attentionAllowed(g, inputs);
  const present: KvPair[] = [];
  const experts: ExpertGroup[] = [];
  for (let i = 0; i < o.layers; i++) {
    const node = `/model/layers.${i}`;
    const param = `model.layers.${i}`;
    const h1 = layerNorm(g, x, `${node}/ln_1`, `${param}.ln_1`, o.dModel);
    const attn = attention(g, o, { layer: i, node: `${node}/attn`, param: `${param}.attn`, x: h1, allowed, past: inputs.past[i], bias: true });
    if (attn.present) present.push(attn.present);
    x = g.op('Add', [x, attn.out], { name: `${node}/attn_residual/Add` });
    const h2 = layerNorm(g, x, `${node}/ln_2`, `${param}.ln_2`, o.dModel);
    let m: string;
    if (o.arch === 'gpt-moe') {
      const moe = moeMlp(g, o, i, h2);
      experts.push(moe.group);
      m = moe.out;
    } else {
      m = gptMlp(g, o, h2, `${node}/mlp`, `${param}.mlp`);
    }
    x = hiddenInfo(g, o, g.op('Add', [x, m], { name: `${node}/mlp_residual/Add` }));
  }
  const h = layerNorm(g, x, '/model/norm', 'model.norm', o.dModel);
  const head = g.op('Transpose', [wte], { name: '/lm_head/Transpose', attrs: { perm: [1, 0] } });
  const logits = g.op('MatMul', [h, head], { name: '/lm_head/MatMul', output: 'logits' });
  decoderOutputs(g, o, logits, present);
  return o.arch === 'gpt-moe' ? { g, experts } : { g };
}
