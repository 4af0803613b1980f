/**
 * The encoding a pipeline session asks a server for (net/exec/wire-compression.ts), when it opens the session on a
 * span of fragments: a fixed one, or "auto": policy/wire-encoding.ts's choice from the client's measured link to that
 * server and the span's float bytes and FLOPs per step. Kept apart from session.ts so the decision and its inputs
 * (which boundary tensors are floats, how many bytes a step moves) are one small module.
 */
import type { Manifest } from '../fragments/manifest.js';
import { positionsAtCostDims } from '../fragments/manifest.js';
import type { PeerEstimate } from '../policy/estimates.js';
import { chooseWireEncoding, type WireEncodingName } from '../policy/wire-encoding.js';
import { WireEncoding, type WireEncodingCode } from '../net/exec/wire-compression.js';

/** What a session asks for: a fixed encoding, or auto (compress when the measured link makes transfer dominate). */
export type WireEncodingPreference = 'auto' | WireEncodingName;

export const WIRE_ENCODING_CODES: Record<WireEncodingName, WireEncodingCode> = { exact: WireEncoding.EXACT, fp16: WireEncoding.FP16, int8: WireEncoding.INT8_BLOCKS };

/** The encoding name of a code a server accepted. */
export function wireEncodingName(code: number): WireEncodingName {
  return code === WireEncoding.FP16 ? 'fp16' : code === WireEncoding.INT8_BLOCKS ? 'int8' : 'exact';
}

/** Which encodings a supplier says it runs (capacity record `schemes`); undefined (all) for records without them. */
export function offeredEncodings(schemes: readonly string[] | undefined): WireEncodingName[] | undefined {
  if (!schemes) return undefined;
  return ['exact', ...(schemes.includes('wire-fp16') ? ['fp16' as const] : []), ...(schemes.includes('wire-int8') ? ['int8' as const] : [])];
}

/**
 * Bytes one step of `tokens` tokens moves across the span [start, end): the float32 tensors that enter it from
 * earlier fragments or leave it for later ones (what compression shrinks; the KV cache stays on the server) and
 * the rest. A symbolic dim counts as the step's tokens when it is a sequence axis (not the first), else 1.
 */
export function spanStepBytes(manifest: Manifest, start: number, end: number, tokens: number): { floatBytes: number; otherBytes: number } {
  let floatBytes = 0;
  let otherBytes = 0;
  const add = (t: { dtype: string; shape?: (number | string | null)[] }): void => {
    const elements = (t.shape ?? []).reduce<number>((n, d, i) => n * (typeof d === 'number' ? d : i === 0 ? 1 : tokens), 1);
    if (t.dtype === 'float') floatBytes += elements * 4;
    else otherBytes += elements * 8;
  };
  const stateful = new Set(manifest.fragments.slice(start, end).flatMap((f) => f.stateful.flatMap((p) => [p.input, p.output])));
  for (const f of manifest.fragments.slice(start, end)) {
    for (const input of f.inputs) if (typeof input.from === 'number' && input.from < start && !stateful.has(input.name)) add(input);
    for (const output of f.outputs) if (output.to.some((t) => t >= end) && !stateful.has(output.name)) add(output);
  }
  return { floatBytes, otherBytes };
}

/** The encoding to ask the server of a span for, and why. */
export function sessionWireEncoding(input: {
  preference: WireEncodingPreference; exact: boolean; manifest: Manifest; start: number; end: number; tokens: number;
  estimate: PeerEstimate; schemes?: readonly string[];
}): { encoding: WireEncodingName; reason: string } {
  if (input.exact) return { encoding: 'exact', reason: 'the request asks for exact outputs' };
  if (input.preference !== 'auto') return { encoding: input.preference, reason: 'asked for' };
  const { floatBytes, otherBytes } = spanStepBytes(input.manifest, input.start, input.end, input.tokens);
  const flopsPerPosition = input.manifest.fragments.slice(input.start, input.end).reduce((s, f) => s + f.flops, 0) / positionsAtCostDims(input.manifest);
  const offered = offeredEncodings(input.schemes);
  const choice = chooseWireEncoding({ exact: false, floatBytes, otherBytes, flops: flopsPerPosition * input.tokens, estimate: input.estimate, ...(offered ? { offered } : {}) });
  return { encoding: choice.encoding, reason: choice.reason };
}
