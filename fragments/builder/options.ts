/** Options of the synthetic model builder, their defaults and their checks. */
import { FragmentError } from '../onnx/errors.js';

export type Arch = 'gpt' | 'llama' | 'gpt-moe' | 'cnn';
export const ARCHS: readonly Arch[] = ['gpt', 'llama', 'gpt-moe', 'cnn'];

/** What to build. Everything but `arch` has a tiny default. */
export interface BuildOptions {
  arch: Arch;
  /** Transformer blocks (default 2), or convolution blocks for `cnn` (default 3). */
  layers?: number;
  /** Hidden size (default 64). Unused by `cnn`. */
  dModel?: number;
  /** Attention heads (default 4); dModel must be a multiple. */
  heads?: number;
  /** Key/value heads (default: heads for gpt/gpt-moe, heads/2 for llama); must divide heads. */
  kvHeads?: number;
  /** Vocabulary size (default 256: byte-level tokens). */
  vocab?: number;
  /** MLP hidden size (default 4·dModel; llama 8/3·dModel rounded up to a multiple of 64). */
  dFf?: number;
  /** Positions the position embedding / rotary tables cover (default 128). */
  maxPositions?: number;
  /** Past key/value inputs and present outputs (default true). Unused by `cnn`. */
  kvCache?: boolean;
  /** Experts per MoE block (default 4; gpt-moe only). */
  experts?: number;
  /** Experts each token is routed to (default 2; gpt-moe only). */
  topK?: number;
  /** Seed of the weights (default 0): same seed, same bytes. */
  seed?: number;
  /** Model (graph) name (default `synthetic-<arch>`). */
  name?: string;
  /** cnn: channels of the first convolution block, doubled every block (default 16). */
  channels?: number;
  /** cnn: output classes (default 10). */
  classes?: number;
  /** cnn: input image height and width (default 32). */
  imageSize?: number;
}

/** Options with every default applied. */
export interface ResolvedOptions {
  arch: Arch;
  name: string;
  seed: number;
  layers: number;
  dModel: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  dFf: number;
  maxPositions: number;
  kvCache: boolean;
  experts: number;
  topK: number;
  channels: number;
  classes: number;
  imageSize: number;
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new FragmentError('BAD_ARGUMENT', `${name} must be a positive integer, got ${value}`);
  return value;
}

/** Applies defaults and checks the options; throws FragmentError BAD_ARGUMENT on a bad combination. */
export function resolveOptions(options: BuildOptions): ResolvedOptions {
  const arch = options.arch;
  if (!ARCHS.includes(arch)) throw new FragmentError('BAD_ARGUMENT', `unknown arch "${String(arch)}" (one of ${ARCHS.join(', ')})`);
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new FragmentError('BAD_ARGUMENT', `seed must be a non-negative integer, got ${seed}`);
  const layers = positive('layers', options.layers ?? (arch === 'cnn' ? 3 : 2));
  const dModel = positive('dModel', options.dModel ?? 64);
  const heads = positive('heads', options.heads ?? 4);
  const kvHeads = positive('kvHeads', options.kvHeads ?? (arch === 'llama' && heads % 2 === 0 ? heads / 2 : heads));
  const vocab = positive('vocab', options.vocab ?? 256);
  const dFf = positive('dFf', options.dFf ?? (arch === 'llama' ? Math.ceil((8 * dModel) / 3 / 64) * 64 : 4 * dModel));
  const maxPositions = positive('maxPositions', options.maxPositions ?? 128);
  const experts = positive('experts', options.experts ?? 4);
  const topK = positive('topK', options.topK ?? Math.min(2, experts));
  const channels = positive('channels', options.channels ?? 16);
  const classes = positive('classes', options.classes ?? 10);
  const imageSize = positive('imageSize', options.imageSize ?? 32);
  if (arch !== 'cnn') {
    if (dModel % heads !== 0) throw new FragmentError('BAD_ARGUMENT', `dModel ${dModel} is not a multiple of heads ${heads}`);
    if (heads % kvHeads !== 0) throw new FragmentError('BAD_ARGUMENT', `heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
    if (arch === 'llama' && (dModel / heads) % 2 !== 0) throw new FragmentError('BAD_ARGUMENT', `llama needs an even head size for rotary embeddings, got ${dModel / heads}`);
    if (arch === 'gpt-moe' && topK > experts) throw new FragmentError('BAD_ARGUMENT', `topK ${topK} exceeds experts ${experts}`);
  }
  return {
    arch,
    name: options.name ?? `synthetic-${arch}`,
    seed,
    layers,
    dModel,
    heads,
    kvHeads,
    headDim: dModel / heads,
    vocab,
    dFf,
    maxPositions,
    kvCache: options.kvCache ?? true,
    experts,
    topK,
    channels,
    classes,
    imageSize,
  };
}

/** The options that matter to an arch, as recorded in the model's `gridpipe.config` metadata. */
export function configRecord(o: ResolvedOptions): Record<string, unknown> {
  if (o.arch === 'cnn') return { arch: o.arch, layers: o.layers, channels: o.channels, classes: o.classes, imageSize: o.imageSize, seed: o.seed };
  const base: Record<string, unknown> = {
    arch: o.arch, layers: o.layers, dModel: o.dModel, heads: o.heads, kvHeads: o.kvHeads, headDim: o.headDim,
    vocab: o.vocab, dFf: o.dFf, maxPositions: o.maxPositions, kvCache: o.kvCache, seed: o.seed,
  };
  if (o.arch === 'gpt-moe') Object.assign(base, { experts: o.experts, topK: o.topK });
  return base;
}
