/**
 * Cost estimates: floating-point operations of one node, from the inferred shapes of its tensors with
 * symbolic dimensions bound. Multiply-add counts as 2 (2·M·N·K for a matrix product); elementwise ops
 * count 1 per output element; pure data movement (Reshape, Transpose, Gather, Concat, ...) counts 0.
 * Symbols that `dims` leaves unbound count as 1. Subgraph bodies (If, Loop, Scan) are not counted.
 */
import type { AttributeProto, NodeProto } from '../../proto/onnx.js';
import { attrInt, attrInts, attrString, parseEinsum, type TensorInfo } from './rules.js';
import { evaluateDim, type Dim } from './symbolic.js';

/** Operators that only move, reshape or describe data. */
const MOVEMENT = new Set([
  'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Transpose', 'Identity', 'Shape', 'Size', 'Constant', 'ConstantOfShape',
  'Gather', 'GatherElements', 'GatherND', 'Concat', 'Split', 'Slice', 'Expand', 'Tile', 'Pad', 'DepthToSpace',
  'SpaceToDepth', 'Range', 'NonZero', 'Compress', 'OneHot', 'EyeLike', 'ScatterElements', 'ScatterND', 'Scatter',
  'Dropout', 'If', 'Loop', 'Scan', 'Optional', 'OptionalGetElement', 'OptionalHasElement', 'SequenceAt',
  'SequenceConstruct', 'SequenceEmpty', 'SequenceInsert', 'SequenceErase', 'SequenceLength', 'SplitToSequence',
  'ConcatFromSequence', 'CenterCropPad', 'ReverseSequence', 'Trilu',
]);

/** Per-element costs of ops that do a few operations per element. */
const PER_ELEMENT: Record<string, number> = {
  Softmax: 3, LogSoftmax: 3, Hardmax: 1, BatchNormalization: 2, InstanceNormalization: 5, LayerNormalization: 5,
  GroupNormalization: 5, MeanVarianceNormalization: 5, LpNormalization: 3, LRN: 5,
  SkipLayerNormalization: 6, SkipSimplifiedLayerNormalization: 4, SimplifiedLayerNormalization: 3, GroupNorm: 5,
  SkipGroupNorm: 6, BiasSoftmax: 4, BiasGelu: 2, FastGelu: 1, Gelu: 1, QuickGelu: 1, BiasAdd: 2, RotaryEmbedding: 3,
};

/** Estimated FLOPs of one node (2·M·N·K for MatMul/Gemm, Conv by kernel×output, attention parts, elementwise = elements, ...). */
export function nodeFlops(node: NodeProto, infos: Map<string, TensorInfo>, dims: Record<string, number>): number {
  try {
    const f = flopsOf(node, infos, dims);
    return Number.isFinite(f) && f > 0 ? f : 0;
  } catch {
    return 0;
  }
}

