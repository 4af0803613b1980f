/**
 * The small MoE model the placement tests share (placement, repair): a 2-layer GPT-MoE with 4 experts, top-2, cut
 * with one expert per fragment (13 fragments), a seed host that serves the fragments over the blob protocol and
 * answers the DHT, and the monolithic model's greedy tokens for the tests' prompt.
 */
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { FragmentStore } from '../../net/store/fragment-store.js';
import { handleBlobProtocol } from '../../net/store/blob-protocol.js';
import { type GenerateOptions } from '../../scheduler/generate.js';
import { testLogger } from '../helpers/swarm.js';
import { localTokens } from '../helpers/local-run.js';

export const MOE_PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
export const MOE_MAX_TOKENS = 6;

export interface MoeSeed {
  modelPath: string;
  fragDir: string;
  manifest: Manifest;
  manifestCid: string;
  seed: GridHost;
  /** The monolithic model's greedy tokens for MOE_PROMPT. */
  expected: number[];
}

/** The greedy generation the tests compare. */
export function moeGenerateOptions(manifest: Manifest): GenerateOptions {
  return { promptIds: MOE_PROMPT, maxTokens: MOE_MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

/** Builds and cuts the model under `dir`, starts the seed host with its fragments, and runs the monolithic reference. */
export async function openMoeSeed(dir: string): Promise<MoeSeed> {
  const modelPath = path.join(dir, 'moe.onnx');
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 64, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 16 }), modelPath);
  const fragDir = path.join(dir, 'frags');
  const { manifest } = await fragmentModel(modelPath, fragDir, { parts: 3, expertsPerFragment: 1 });
  const seed = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger: testLogger() });
  const store = await FragmentStore.open({ dataDir: path.join(dir, 'seed'), logger: testLogger() });
  const { manifestCid } = await store.importManifestDir(fragDir);
  await handleBlobProtocol(seed.node, store);
  const expected = await localTokens(modelPath, manifest.statefulPairs, moeGenerateOptions(manifest));
  return { modelPath, fragDir, manifest, manifestCid, seed, expected };
}
