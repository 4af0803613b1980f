/**
 * Rewrites one fragment's graph so its large fp32 weights are stored block-quantized: MatMul (whole weight, or
 * weight behind a Transpose as PyTorch exports nn.Linear and tied LM heads) and Gemm become com.microsoft
 * MatMulNBits, Gather of an embedding table becomes com.microsoft GatherBlockQuantized; onnxruntime runs both on
 * CPU and CUDA at opset 17 without raising the model's default opset. The quantized bytes are produced only when
 * the writer streams them, one weight at a time, so quantizing never holds more than one source weight in memory.
 * Weights that are not fp32 (fp16, int8 from the exporter) and graphs already holding quantized ops stay as they are.
 */
import { AttributeType, int64ToNumber, type AttributeProto, type NodeProto, type TensorProto } from '../../proto/onnx.js';
import { DataType } from '../onnx/dtype.js';
import type { ModelDoc, Weight } from '../onnx/model-doc.js';
import { loadTensorBytes, loadTensorBytesSync } from '../onnx/tensor-bytes.js';
import { addError, blockLayout, noError, quantizeRows, transpose, zeroPointRowBytes, type QuantError, type QuantizedRows } from './blockwise.js';
import { precisionFor, type QuantScheme, type WeightPrecision, type WeightRole } from './scheme.js';
import { gptqQuantizeRows, type InputMoment } from './gptq.js';

const MS_DOMAIN = 'com.microsoft';
/** Ops that mean the exporter quantized the graph already. */
const EXPORTER_QUANTIZED_OPS = new Set(['MatMulNBits', 'GatherBlockQuantized', 'DequantizeLinear', 'QuantizeLinear', 'QLinearMatMul', 'MatMulInteger', 'DynamicQuantizeLinear', 'QGemm', 'MatMul4Bits']);

/** What one fragment's rewrite did; `error` fills in as the writer streams the quantized weights. */
export interface FragmentQuantization {
  /** Source weights quantized (a tied embedding counts once per layout). */
  weights: number;
  /** Of `weights`, how many were quantized with GPTQ (their layer input had a calibration moment). */
  calibrated: number;
  /** Nodes replaced, by op. */
  replaced: Record<string, number>;
  /** Precision kept from the exporter: quantized ops or fp16/bf16 weights found in the fragment. */
  kept: string[];
  error: QuantError;
}

/** A quantized weight in one layout: rows along the reduced axis ("rows": the source as is, "columns": its transpose). */
interface Plan {
  source: Weight; layout: 'rows' | 'columns'; rows: number; rowLength: number; key: string; scheme: WeightPrecision;
  /** The layer input's calibration moment: quantized with GPTQ when present (a separate copy from an uncalibrated use). */
  moment?: InputMoment;
}

