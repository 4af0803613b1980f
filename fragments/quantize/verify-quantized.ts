/**
 * `model verify` for quantized fragments: measures the quantized chain against the full-precision model again
 * (measure.ts), checks that the figures equal the ones the manifest recorded when the fragments were written, and
 * that every output stays within the scheme's stated bound. Fragment files are checked against their CIDs first.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { readManifest } from '../manifest-file.js';
import { checkFragmentFiles } from '../verify.js';
import { FragmentError } from '../onnx/errors.js';
import { measureQuantization, type QuantizationFigures } from './measure.js';
import type { QuantSchemeName } from './scheme.js';

/**
 * The stated bound per scheme: the largest relative error (max |Δ| over the largest |value|) any output may show on
 * the sample inputs. Measured on the builder's synthetic models (whose random weights are the worst case: int8 up to 0.02,
 * int4 up to 0.5) and the trained demo model (int8 ≈ 0.008, int4 ≈ 0.12).
 */
export const OUTPUT_BOUND: Record<QuantSchemeName, number> = { int8: 0.05, int4: 0.75 };
/** Two measurements of the same figure agree when within this relative difference (onnxruntime's CPU kernels are deterministic; this leaves room for another machine's SIMD). */
export const FIGURE_MATCH = 1e-3;

export interface QuantizedVerifyOptions {
  seed?: number;
  dims?: Record<string, number>;
  shapes?: Record<string, number[]>;
  /** The prompt set of the language-model figures, and what it is (compared with what the manifest recorded). */
  sequences?: { ids: number[][]; source: string };
  modelPath?: string;
  onProgress?: (step: string) => void;
}

export interface QuantizedVerifyReport {
  ok: boolean;
  scheme: QuantSchemeName;
  bound: number;
  recorded?: QuantizationFigures;
  measured: QuantizationFigures;
  /** Figures that differ from the recorded ones (empty when they match or nothing comparable was recorded). */
  mismatches: string[];
  /** Outputs beyond the scheme's bound. */
  outOfBound: string[];
  /** Whether the measurement ran on the recorded inputs, so matching was checked. */
  compared: boolean;
}

/** Verifies a quantized fragment folder (see module doc). */
export async function verifyQuantized(dir: string, options: QuantizedVerifyOptions = {}): Promise<QuantizedVerifyReport> {
  const { manifest, dir: base } = await readManifest(dir);
  const q = manifest.quantization;
  if (!q) throw new FragmentError('BAD_ARGUMENT', `${dir}: the fragments are not quantized`);
  options.onProgress?.('checking fragment CIDs');
  await checkFragmentFiles(manifest, base);
  const modelPath = options.modelPath ?? path.resolve(base, manifest.source.file);
  if (!existsSync(modelPath)) throw new FragmentError('BAD_ARGUMENT', `the whole model ${modelPath} is missing; pass --model FILE`);
  const recorded = q.figures;
  const seed = options.seed ?? recorded?.seed;
  const dims = options.dims && Object.keys(options.dims).length ? options.dims : recorded?.dims;
  options.onProgress?.('running the whole model and the quantized fragments');
  const measured = await measureQuantization(manifest, base, modelPath, {
    seed, dims, shapes: options.shapes, ...(options.sequences ? { sequences: options.sequences.ids, sequenceSource: options.sequences.source } : {}),
  });
  const compared = recorded !== undefined && measured.seed === recorded.seed && JSON.stringify(measured.dims) === JSON.stringify(recorded.dims) && !options.shapes;
  const mismatches: string[] = [];
  if (compared && recorded) {
    for (const r of recorded.outputs) {
      const m = measured.outputs.find((o) => o.name === r.name);
      for (const key of ['maxAbs', 'meanAbs', 'maxRel'] as const) {
        if (!m || !same(r[key], m[key])) mismatches.push(`${r.name}.${key}: recorded ${r[key]}, measured ${m?.[key]}`);
      }
    }
    const rl = recorded.languageModel;
    const ml = measured.languageModel;
    if (rl && ml && rl.source === ml.source) {
      for (const key of ['tokenAgreement', 'perplexity', 'quantizedPerplexity'] as const) {
        if (!same(rl[key], ml[key])) mismatches.push(`languageModel.${key}: recorded ${rl[key]}, measured ${ml[key]}`);
      }
    }
  }
  const bound = OUTPUT_BOUND[q.scheme];
  const outOfBound = measured.outputs.filter((o) => !(o.maxRel <= bound)).map((o) => `${o.name}: relative error ${o.maxRel} > ${bound}`);
  return { ok: mismatches.length === 0 && outOfBound.length === 0, scheme: q.scheme, bound, ...(recorded ? { recorded } : {}), measured, mismatches, outOfBound, compared };
}

function same(a: number, b: number): boolean {
  return a === b || Math.abs(a - b) <= FIGURE_MATCH * Math.max(Math.abs(a), Math.abs(b)) + 1e-9;
}
