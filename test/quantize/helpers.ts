/** Shared by the quantization tests: reading a written quantized weight back and the demo model's prompt set. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { int64ToNumber } from '../../proto/onnx.js';
import { readModel } from '../../fragments/onnx/read.js';
import { loadTensorBytes } from '../../fragments/onnx/tensor-bytes.js';
import { dequantizeRows, transpose } from '../../fragments/quantize/blockwise.js';
import { promptWindows } from '../../fragments/quantize/prompts.js';
import { hfTextTokenizer } from '../../gateway/tokenizers/index.js';
import { REPO_ROOT } from '../helpers/cli.js';

export const DEMO_TARGET = path.join(REPO_ROOT, 'models', 'demo', 'target');

async function floats(file: string, name: string): Promise<{ values: Float32Array; dims: number[] }> {
  const w = readModel(file).graph.initializer.find((x) => x.header.name === name);
  if (!w?.bytes) throw new Error(`${file} has no initializer ${name}`);
  const raw = new Uint8Array(await loadTensorBytes(w.bytes));
  return { values: new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), dims: (w.header.dims ?? []).map((d) => int64ToNumber(d)) };
}

/**
 * Every quantized weight of a written fragment, dequantized, next to its source weight in the same layout; `worst`
 * is the largest error over the largest magnitude of its block, over all blocks. Each weight's bits, block and zero
 * points come from its name (`.q4b16a`: 4 bits, blocks of 16, zero points) and its `.zero_points` tensor.
 */
export async function quantizedWeightErrors(fragmentFile: string, sourceFile: string): Promise<{ name: string; bits: number; worst: number; relRms: number }[]> {
  const doc = readModel(fragmentFile);
  const out: { name: string; bits: number; worst: number; relRms: number }[] = [];
  for (const w of doc.graph.initializer) {
    const match = /^(.*?)(\.T)?\.q(\d)b(\d+)(a?)$/.exec(w.header.name ?? '');
    if (!match) continue;
    const [, source, transposed, bitsText, blockText, asymmetric] = match;
    const bits = Number(bitsText) as 4 | 8;
    const block = Number(blockText);
    const dims = (w.header.dims ?? []).map((d) => int64ToNumber(d));
    const data = new Uint8Array(await loadTensorBytes(w.bytes!));
    const scales = await floats(fragmentFile, `${w.header.name}.scales`);
    const zeroPointWeight = doc.graph.initializer.find((x) => x.header.name === `${w.header.name}.zero_points`);
    if (Boolean(asymmetric) !== Boolean(zeroPointWeight)) throw new Error(`${w.header.name}: zero points ${zeroPointWeight ? 'present' : 'missing'}`);
    const zeroPoints = zeroPointWeight ? new Uint8Array(await loadTensorBytes(zeroPointWeight.bytes!)) : undefined;
    const original = await floats(sourceFile, source);
    const [a, b] = original.dims;
    const rows = dims[0];
    const rowLength = transposed ? a : b;
    const reference = transposed ? transpose(original.values, a, b) : original.values;
    const back = dequantizeRows({ data, scales: scales.values, blocks: dims[1], ...(zeroPoints ? { zeroPoints } : {}) }, rows, rowLength, bits, block);
    let worst = 0;
    let se = 0;
    let ss = 0;
    for (let r = 0; r < rows; r++) {
      for (let s = 0; s < rowLength; s += block) {
        let amax = 0;
        let err = 0;
        for (let i = s; i < Math.min(rowLength, s + block); i++) {
          const v = reference[r * rowLength + i];
          const e = Math.abs(back[r * rowLength + i] - v);
          amax = Math.max(amax, Math.abs(v));
          err = Math.max(err, e);
          se += e * e;
          ss += v * v;
        }
        if (amax > 0) worst = Math.max(worst, err / amax);
      }
    }
    out.push({ name: w.header.name!, bits, worst, relRms: Math.sqrt(se / ss) });
  }
  return out;
}

/** The seeded prompt set from the demo model's held-out text, tokenized by its tokenizer. */
export function demoPrompts(seed: number, count?: number, length?: number): number[][] {
  return demoWindows('heldout.txt', seed, count, length);
}

/** GPTQ's calibration windows: from models/demo/calibration.txt (training chapters, none of them held out). */
export function demoCalibration(count = 32): { sequences: number[][]; source: string } {
  return { sequences: demoWindows('calibration.txt', 5, count), source: `demo calibration.txt (seed 5, ${count}×64)` };
}

function demoWindows(file: string, seed: number, count?: number, length?: number): number[][] {
  const tokenizer = hfTextTokenizer(JSON.parse(readFileSync(path.join(DEMO_TARGET, 'tokenizer.json'), 'utf8')) as object);
  const ids = tokenizer.encode(readFileSync(path.join(REPO_ROOT, 'models', 'demo', file), 'utf8'));
  return promptWindows(ids, { seed, count, length });
}
