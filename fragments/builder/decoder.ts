/**
 * Parts shared by the decoder-only language models (gpt, llama, gpt-moe): Optimum-style inputs and
 * outputs, the causal + padding attention mask, multi-head / grouped-query attention with an optional
 * KV cache and rotary embeddings, linear layers, norms and activations.
 */
import { DataType } from '../onnx/dtype.js';
import { attr, type GraphBuilder } from './graph-builder.js';
import type { ResolvedOptions } from './options.js';

/** Symbolic dimensions, as Hugging Face Optimum names them. */
export const BATCH = 'batch_size';
export const SEQ = 'sequence_length';
export const PAST = 'past_sequence_length';
export const TOTAL = 'past_sequence_length + sequence_length';

/** Large negative score for masked keys (not -inf, so a fully masked row stays finite). */
export const MASKED_SCORE = -1e9;

export interface KvPair { key: string; value: string }

export interface DecoderInputs {
  inputIds: string;
  attentionMask: string;
  positionIds: string;
  /** `past_key_values.{i}.key/value` per layer; empty without KV cache. */
  past: KvPair[];
}

/** Declares input_ids, attention_mask, position_ids and (with KV cache) past_key_values.{i}.key/value. */
export function decoderInputs(g: GraphBuilder, o: ResolvedOptions): DecoderInputs {
  const inputIds = g.input('input_ids', DataType.INT64, [BATCH, SEQ]);
  const attentionMask = g.input('attention_mask', DataType.INT64, [BATCH, o.kvCache ? TOTAL : SEQ]);
  const positionIds = g.input('position_ids', DataType.INT64, [BATCH, SEQ]);
  const past: KvPair[] = [];
  if (o.kvCache) {
    for (let i = 0; i < o.layers; i++) {
      past.push({
        key: g.input(`past_key_values.${i}.key`, DataType.FLOAT, [BATCH, o.kvHeads, PAST, o.headDim]),
        value: g.input(`past_key_values.${i}.value`, DataType.FLOAT, [BATCH, o.kvHeads, PAST, o.headDim]),
      });
    }
  }
  return { inputIds, attentionMask, positionIds, past };
}

/** Declares `logits` and (with KV cache) `present.{i}.key/value` as graph outputs, in Optimum's order. */
export function decoderOutputs(g: GraphBuilder, o: ResolvedOptions, logits: string, present: KvPair[]): void {
  g.output(logits, DataType.FLOAT, [BATCH, SEQ, o.vocab]);
  for (const p of present) {
    g.output(p.key, DataType.FLOAT, [BATCH, o.kvHeads, TOTAL, o.headDim]);
    g.output(p.value, DataType.FLOAT, [BATCH, o.kvHeads, TOTAL, o.headDim]);
  }
}

/**
 * The bool mask [batch, 1, seq, past + seq], true where a query may attend a key: key position j is
 * visible to the query at absolute position past + t when j ≤ past + t and attention_mask[b, j] ≠ 0.
 * past = attention_mask length − sequence length, so this also serves the no-cache model (past = 0).
 */
export function attentionAllowed(g: GraphBuilder, inputs: DecoderInputs): string {
  const p = '/model/attn_mask';
  const one = g.int64(1);
  const idsShape = g.op('Shape', [inputs.inputIds], { name: `${p}/input_ids/Shape` });
  const seqLen = g.op('Gather', [idsShape, one], { name: `${p}/seq_len/Gather`, attrs: { axis: 0 } });
  const maskShape = g.op('Shape', [inputs.attentionMask], { name: `${p}/attention_mask/Shape` });
  const total = g.op('Gather', [maskShape, one], { name: `${p}/total_len/Gather`, attrs: { axis: 0 } });
  const pastLen = g.op('Sub', [total, seqLen], { name: `${p}/past_len/Sub` });
  const qPos = g.op('Range', [pastLen, total, one], { name: `${p}/query_pos/Range` });
  const kPos = g.op('Range', [g.int64(0), total, one], { name: `${p}/key_pos/Range` });
  const qCol = g.op('Unsqueeze', [qPos, g.int64([1])], { name: `${p}/query_pos/Unsqueeze` });
  const kRow = g.op('Unsqueeze', [kPos, g.int64([0])], { name: `${p}/key_pos/Unsqueeze` });
  const causal = g.op('LessOrEqual', [kRow, qCol], { name: `${p}/causal/LessOrEqual` });
  const keep = g.op('Cast', [inputs.attentionMask], { name: `${p}/padding/Cast`, attrs: { to: DataType.BOOL } });
  const keep4 = g.op('Unsqueeze', [keep, g.int64([1, 2])], { name: `${p}/padding/Unsqueeze` });
  const allowed = g.op('And', [causal, keep4], { name: `${p}/And` });
  g.valueInfo(allowed, DataType.BOOL, [BATCH, 1, SEQ, TOTAL]);
  return allowed;
}