/** Rewrites `doc` (a fragment), each weight at its role's precision (scheme.ts); the result shares untouched nodes and weights with it. */
export function quantizeFragmentDoc(doc: ModelDoc, scheme: QuantScheme, moments?: ReadonlyMap<string, InputMoment>): { doc: ModelDoc; report: FragmentQuantization } {
  const report: FragmentQuantization = { weights: 0, calibrated: 0, replaced: {}, kept: keptPrecision(doc), error: noError() };
  const weights = new Map(doc.graph.initializer.map((w) => [w.header.name ?? '', w]));
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const n of doc.graph.node) {
    for (const o of n.output ?? []) producer.set(o, n);
    for (const i of n.input ?? []) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  const graphOutputs = new Set(doc.graph.output.map((o) => o.name));
  const quantizable = (name: string | undefined): Weight | undefined => {
    const w = name === undefined ? undefined : weights.get(name);
    if (!w?.bytes || (w.header.dataType ?? 0) !== DataType.FLOAT || (w.header.dims ?? []).length !== 2) return undefined;
    return w;
  };
  const dimsOf = (w: Weight): [number, number] => [int64ToNumber(w.header.dims![0]), int64ToNumber(w.header.dims![1])];

  const plans = new Map<string, Plan>();
  const planFor = (source: Weight, layout: 'rows' | 'columns', role: WeightRole, input?: string): Plan => {
    const [a, b] = dimsOf(source);
    const precision = precisionFor(scheme, role);
    const rowLength = layout === 'rows' ? b : a;
    const moment = input === undefined ? undefined : moments?.get(input);
    const calibrated = moment?.k === rowLength ? moment : undefined;
    const key = `${source.header.name}|${layout}|${precisionSuffix(precision)}${calibrated ? `|${input}` : ''}`;
    let plan = plans.get(key);
    if (!plan) {
      plan = { source, layout, rows: layout === 'rows' ? a : b, rowLength, key, scheme: precision, ...(calibrated ? { moment: calibrated } : {}) };
      plans.set(key, plan);
    }
    return plan;
  };
  const qName = (p: Plan): string => `${p.source.header.name}${p.layout === 'columns' ? '.T' : ''}.${precisionSuffix(p.scheme)}${p.moment ? `.gptq${[...plans.values()].filter((o) => o.moment && o.source === p.source && o.layout === p.layout && precisionSuffix(o.scheme) === precisionSuffix(p.scheme)).indexOf(p) || ''}` : ''}`;
  // The LM head: a product that is the graph output `logits` (quantizeFragmentDoc's roles, scheme.ts).
  const roleOf = (output: string | undefined): WeightRole => (output === 'logits' && graphOutputs.has(output) ? 'head' : 'layer');

  const replacements = new Map<NodeProto, NodeProto[]>();
  const removedTransposes = new Set<NodeProto>();
  const count = (op: string): void => { report.replaced[op] = (report.replaced[op] ?? 0) + 1; };
  const usable = (rowLength: number): boolean => rowLength >= 16;

  for (const node of doc.graph.node) {
    const domain = node.domain ?? '';
    if (domain !== '' && domain !== 'ai.onnx') continue;
    if (node.opType === 'MatMul' && node.input?.length === 2) {
      const [x, w] = node.input;
      let plan: Plan | undefined;
      const direct = quantizable(w);
      const role = roleOf(node.output?.[0]);
      if (direct) plan = planFor(direct, 'columns', role, x); // [K, N]: rows of its transpose run along K
      else {
        const t = producer.get(w);
        const source = t && t.opType === 'Transpose' && isMatrixTranspose(t) ? quantizable(t.input?.[0]) : undefined;
        if (t && source) {
          plan = planFor(source, 'rows', role, x); // Transpose of [N, K]: the source rows already run along K
          const onlyMatMuls = (consumers.get(w) ?? []).every((c) => c.opType === 'MatMul' && c.input?.[1] === w && (c.domain ?? '') === '');
          if (onlyMatMuls && !graphOutputs.has(w)) removedTransposes.add(t);
        }
      }
      if (!plan || !usable(plan.rowLength)) continue;
      replacements.set(node, [matMulNBits(node.name ?? '', x, qName(plan), node.output![0], plan)]);
      count('MatMul');
    } else if (node.opType === 'Gemm' && (node.input?.length ?? 0) >= 2) {
      const a = attrs(node);
      if ((a.transA ?? 0) !== 0 || (a.alpha ?? 1) !== 1 || (a.beta ?? 1) !== 1) continue;
      const source = quantizable(node.input![1]);
      if (!source) continue;
      const plan = planFor(source, a.transB ? 'rows' : 'columns', roleOf(node.output?.[0]), node.input![0]);
      if (!usable(plan.rowLength)) continue;
      const bias = node.input![2];
      const out = node.output![0];
      const product = bias ? `${out}.matmul` : out;
      const nodes = [matMulNBits(node.name ?? '', node.input![0], qName(plan), product, plan)];
      if (bias) nodes.push({ name: `${node.name ?? out}/bias`, opType: 'Add', input: [product, bias], output: [out] });
      replacements.set(node, nodes);
      count('Gemm');
    } else if (node.opType === 'Gather' && node.input?.length === 2) {
      const source = quantizable(node.input[0]);
      if (!source || (attrs(node).axis ?? 0) !== 0) continue;
      const plan = planFor(source, 'rows', node.input[1] === 'input_ids' ? 'tokens' : 'positions');
      if (plan.rowLength % plan.scheme.block !== 0 || !usable(plan.rowLength)) continue;
      const data = `${qName(plan)}.rows`;
      replacements.set(node, [
        { name: `${node.name ?? data}/rows`, opType: 'Reshape', input: [qName(plan), `${qName(plan)}.rowshape`], output: [data] },
        {
          name: node.name, opType: 'GatherBlockQuantized', domain: MS_DOMAIN, input: [data, node.input[1], `${qName(plan)}.scales`, ...(plan.scheme.asymmetric ? [`${qName(plan)}.zero_points`] : [])], output: node.output,
          attribute: [intAttr('gather_axis', 0), intAttr('quantize_axis', 1), intAttr('block_size', plan.scheme.block), intAttr('bits', plan.scheme.bits)],
        },
      ]);
      count('Gather');
    }
  }
  if (replacements.size === 0) return { doc, report };

  // Which source weights something still reads in full precision after the rewrite.
  const stillRead = new Set<string>();
  for (const n of doc.graph.node) {
    if (replacements.has(n) || removedTransposes.has(n)) continue;
    for (const i of n.input ?? []) stillRead.add(i);
  }
  for (const o of doc.graph.output) stillRead.add(o.name ?? '');
  const needsRowShape = new Set([...replacements.values()].flat().filter((n) => n.opType === 'Reshape').map((n) => n.input![0]));

  const cache = new QuantizedWeightCache(report);
  const initializer: Weight[] = [];
  const planned = new Set<string>();
  for (const w of doc.graph.initializer) {
    const name = w.header.name ?? '';
    const mine = [...plans.values()].filter((p) => p.source === w);
    if (stillRead.has(name) || mine.length === 0) initializer.push(w);
    for (const p of mine) {
      if (planned.has(p.key)) continue;
      planned.add(p.key);
      report.weights++;
      if (p.moment) report.calibrated++;
      const { bits, block } = p.scheme;
      const { blocks, padded } = blockLayout(p.rowLength, block);
      const rowBytes = (padded * bits) / 8;
      initializer.push(generatedWeight({ name: qName(p), dataType: DataType.UINT8, dims: [p.rows, blocks, (block * bits) / 8] }, p.rows * rowBytes, async () => (await cache.get(p)).data));
      // The zero points (asymmetric) come before the scales: the scales are the weight's last tensor, where the cache forgets it.
      if (p.scheme.asymmetric) {
        const zeroBytes = zeroPointRowBytes(blocks, bits);
        // MatMulNBits reads them flat (N · ceil(blocks·bits/8)); GatherBlockQuantized as the scales' shape, packed along the blocks.
        const dims = needsRowShape.has(qName(p)) ? [p.rows, zeroBytes] : [p.rows * zeroBytes];
        initializer.push(generatedWeight({ name: `${qName(p)}.zero_points`, dataType: DataType.UINT8, dims }, p.rows * zeroBytes, async () => (await cache.get(p)).zeroPoints!));
      }
      initializer.push(generatedWeight({ name: `${qName(p)}.scales`, dataType: DataType.FLOAT, dims: [p.rows, blocks] }, p.rows * blocks * 4, async () => {
        const q = await cache.get(p);
        cache.done(p);
        return new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength);
      }));
      if (needsRowShape.has(qName(p))) {
        const shape = new BigInt64Array([BigInt(p.rows), BigInt(rowBytes)]);
        initializer.push({ header: { name: `${qName(p)}.rowshape`, dataType: DataType.INT64, dims: [2] }, bytes: { kind: 'inline', bytes: new Uint8Array(shape.buffer) } });
      }
    }
  }
  const nodes = doc.graph.node.flatMap((n) => (removedTransposes.has(n) ? [] : replacements.get(n) ?? [n]));
  const removedTensors = new Set([...removedTransposes].map((t) => t.output![0]));
  const opsets = doc.model.opsetImport ?? [];
  return {
    doc: {
      ...doc,
      model: { ...doc.model, opsetImport: opsets.some((o) => o.domain === MS_DOMAIN) ? opsets : [...opsets, { domain: MS_DOMAIN, version: 1 }] },
      graph: { ...doc.graph, node: nodes, initializer, valueInfo: doc.graph.valueInfo.filter((v) => !removedTensors.has(v.name ?? '')) },
    },
    report,
  };
}

