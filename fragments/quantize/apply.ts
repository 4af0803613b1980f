/**
 * Quantization as a step of `fragmentModel`: rewrites each partitioned fragment (rewrite.ts) before it is written,
 * then, once the files exist, records the scheme, the bytes and the measured weight error per fragment and the
 * output error of the whole chain (measure.ts) in the manifest.
 */
import type { FragmentModel } from '../partition.js';
import type { Manifest } from '../manifest.js';
import { tensorBytesLength } from '../onnx/model-doc.js';
import { quantizeFragmentDoc, type FragmentQuantization } from './rewrite.js';
import type { MeasureOptions } from './measure.js';
import type { QuantScheme } from './scheme.js';
import type { InputMoment } from './gptq.js';
import type { Calibration } from './calibrate.js';

/** Measure the output error after writing (default: yes, seeded sample inputs and token sequences), or not. */
export type MeasureChoice = false | MeasureOptions;

/** The --quantize choice as fragmentModel takes it: the scheme, how to measure, and optional GPTQ calibration text. */
export type QuantizeOptions = QuantScheme & { measure?: MeasureChoice; calibration?: Calibration };

export const QUANTIZED_OPS = ['com.microsoft.MatMulNBits', 'com.microsoft.GatherBlockQuantized'];

/** Rewrites the fragments; `record` fills the manifest in after they are written (their weight errors are known then). */
export function quantizeFragments<F extends FragmentModel>(fragments: F[], scheme: QuantizeOptions, moments?: ReadonlyMap<string, InputMoment>): {
  fragments: F[];
  record: (manifest: Manifest, dir: string, modelPath: string) => Promise<void>;
} {
  const reports: FragmentQuantization[] = [];
  const sourceBytes: number[] = [];
  const rewritten = fragments.map((f) => {
    const { doc, report } = quantizeFragmentDoc(f.doc, scheme, moments);
    reports.push(report);
    sourceBytes.push(f.weightBytes);
    const ops = { ...f.ops };
    for (const n of doc.graph.node) if (!f.doc.graph.node.includes(n)) ops[n.opType ?? '?'] = (ops[n.opType ?? '?'] ?? 0) + 1;
    for (const n of f.doc.graph.node) if (!doc.graph.node.includes(n)) ops[n.opType ?? '?'] -= 1;
    for (const [op, n] of Object.entries(ops)) if (n === 0) delete ops[op];
    return { ...f, doc, ops, nodeCount: doc.graph.node.length, weightBytes: doc.graph.initializer.reduce((s, w) => s + tensorBytesLength(w.bytes), 0) };
  });
  const record = async (manifest: Manifest, dir: string, modelPath: string): Promise<void> => {
    for (const [i, entry] of manifest.fragments.entries()) {
      const r = reports[i];
      entry.quantization = {
        scheme: scheme.scheme, bits: scheme.bits, block: scheme.block, ...(scheme.asymmetric ? { asymmetric: true } : {}), ...(scheme.roles ? { roles: scheme.roles } : {}), weights: r.weights, ...(r.calibrated ? { calibrated: r.calibrated } : {}), replaced: r.replaced, kept: r.kept,
        sourceWeightBytes: sourceBytes[i],
        weightError: { maxAbs: r.error.maxAbsError, relRms: r.error.sumSquared > 0 ? Math.sqrt(r.error.sumSquaredError / r.error.sumSquared) : 0 },
      };
    }
    manifest.quantization = {
      scheme: scheme.scheme, bits: scheme.bits, block: scheme.block, ...(scheme.asymmetric ? { asymmetric: true } : {}), ...(scheme.roles ? { roles: scheme.roles } : {}), ops: QUANTIZED_OPS,
      sourceWeightBytes: sourceBytes.reduce((a, b) => a + b, 0),
      weightBytes: rewritten.reduce((s, f) => s + f.weightBytes, 0),
    };
    if (scheme.calibration && reports.some((r) => r.calibrated > 0)) {
      manifest.quantization.calibration = { method: 'gptq', source: scheme.calibration.source, positions: scheme.calibration.sequences.reduce((s, q) => s + q.length, 0) };
    }
    if (scheme.measure !== false) {
      // onnxruntime loads only when a quantized model is measured (`model inspect` imports this module too).
      const { measureQuantization } = await import('./measure.js');
      manifest.quantization.figures = await measureQuantization(manifest, dir, modelPath, scheme.measure ?? {});
    }
  };
  return { fragments: rewritten, record };
}