/** Initial standard deviation of a weight read by fan-in `fanIn` (LeCun), shrunk for residual outputs. */
export function linearStd(o: ResolvedOptions, fanIn: number, residualOutput = false): number {
  const std = 1 / Math.sqrt(fanIn);
  return residualOutput ? std / Math.sqrt(2 * o.layers) : std;
}

/** Standard deviation of token / position embeddings: 1/sqrt(dModel) (≈ 0.02 at dModel 2048). */
export function embeddingStd(o: ResolvedOptions): number {
  return 1 / Math.sqrt(o.dModel);
}

export interface LinearSpec {
  /** Node name prefix, e.g. `/model/layers.0/attn/q_proj`. */
  node: string;
  /** Parameter name prefix, e.g. `model.layers.0.attn.q_proj`. */
  param: string;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
  std: number;
}

/** x·W (+ b) with W stored in MatMul layout [in, out] as `<param>.weight`, b as `<param>.bias`. */
export function linear(g: GraphBuilder, x: string, s: LinearSpec): string {
  const w = g.generated(`${s.param}.weight`, [s.inFeatures, s.outFeatures], { kind: 'normal', std: s.std });
  const y = g.op('MatMul', [x, w], { name: `${s.node}/MatMul` });
  if (!s.bias) return y;
  const b = g.generated(`${s.param}.bias`, [s.outFeatures], { kind: 'normal', std: 0.02 });
  return g.op('Add', [y, b], { name: `${s.node}/Add` });
}

/** LayerNormalization over the last axis, with weight ≈ 1 and bias ≈ 0. */
export function layerNorm(g: GraphBuilder, x: string, node: string, param: string, size: number): string {
  const w = g.generated(`${param}.weight`, [size], { kind: 'normal', mean: 1, std: 0.02 });
  const b = g.generated(`${param}.bias`, [size], { kind: 'normal', std: 0.02 });
  return g.op('LayerNormalization', [x, w, b], { name: `${node}/LayerNormalization`, attrs: { axis: -1, epsilon: attr.float(1e-5) } });
}

/** RMSNorm decomposed: x / sqrt(mean(x²) + eps) · weight, no bias. */
export function rmsNorm(g: GraphBuilder, x: string, node: string, param: string, size: number): string {
  const w = g.generated(`${param}.weight`, [size], { kind: 'normal', mean: 1, std: 0.02 });
  const sq = g.op('Pow', [x, g.float32(2)], { name: `${node}/Pow` });
  const mean = g.op('ReduceMean', [sq], { name: `${node}/ReduceMean`, attrs: { axes: [-1], keepdims: 1 } });
  const eps = g.op('Add', [mean, g.float32(1e-6)], { name: `${node}/Add` });
  const rms = g.op('Sqrt', [eps], { name: `${node}/Sqrt` });
  const normed = g.op('Div', [x, rms], { name: `${node}/Div` });
  return g.op('Mul', [normed, w], { name: `${node}/Mul` });
}

