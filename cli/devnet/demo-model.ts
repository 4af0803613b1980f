/**
 * The devnet's model: a synthetic demo model built from the builder (or an ONNX file the user names),
 * cut into fragments and verified, cached under DATA_DIR so a second start reuses it.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { buildModel, type BuildOptions } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { verifyFragments } from '../../fragments/verify.js';
import { MANIFEST_FILE, type Manifest } from '../../fragments/manifest.js';
import { readManifest } from '../../fragments/manifest-file.js';
import { cidOfFile } from '../../fragments/cid.js';
import { createProgress } from '../progress.js';
import { UsageError } from '../errors.js';
import { GridpipeError } from '../../errors/base.js';

export const DEMO_MODELS: Record<string, BuildOptions> = {
  tiny: { arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: true, seed: 7, name: 'demo-tiny' },
  small: { arch: 'gpt', layers: 6, dModel: 256, heads: 8, kvCache: true, seed: 7, name: 'demo-small' },
  moe: { arch: 'gpt-moe', layers: 4, dModel: 128, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 7, name: 'demo-moe' },
};

export interface DemoModel {
  modelFile: string;
  fragmentDir: string;
  manifest: Manifest;
  manifestCid: string;
  /** Whether the fragments came from the cache. */
  cached: boolean;
}

/** `tiny`, `small`, `moe` or a path to an .onnx file; throws a UsageError for anything else. */
export function checkModelChoice(choice: string): void {
  if (DEMO_MODELS[choice]) return;
  if (choice.endsWith('.onnx')) {
    if (!existsSync(choice) || !statSync(choice).isFile()) throw new UsageError(`--model ${choice}: no such ONNX file`);
    return;
  }
  throw new UsageError(`unknown demo model "${choice}" (tiny, small, moe or a path to an .onnx file)`);
}

/** Builds (or reuses) the model and its `parts` fragments under `dir`, verified against the whole model. */
export async function prepareDemoModel(choice: string, parts: number, dir: string, say: (line: string) => void): Promise<DemoModel> {
  const spec = DEMO_MODELS[choice];
  const modelFile = spec ? path.join(dir, `${spec.name}.onnx`) : path.resolve(choice);
  const stem = spec ? spec.name : path.basename(choice, '.onnx');
  const fragmentDir = path.join(dir, 'models', `${stem}-${parts}`);
  if (spec && !existsSync(modelFile)) {
    say(`building the demo model ${spec.name} (synthetic weights, not a trained model)…`);
    await writeModel(buildModel(spec), modelFile);
  }
  const cached = existsSync(path.join(fragmentDir, MANIFEST_FILE));
  if (!cached) {
    const progress = createProgress('fragmenting');
    await fragmentModel(modelFile, fragmentDir, { parts, onProgress: (d, t) => progress.update(d, t) });
    progress.stop();
    // Verify once, when the fragments are made: a cached folder was verified when it was written.
    const report = await verifyFragments(fragmentDir, { tolerance: 1e-4 });
    if (!report.ok) throw new GridpipeError('VERIFY_FAILED', `the fragments in ${fragmentDir} do not match the whole model; delete the folder and start again`);
  }
  const { manifest } = await readManifest(fragmentDir);
  const manifestCid = await cidOfFile(path.join(fragmentDir, MANIFEST_FILE));
  return { modelFile, fragmentDir, manifest, manifestCid, cached };
}