function flopsOf(node: NodeProto, infos: Map<string, TensorInfo>, dims: Record<string, number>): number {
  const lookup = (s: string): number => (Object.prototype.hasOwnProperty.call(dims, s) ? dims[s] : 1);
  const value = (d: Dim | undefined): number => (d === undefined ? 0 : Math.max(0, evaluateDim(d, lookup, dims)));
  const inputs = node.input ?? [];
  const outputs = node.output ?? [];
  const shapeOf = (name: string | undefined): number[] | undefined => {
    const s = name ? infos.get(name)?.shape : undefined;
    return s?.map((d) => value(d));
  };
  const inShape = (i: number): number[] | undefined => shapeOf(inputs[i]);
  const outShape = (i: number): number[] | undefined => shapeOf(outputs[i]);
  const count = (s: number[] | undefined): number => (s ? s.reduce((a, b) => a * b, 1) : 0);
  const last = (s: number[] | undefined, k = 1): number => (s && s.length >= k ? s[s.length - k] : 0);
  const c = { attr: (name: string) => (node.attribute ?? []).find((a) => a?.name === name) };
  const op = node.opType ?? '';
  const domain = node.domain ?? '';
  const ms = domain === 'com.microsoft';

  if (MOVEMENT.has(op) && (domain === '' || domain === 'ai.onnx' || ms)) return 0;

  switch (op) {
    case 'MatMul': case 'MatMulInteger': case 'FusedMatMul': case 'GemmFastGelu': {
      const a = inShape(0);
      const k = op === 'FusedMatMul' && attrInt(c, 'transA', 0) ? last(a, 2) : last(a);
      return 2 * count(outShape(0)) * k;
    }
    case 'QLinearMatMul': return 2 * count(outShape(0)) * last(inShape(0));
    case 'MatMulNBits': {
      const k = c.attr('K') ? attrInt(c, 'K', 0) : last(inShape(0));
      return 2 * count(outShape(0)) * k;
    }
    case 'Gemm': case 'FusedGemm': {
      const a = inShape(0);
      const o = outShape(0);
      if (!a || a.length !== 2 || !o) return 0;
      const k = attrInt(c, 'transA', 0) ? a[0] : a[1];
      return 2 * count(o) * k;
    }
    case 'Conv': case 'ConvInteger': case 'FusedConv': case 'QLinearConv': case 'NhwcConv': {
      const w = inShape(op === 'QLinearConv' ? 3 : 1);
      if (!w || w.length < 2) return 0;
      return 2 * count(outShape(0)) * w[1] * count(w.slice(2));
    }
    case 'ConvTranspose': {
      const w = inShape(1);
      if (!w || w.length < 2) return 0;
      return 2 * count(inShape(0)) * w[1] * count(w.slice(2));
    }
    case 'AveragePool': case 'MaxPool': case 'LpPool':
      return count(outShape(0)) * count(attrInts(c, 'kernel_shape') ?? []);
    case 'GlobalAveragePool': case 'GlobalMaxPool': case 'GlobalLpPool':
      return count(inShape(0));
    case 'Einsum': {
      const shapes = inputs.map((n) => (n ? infos.get(n)?.shape : undefined));
      const p = parseEinsum(attrString(c, 'equation', ''), shapes);
      if (!p) return 0;
      let total = count(p.ellipsis.map((d) => value(d)));
      for (const d of p.labels.values()) total *= value(d);
      return (inputs.length > 1 ? 2 : 1) * total;
    }
    case 'LSTM': case 'GRU': case 'RNN': {
      const x = inShape(0);
      const w = inShape(1);
      const r = inShape(2);
      if (!x || !w || !r || x.length !== 3) return 0;
      const layout = attrInt(c, 'layout', 0);
      const [seq, batch] = layout === 0 ? [x[0], x[1]] : [x[1], x[0]];
      const dirs = w[0];
      const gatesHidden = w[1];
      const input = w[2];
      const hidden = r[2];
      return dirs * seq * batch * (2 * gatesHidden * (input + hidden) + 4 * gatesHidden);
    }
    case 'TopK': case 'ArgMax': case 'ArgMin':
      return count(inShape(0));
    case 'Resize': case 'Upsample': {
      const mode = attrString(c, 'mode', 'nearest');
      return count(outShape(0)) * (mode === 'nearest' ? 1 : mode === 'cubic' ? 16 : 4);
    }
    default: break;
  }

  if (op.startsWith('Reduce')) return count(inShape(0));

  if (ms && (op === 'Attention' || op === 'MultiHeadAttention' || op === 'GroupQueryAttention' || op === 'DecoderMaskedMultiHeadAttention')) {
    return attentionFlops(op, c, inShape, outShape, count);
  }

  const per = PER_ELEMENT[op] ?? 1;
  return per * count(outShape(0));
}

function attentionFlops(
  op: string,
  c: { attr(name: string): AttributeProto | undefined },
  inShape: (i: number) => number[] | undefined,
  outShape: (i: number) => number[] | undefined,
  count: (s: number[] | undefined) => number,
): number {
  const heads = attrInt(c, 'num_heads', 1);
  const q = inShape(0);
  if (!q || q.length < 3) return 0;
  const [b, s] = q;
  let projection = 0;
  let qkHidden: number;
  let vHidden: number;
  let total: number;
  if (op === 'Attention') {
    const w = inShape(1);
    const qkv = attrInts(c, 'qkv_hidden_sizes');
    const width = w?.[1] ?? 0;
    projection = 2 * b * s * q[2] * width;
    qkHidden = qkv?.length === 3 ? qkv[0] : width / 3;
    vHidden = qkv?.length === 3 ? qkv[2] : width / 3;
    const present = outShape(1);
    const past = inShape(4);
    total = present?.length === 5 ? present[3] : s + (past?.length === 5 ? past[3] : 0);
  } else {
    const out = outShape(0);
    vHidden = out?.length === 3 ? out[2] : q[2];
    qkHidden = op === 'GroupQueryAttention' ? vHidden : (q.length === 3 ? q[2] : vHidden);
    const presentKey = outShape(1);
    const key = inShape(1);
    total = presentKey?.length === 4 ? presentKey[2] : key?.length === 3 ? key[1] : key?.length === 4 ? key[2] : s;
  }
  const scores = 2 * b * s * total * qkHidden;
  const context = 2 * b * s * total * vHidden;
  const softmax = 3 * b * heads * s * total;
  void count;
  return projection + scores + context + softmax;
}