/** Exact GELU: 0.5 · x · (1 + erf(x / √2)). */
export function gelu(g: GraphBuilder, x: string, node: string): string {
  const scaled = g.op('Div', [x, g.float32(Math.SQRT2)], { name: `${node}/Div` });
  const erf = g.op('Erf', [scaled], { name: `${node}/Erf` });
  const plus = g.op('Add', [erf, g.float32(1)], { name: `${node}/Add` });
  const prod = g.op('Mul', [x, plus], { name: `${node}/Mul` });
  return g.op('Mul', [prod, g.float32(0.5)], { name: `${node}/Mul_1` });
}

/** The GPT MLP: fc_in (d → dFf), GELU, fc_out (dFf → d), with biases. */
export function gptMlp(g: GraphBuilder, o: ResolvedOptions, x: string, node: string, param: string): string {
  const h = linear(g, x, { node: `${node}/fc_in`, param: `${param}.fc_in`, inFeatures: o.dModel, outFeatures: o.dFf, bias: true, std: linearStd(o, o.dModel) });
  const a = gelu(g, h, `${node}/act`);
  return linear(g, a, { node: `${node}/fc_out`, param: `${param}.fc_out`, inFeatures: o.dFf, outFeatures: o.dModel, bias: true, std: linearStd(o, o.dFf, true) });
}

/** Rotary tables gathered by position_ids and unsqueezed to [batch, 1, seq, headDim]. */
export interface Rotary { cos: string; sin: string }

/** Rotary cos/sin tables [maxPositions, headDim] (Hugging Face layout: frequencies repeated twice) as initializers, gathered by position_ids. */
export function rotaryTables(g: GraphBuilder, o: ResolvedOptions, positionIds: string, theta = 10000): Rotary {
  const hd = o.headDim;
  const half = hd / 2;
  const invFreq = Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / hd));
  const table = (fn: (v: number) => number) => (out: Float32Array, start: number): void => {
    for (let k = 0; k < out.length; k++) {
      const e = start + k;
      const pos = Math.floor(e / hd);
      out[k] = fn(pos * invFreq[(e % hd) % half]);
    }
  };
  const p = '/model/rotary_emb';
  const result = { cos: '', sin: '' };
  for (const [which, fn] of [['cos', Math.cos], ['sin', Math.sin]] as const) {
    const t = g.computed(`model.rotary_emb.${which}_cached`, [o.maxPositions, hd], table(fn), { parameter: false });
    const gathered = g.op('Gather', [t, positionIds], { name: `${p}/${which}/Gather`, attrs: { axis: 0 } });
    result[which] = g.op('Unsqueeze', [gathered, g.int64([1])], { name: `${p}/${which}/Unsqueeze` });
    g.valueInfo(result[which], DataType.FLOAT, [BATCH, 1, SEQ, hd]);
  }
  return result;
}

function applyRotary(g: GraphBuilder, x: string, rotary: Rotary, hd: number, node: string): string {
  const [x1, x2] = g.node('Split', [x, g.int64([hd / 2, hd / 2])], { name: `${node}/Split`, outputs: 2, attrs: { axis: -1 } });
  const neg = g.op('Neg', [x2], { name: `${node}/Neg` });
  const rot = g.op('Concat', [neg, x1], { name: `${node}/Concat`, attrs: { axis: -1 } });
  const a = g.op('Mul', [x, rotary.cos], { name: `${node}/Mul` });
  const b = g.op('Mul', [rot, rotary.sin], { name: `${node}/Mul_1` });
  return g.op('Add', [a, b], { name: `${node}/Add` });
}

export interface AttentionSpec {
  layer: number;
  /** Node name prefix, e.g. `/model/layers.0/attn`. */
  node: string;
  /** Parameter name prefix, e.g. `model.layers.0.attn`. */
  param: string;
  /** Normalised hidden states [batch, seq, dModel]. */
  x: string;
  /** From attentionAllowed. */
  allowed: string;
  /** This layer's past key/value inputs, when the model has a KV cache. */
  past?: KvPair;
  bias: boolean;
  rotary?: Rotary;
}

/**
 * Causal multi-head (or grouped-query) attention with q/k/v/o projections. With a KV cache, the new keys
 * and values are concatenated after the past ones on axis 2 into `present.{layer}.key/value` (KV heads),
 * which are then repeated to all heads. Returns the o_proj output and the present tensors.
 */
