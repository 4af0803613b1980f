/**
 * Synthetic model builder: seeded random-weight models of a few architectures (gpt, llama, gpt-moe, cnn)
 * as ModelDocs whose weights are generated on demand, so models of many GB can be written with
 * `writeModel` without being held in memory. These are NOT trained models.
 */
import type { ModelDoc } from '../onnx/model-doc.js';
import { buildCnn } from './cnn.js';
import { buildGpt } from './gpt.js';
import type { GraphBuilder } from './graph-builder.js';
import { makeModel } from './graph-builder.js';
import { buildLlama } from './llama.js';
import { EXPERTS_METADATA_KEY, type ExpertGroup } from './moe.js';
import { configRecord, resolveOptions, type BuildOptions, type ResolvedOptions } from './options.js';

export { ARCHS, resolveOptions, type Arch, type BuildOptions, type ResolvedOptions } from './options.js';
export { EXPERTS_METADATA_KEY, type ExpertGroup } from './moe.js';
export { GPT_EMBEDDING } from './gpt.js';
export * from './graph-builder.js';
export * from './rng.js';

function buildGraph(o: ResolvedOptions): { g: GraphBuilder; experts?: ExpertGroup[] } {
  switch (o.arch) {
    case 'gpt':
    case 'gpt-moe':
      return buildGpt(o);
    case 'llama':
      return buildLlama(o);
    case 'cnn':
      return buildCnn(o);
  }
}

/** Builds a synthetic model (weights seeded, generated lazily when written). */
export function buildModel(options: BuildOptions): ModelDoc {
  const o = resolveOptions(options);
  const { g, experts } = buildGraph(o);
  const metadata: Record<string, string> = {
    'gridpipe.arch': o.arch,
    'gridpipe.synthetic': 'true',
    'gridpipe.tokenizer': o.arch !== 'cnn' && o.vocab >= 256 ? 'byte' : 'none',
    'gridpipe.seed': String(o.seed),
    'gridpipe.parameters': String(g.parameterCount),
    'gridpipe.config': JSON.stringify(configRecord(o)),
  };
  if (experts) metadata[EXPERTS_METADATA_KEY] = JSON.stringify(experts);
  return makeModel(g.build(), {
    metadata,
    docString: `Synthetic ${o.arch} model built by gridpipe with seeded random weights (seed ${o.seed}); not a trained model.`,
  });
}

/** Learned parameters of the model these options build (excludes buffers such as rotary tables and BatchNorm statistics). */
export function parameterCount(options: BuildOptions): number {
  return buildGraph(resolveOptions(options)).g.parameterCount;
}
