/**
 * The weight quantization schemes gridpipe writes, and the checking of a user's choice: int8 or int4, symmetric,
 * one fp32 scale per block of weights along the reduced axis. Kept apart so the CLI, the fragmenter and the manifest
 * agree on one list of names, block sizes and defaults.
 */
import { FragmentError } from '../onnx/errors.js';

export const QUANT_SCHEMES = ['int8', 'int4'] as const;
export type QuantSchemeName = (typeof QUANT_SCHEMES)[number];
export const QUANT_BLOCKS = [32, 64, 128] as const;

/** A resolved choice: which scheme, its bits, and the block size. */
export interface QuantScheme { scheme: QuantSchemeName; bits: 4 | 8; block: number }

/** Default block per scheme: the largest error-for-bytes trade that keeps a GPT-2-shaped model under the byte goals. */
export const DEFAULT_BLOCK: Record<QuantSchemeName, number> = { int8: 128, int4: 64 };

/** Checks a scheme name and block size (either may come from a flag); throws BAD_ARGUMENT naming the valid choices. */
export function resolveScheme(scheme: string, block?: number): QuantScheme {
  if (!(QUANT_SCHEMES as readonly string[]).includes(scheme)) {
    throw new FragmentError('BAD_ARGUMENT', `unknown quantization scheme "${scheme}"; choose ${QUANT_SCHEMES.join(' or ')}`);
  }
  const name = scheme as QuantSchemeName;
  const chosen = block ?? DEFAULT_BLOCK[name];
  if (!(QUANT_BLOCKS as readonly number[]).includes(chosen)) {
    throw new FragmentError('BAD_ARGUMENT', `block size ${block} is not supported; choose ${QUANT_BLOCKS.join(', ')}`);
  }
  return { scheme: name, bits: name === 'int8' ? 8 : 4, block: chosen };
}