export function attention(g: GraphBuilder, o: ResolvedOptions, s: AttentionSpec): { out: string; present?: KvPair } {
  const { node, param, x } = s;
  const hd = o.headDim;
  const kvDim = o.kvHeads * hd;
  const proj = (name: string, out: number): string =>
    linear(g, x, { node: `${node}/${name}`, param: `${param}.${name}`, inFeatures: o.dModel, outFeatures: out, bias: s.bias, std: linearStd(o, o.dModel) });
  const heads = (y: string, n: number, which: string): string => {
    const r = g.op('Reshape', [y, g.int64([0, 0, n, hd])], { name: `${node}/${which}/Reshape` });
    return g.op('Transpose', [r], { name: `${node}/${which}/Transpose`, attrs: { perm: [0, 2, 1, 3] } });
  };
  let q = heads(proj('q_proj', o.dModel), o.heads, 'q');
  let k = heads(proj('k_proj', kvDim), o.kvHeads, 'k');
  let v = heads(proj('v_proj', kvDim), o.kvHeads, 'v');
  if (s.rotary) {
    q = applyRotary(g, q, s.rotary, hd, `${node}/q_rotary`);
    k = applyRotary(g, k, s.rotary, hd, `${node}/k_rotary`);
  }
  let present: KvPair | undefined;
  if (s.past) {
    k = g.op('Concat', [s.past.key, k], { name: `${node}/k/Concat`, attrs: { axis: 2 }, output: `present.${s.layer}.key` });
    v = g.op('Concat', [s.past.value, v], { name: `${node}/v/Concat`, attrs: { axis: 2 }, output: `present.${s.layer}.value` });
    present = { key: k, value: v };
  }
  const repeat = o.heads / o.kvHeads;
  if (repeat > 1) {
    const rep = (t: string, which: string): string => {
      const u = g.op('Unsqueeze', [t, g.int64([2])], { name: `${node}/${which}/repeat_kv/Unsqueeze` });
      const e = g.op('Expand', [u, g.int64([1, 1, repeat, 1, 1])], { name: `${node}/${which}/repeat_kv/Expand` });
      return g.op('Reshape', [e, g.int64([0, o.heads, -1, hd])], { name: `${node}/${which}/repeat_kv/Reshape` });
    };
    k = rep(k, 'k');
    v = rep(v, 'v');
  }
  const kT = g.op('Transpose', [k], { name: `${node}/k/Transpose_1`, attrs: { perm: [0, 1, 3, 2] } });
  const scores = g.op('MatMul', [q, kT], { name: `${node}/scores/MatMul` });
  const scaled = g.op('Mul', [scores, g.float32(1 / Math.sqrt(hd))], { name: `${node}/scores/Mul` });
  const masked = g.op('Where', [s.allowed, scaled, g.float32(MASKED_SCORE)], { name: `${node}/scores/Where` });
  const probs = g.op('Softmax', [masked], { name: `${node}/Softmax`, attrs: { axis: -1 } });
  const ctx = g.op('MatMul', [probs, v], { name: `${node}/context/MatMul` });
  const ctxT = g.op('Transpose', [ctx], { name: `${node}/context/Transpose`, attrs: { perm: [0, 2, 1, 3] } });
  const merged = g.op('Reshape', [ctxT, g.int64([0, 0, o.dModel])], { name: `${node}/context/Reshape` });
  const out = linear(g, merged, { node: `${node}/o_proj`, param: `${param}.o_proj`, inFeatures: o.dModel, outFeatures: o.dModel, bias: s.bias, std: linearStd(o, o.dModel, true) });
  return present ? { out, present } : { out };
}

/** Records a hidden state [batch, seq, dModel] in value_info. */
export function hiddenInfo(g: GraphBuilder, o: ResolvedOptions, name: string): string {
  return g.valueInfo(name, DataType.FLOAT, [BATCH, SEQ, o.dModel]);
}
