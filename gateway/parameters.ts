/**
 * Which OpenAI request parameters the text endpoints implement, in one place: the routes refuse every other
 * parameter with a 400 naming it (never silently ignored), and GET /v1/models lists these for text models.
 * Parameters that change results and are not implemented are accepted only at their neutral value.
 */
import { badRequest } from './errors.js';
import type { Body } from './validate.js';

export type TextEndpoint = 'completions' | 'chat';

/** Implemented by both endpoints. */
const COMMON = ['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'n', 'user', 'strict_experts', 'exact'];

/** The parameters each endpoint implements (`n` only as 1). */
export const SUPPORTED_PARAMETERS: Record<TextEndpoint, readonly string[]> = {
  completions: ['prompt', ...COMMON],
  chat: ['messages', 'max_completion_tokens', ...COMMON],
};

const isZero = (v: unknown): boolean => v === 0;
const isFalse = (v: unknown): boolean => v === false;
const isOne = (v: unknown): boolean => v === 1;
const isEmptyObject = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
const isEmptyList = (v: unknown): boolean => Array.isArray(v) && v.length === 0;

/** Not implemented, but accepted at the value that means "off" (clients often send these defaults). */
const NEUTRAL: Record<TextEndpoint, Record<string, (v: unknown) => boolean>> = {
  completions: {
    presence_penalty: isZero, frequency_penalty: isZero, logit_bias: isEmptyObject, logprobs: () => false,
    echo: isFalse, best_of: isOne, suffix: (v) => v === '',
  },
  chat: {
    presence_penalty: isZero, frequency_penalty: isZero, logit_bias: isEmptyObject, logprobs: isFalse, top_logprobs: isZero,
    tools: isEmptyList, functions: isEmptyList, tool_choice: (v) => v === 'none', function_call: (v) => v === 'none',
    parallel_tool_calls: isFalse, response_format: (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
  },
};

/**
 * Refuses, with a 400 naming it, the first parameter of the body that this endpoint does not implement (or
 * that is set to anything but its neutral value).
 */
export function refuseUnimplemented(endpoint: TextEndpoint, b: Body): void {
  const supported = SUPPORTED_PARAMETERS[endpoint];
  for (const [name, value] of Object.entries(b)) {
    if (value === undefined || value === null || supported.includes(name)) continue;
    const hasNeutral = Object.hasOwn(NEUTRAL[endpoint], name);
    if (hasNeutral && NEUTRAL[endpoint][name](value)) continue;
    throw badRequest(
      `"${name}" is not supported by this gateway${hasNeutral ? ` (got ${JSON.stringify(value).slice(0, 80)})` : ''}: it implements ${supported.join(', ')} (GET /v1/models lists them)`,
      name, 'unsupported_parameter',
    );
  }
}
