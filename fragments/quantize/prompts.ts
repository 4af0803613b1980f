/** The seeded prompt set of the language-model figures: windows of a token stream at seeded offsets. */
import { seededRandom } from '../seeded-random.js';
import { FragmentError } from '../onnx/errors.js';

export const PROMPT_COUNT = 16;
export const PROMPT_LENGTH = 64;

/** `count` windows of `length` tokens from `ids`, at offsets drawn from `seed` (the same seed, the same windows). */
export function promptWindows(ids: readonly number[], options: { count?: number; length?: number; seed: number }): number[][] {
  const count = options.count ?? PROMPT_COUNT;
  const length = options.length ?? PROMPT_LENGTH;
  if (ids.length < length) throw new FragmentError('BAD_ARGUMENT', `the text gives ${ids.length} tokens; the prompt set needs at least ${length}`);
  const random = seededRandom(options.seed);
  return Array.from({ length: count }, () => {
    const start = Math.floor(random() * (ids.length - length + 1));
    return ids.slice(start, start + length);
  });
}
