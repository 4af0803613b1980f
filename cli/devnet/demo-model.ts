/**
 * The devnet's model: the small decoder trained on the King James Bible that ships in models/demo/target
 * (the default), a synthetic demo model built from the builder, or an ONNX file or export folder the user
 * names; cut into fragments and verified, cached under DATA_DIR so a second start reuses it.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModel, type BuildOptions } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { verifyFragments } from '../../fragments/verify.js';
import { MANIFEST_FILE, type Manifest } from '../../fragments/manifest.js';
import { readManifest } from '../../fragments/manifest-file.js';
import { cidOfFile } from '../../fragments/cid.js';
import { modelFileOf } from '../../fragments/model-folder.js';
import { checkTokenizerFiles } from '../../gateway/tokenizers/check.js';
import { createProgress } from '../progress.js';
import { UsageError } from '../errors.js';
import { GridpipeError } from '../../errors/base.js';

export const DEMO_MODELS: Record<string, BuildOptions> = {
  tiny: { arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: true, seed: 7, name: 'demo-tiny' },
  small: { arch: 'gpt', layers: 6, dModel: 256, heads: 8, kvCache: true, seed: 7, name: 'demo-small' },
  moe: { arch: 'gpt-moe', layers: 4, dModel: 128, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 7, name: 'demo-moe' },
};

/** The default: trained here (models/demo/README.md), committed with its tokenizer. */
export const TRAINED_DEMO_MODEL = 'kjv';
/** What the trained model is, for people reading the devnet's output. */
export const TRAINED_DEMO_LABEL = 'a 4.3M-parameter model trained on the King James Bible: it writes scripture-like text, it is no assistant';

/** models/demo/target of this checkout or package (from cli/devnet or dist/cli/devnet). */
export function trainedModelDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'models', 'demo', 'target');
    if (existsSync(path.join(candidate, 'model.onnx'))) return candidate;
  }
  throw new GridpipeError('DEMO_MODEL_MISSING', 'models/demo/target/model.onnx is not in this checkout or package; use --model tiny|small|moe');
}

export interface DemoModel {
  modelFile: string;
  fragmentDir: string;
  manifest: Manifest;
  manifestCid: string;
  /** Whether the fragments came from the cache. */
  cached: boolean;
  /** What the model is, in words (trained, synthetic, or the user's). */
  label: string;
}

/** `kjv`, `tiny`, `small`, `moe`, a path to an .onnx file or to an export folder; throws a UsageError for anything else. */
export function checkModelChoice(choice: string): void {
  if (DEMO_MODELS[choice] || choice === TRAINED_DEMO_MODEL) return;
  if (choice.endsWith('.onnx')) {
    if (!existsSync(choice) || !statSync(choice).isFile()) throw new UsageError(`--model ${choice}: no such ONNX file`);
    return;
  }
  if (existsSync(choice) && statSync(choice).isDirectory()) return;
  throw new UsageError(`unknown demo model "${choice}" (kjv, tiny, small, moe, a path to an .onnx file or an export folder)`);
}

/** Builds (or reuses) the model and its `parts` fragments under `dir`, verified against the whole model. */
export async function prepareDemoModel(choice: string, parts: number, dir: string, say: (line: string) => void): Promise<DemoModel> {
  const spec = DEMO_MODELS[choice];
  const trained = choice === TRAINED_DEMO_MODEL;
  const modelFile = spec ? path.join(dir, `${spec.name}.onnx`) : path.resolve(modelFileOf(trained ? trainedModelDir() : choice));
  // The trained model's cache is keyed by its weights too: a retrained checkout does not reuse old fragments.
  const stem = spec ? spec.name : trained ? `kjv-demo-${(await cidOfFile(modelFile)).slice(-10)}` : path.basename(modelFile, '.onnx');
  const fragmentDir = path.join(dir, 'models', `${stem}-${parts}`);
  const label = spec ? 'synthetic weights: the text is noise, the grid is real' : trained ? TRAINED_DEMO_LABEL : `your model, ${modelFile}`;
  if (spec && !existsSync(modelFile)) {
    say(`building the demo model ${spec.name} (synthetic weights, not a trained model)…`);
    await writeModel(buildModel(spec), modelFile);
  }
  const cached = existsSync(path.join(fragmentDir, MANIFEST_FILE));
  if (!cached) {
    const progress = createProgress('fragmenting');
    await fragmentModel(modelFile, fragmentDir, { parts, checkTokenizer: checkTokenizerFiles, onProgress: (d, t) => progress.update(d, t) });
    progress.stop();
    // Verify once, when the fragments are made: a cached folder was verified when it was written.
    const report = await verifyFragments(fragmentDir, { tolerance: 1e-4 });
    if (!report.ok) throw new GridpipeError('VERIFY_FAILED', `the fragments in ${fragmentDir} do not match the whole model; delete the folder and start again`);
  }
  const { manifest } = await readManifest(fragmentDir);
  const manifestCid = await cidOfFile(path.join(fragmentDir, MANIFEST_FILE));
  return { modelFile, fragmentDir, manifest, manifestCid, cached, label };
}