/** A quantized weight's name part for its precision: q4b64, or q4b16a with zero points. */
function precisionSuffix(p: WeightPrecision): string {
  return `q${p.bits}b${p.block}${p.asymmetric ? 'a' : ''}`;
}

/** The ops or weight types in a fragment that show its exporter chose the precision already. */
function keptPrecision(doc: ModelDoc): string[] {
  const kept = new Set<string>();
  for (const n of doc.graph.node) if (EXPORTER_QUANTIZED_OPS.has(n.opType ?? '')) kept.add(n.opType!);
  for (const w of doc.graph.initializer) {
    if (w.header.dataType === DataType.FLOAT16) kept.add('fp16');
    if (w.header.dataType === DataType.BFLOAT16) kept.add('bf16');
  }
  return [...kept].sort();
}

function matMulNBits(name: string, x: string, q: string, out: string, plan: Plan): NodeProto {
  const { scheme } = plan;
  return {
    name, opType: 'MatMulNBits', domain: MS_DOMAIN, input: [x, q, `${q}.scales`, ...(scheme.asymmetric ? [`${q}.zero_points`] : [])], output: [out],
    attribute: [intAttr('K', plan.rowLength), intAttr('N', plan.rows), intAttr('bits', scheme.bits), intAttr('block_size', scheme.block)],
  };
}

