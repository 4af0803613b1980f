/**
 * Sequential GPTQ calibration (fragments/quantize/sequential.ts) on a small builder decoder in onnxruntime: every
 * MatMul input gets a moment with its cross term against the full-precision model, the layers past the first stage
 * see the earlier layers' quantization (their moments differ from the full-precision ones), and with int8's tiny
 * error they stay close to them.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { readModel } from '../../fragments/onnx/read.js';
import { calibrationMoments } from '../../fragments/quantize/calibrate.js';
import { seededRandom } from '../../fragments/seeded-random.js';

let dir = '';
let file = '';
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-sequential-'));
  file = path.join(dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 64, heads: 4, vocab: 128, kvCache: true, seed: 3 }), file);
});
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

/** Largest |a − b| over the largest |b|. */
function relativeDifference(a: Float64Array, b: Float64Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

describe('sequential calibration', () => {
  it.each([[4, 32, 0.5], [8, 32, 0.05]] as const)('int%i block %i: moments on the partly quantized model, with cross terms', async (bits, block, bound) => {
    const random = seededRandom(8);
    const sequences = Array.from({ length: 4 }, () => Array.from({ length: 16 }, () => Math.floor(random() * 128)));
    const fragments = [{ doc: readModel(file) }];
    const plain = await calibrationMoments(file, fragments, { sequences, source: 'random ids' });
    const staged = await calibrationMoments(file, fragments, { sequences, source: 'random ids', sequential: true }, { bits, block });
    expect([...staged.keys()].sort()).toEqual([...plain.keys()].sort());
    expect(staged.size).toBeGreaterThanOrEqual(8); // 2 layers × (qkv, attention out, MLP in, MLP out) at least
    for (const [name, m] of staged) {
      const reference = plain.get(name)!;
      expect(m.k, name).toBe(reference.k);
      expect(m.positions, name).toBe(4 * 16);
      expect(m.cross, name).toBeDefined();
      // The embedding table is quantized from the first stage on, so every layer input moves, and not by much.
      const moved = relativeDifference(m.sum, reference.sum);
      expect(moved, name).toBeGreaterThan(0);
      expect(moved, name).toBeLessThan(bound);
    }
  });
});
