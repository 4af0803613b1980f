/** Stateful pairs: KV-cache inputs and the outputs that carry their next value, in the Hugging Face Optimum naming. */

export interface StatefulPair { input: string; output: string }

/**
 * Pairs `past_key_values.<rest>` with `present.<rest>` (also `past.<rest>`/`past_<rest>` with
 * `present.<rest>`/`present_<rest>`, as older exports name them), keeping only pairs where both exist.
 */
export function statefulPairs(inputs: string[], outputs: string[]): StatefulPair[] {
  const outs = new Set(outputs);
  const pairs: StatefulPair[] = [];
  for (const input of inputs) {
    const m = /^past_key_values([._])(.+)$/.exec(input) ?? /^past([._])(.+)$/.exec(input);
    if (!m) continue;
    const candidates = [`present${m[1]}${m[2]}`, `present.${m[2]}`, `present_${m[2]}`];
    const output = candidates.find((c) => outs.has(c));
    if (output) pairs.push({ input, output });
  }
  return pairs;
}