function isMatrixTranspose(t: NodeProto): boolean {
  const perm = t.attribute?.find((a) => a.name === 'perm')?.ints?.map((v) => int64ToNumber(v));
  return perm === undefined || (perm.length === 2 && perm[0] === 1 && perm[1] === 0);
}

function attrs(node: NodeProto): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of node.attribute ?? []) {
    if (a.type === AttributeType.INT || (a.i !== undefined && a.i !== null && a.type !== AttributeType.FLOAT)) out[a.name ?? ''] = int64ToNumber(a.i);
    if (a.type === AttributeType.FLOAT) out[a.name ?? ''] = a.f ?? 0;
  }
  return out;
}

function intAttr(name: string, value: number): AttributeProto {
  return { name, type: AttributeType.INT, i: value };
}

function generatedWeight(header: TensorProto, length: number, make: () => Promise<Uint8Array>): Weight {
  return { header, bytes: { kind: 'generated', length, chunks: async function* () { yield await make(); } } };
}

/**
 * Quantizes each planned weight once, when the writer first asks for one of its tensors, and forgets it when the
 * writer has taken its last one (the scales follow the data in the initializer order), so one weight at a time
 * is in memory. Each weight's error goes into the fragment's report the first time it is made.
 */
class QuantizedWeightCache {
  private readonly made = new Map<string, Promise<QuantizedRows>>();
  private readonly counted = new Set<string>();

  constructor(private readonly report: FragmentQuantization) {}

  get(plan: Plan): Promise<QuantizedRows> {
    let q = this.made.get(plan.key);
    if (!q) {
      q = this.quantize(plan);
      this.made.set(plan.key, q);
    }
    return q;
  }

  done(plan: Plan): void {
    this.made.delete(plan.key);
  }

  private async quantize(plan: Plan): Promise<QuantizedRows> {
    // A positioned read of just this weight (loadTensorBytes reads a whole file when the weight starts at offset 0).
    const bytes = plan.source.bytes!;
    const raw = bytes.kind === 'generated' ? await loadTensorBytes(bytes) : loadTensorBytesSync(bytes);
    const aligned = raw.byteOffset % 4 === 0 ? raw : new Uint8Array(raw);
    let values = new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
    if (plan.layout === 'columns') values = transpose(values, plan.rowLength, plan.rows);
    const { bits, block } = plan.scheme;
    const asymmetric = plan.scheme.asymmetric === true;
    const q = plan.moment ? gptqQuantizeRows(values, plan.rows, plan.rowLength, bits, block, plan.moment, asymmetric) : quantizeRows(values, plan.rows, plan.rowLength, bits, block, asymmetric);
    if (!this.counted.has(plan.key)) {
      this.counted.add(plan.key);
      addError(this.report.error, q.error);
    }
    return q;
  }
}
