/**
 * The weight quantization schemes gridpipe writes, and the checking of a user's choice: int8 or int4, one fp32 scale
 * per block of weights along the reduced axis, optionally a zero point per block, and, for int4's default, a precision
 * per weight role (the token table, the position table and the LM head are where a language model's int4 error
 * shows; its layers' error GPTQ compensates). Kept apart so the CLI, the fragmenter and the manifest agree on one list
 * of names, block sizes and defaults.
 */
import { FragmentError } from '../onnx/errors.js';

export const QUANT_SCHEMES = ['int8', 'int4'] as const;
export type QuantSchemeName = (typeof QUANT_SCHEMES)[number];
export const QUANT_BLOCKS = [32, 64, 128] as const;

/**
 * Where a quantized weight sits: `tokens`, a table gathered by the graph input `input_ids`; `positions`, any other
 * gathered table (position embeddings); `head`, a MatMul / Gemm whose output is the graph output `logits`; `layer`,
 * every other MatMul / Gemm.
 */
export const WEIGHT_ROLES = ['layer', 'tokens', 'positions', 'head'] as const;
export type WeightRole = (typeof WEIGHT_ROLES)[number];

/** How one weight is stored: bits, weights per block, and whether each block has its own zero point. */
export interface WeightPrecision { bits: 4 | 8; block: number; asymmetric?: boolean }

/**
 * A resolved choice: which scheme, its bits and block (every weight whose role `roles` does not name), and
 * `asymmetric`: each block stores its own zero point as well as its scale (blockwise.ts), so its levels cover the
 * block's min..max; absent, the ops' default zero point.
 */
export interface QuantScheme extends WeightPrecision {
  scheme: QuantSchemeName;
  /** Per-role precision that replaces the scheme's own for the weights of that role. */
  roles?: Partial<Record<WeightRole, WeightPrecision>>;
}

/** Default block per scheme when a block is given for neither the scheme nor a role. */
export const DEFAULT_BLOCK: Record<QuantSchemeName, number> = { int8: 128, int4: 64 };

/**
 * int4 without `--block`: block 64 as before, except the LM head at block 32 with zero points and the small position
 * table in int8, the two roles where the demo model's int4 error showed most (with its layers in int8 it kept no more
 * greedy tokens). On a GPT-2-small-shaped model this costs 0.146 of the fp32 bytes (uniform block 64: 0.141); on the
 * demo model int4 GPTQ keeps 0.952 of greedy tokens instead of 0.942 (docs/quantization.md has the measurements).
 */
export const INT4_DEFAULT: QuantScheme = {
  scheme: 'int4', bits: 4, block: 64,
  roles: { head: { bits: 4, block: 32, asymmetric: true }, positions: { bits: 8, block: 128 } },
};

/**
 * Checks a scheme name and block size (either may come from a flag); throws BAD_ARGUMENT naming the valid choices. A
 * block given quantizes every weight alike at that block; int4 without one is INT4_DEFAULT.
 */
export function resolveScheme(scheme: string, block?: number): QuantScheme {
  if (!(QUANT_SCHEMES as readonly string[]).includes(scheme)) {
    throw new FragmentError('BAD_ARGUMENT', `unknown quantization scheme "${scheme}"; choose ${QUANT_SCHEMES.join(' or ')}`);
  }
  const name = scheme as QuantSchemeName;
  if (block === undefined && name === 'int4') return structuredClone(INT4_DEFAULT);
  const chosen = block ?? DEFAULT_BLOCK[name];
  if (!(QUANT_BLOCKS as readonly number[]).includes(chosen)) {
    throw new FragmentError('BAD_ARGUMENT', `block size ${block} is not supported; choose ${QUANT_BLOCKS.join(', ')}`);
  }
  return { scheme: name, bits: name === 'int8' ? 8 : 4, block: chosen };
}

/** The precision a weight of `role` gets under `scheme`. */
export function precisionFor(scheme: QuantScheme, role: WeightRole): WeightPrecision {
  const own = scheme.roles?.[role];
  if (own) return own;
  return { bits: scheme.bits, block: scheme.block, ...(scheme.asymmetric ? { asymmetric: true } : {}) };
}
