/**
 * The reference every grid test compares with: a model's tokens from one local onnxruntime session
 * (scheduler/local-runner.ts), opened and closed around the generation.
 */
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import type { Manifest } from '../../fragments/manifest.js';

/** The token ids `options` generates from the whole model at `modelPath` run locally. */
export async function localTokens(modelPath: string, statefulPairs: Manifest['statefulPairs'], options: GenerateOptions): Promise<number[]> {
  const runner = await LocalModelRunner.open(modelPath, statefulPairs);
  const ids: number[] = [];
  try {
    for await (const t of generate(runner, options)) ids.push(t.id);
  } finally {
    await runner.close();
  }
  return ids;
}
