/**
 * Which encoding a session's activations travel in: exact (the model's dtype) unless the measured link makes
 * moving them dominate the step's time, then fp16, or int8 blocks when even fp16 still dominates. Never compressed
 * when the request asks for exact outputs, nor before the link's bandwidth has been measured, nor in an encoding the
 * server does not run. A pure decision over the client's estimates (estimates.ts), so the simulator can use it too.
 */
import type { PeerEstimate } from './estimates.js';

export type WireEncodingName = 'exact' | 'fp16' | 'int8';

/** Bytes per float32 byte in each encoding (net/exec/wire-compression.ts: fp16; int8 blocks of 64 with fp16 scales). */
export const WIRE_BYTES_RATIO: Record<WireEncodingName, number> = { exact: 1, fp16: 0.5, int8: 66 / 256 };
/** Transfer "dominates" when it is more than this share of round trip + compute. */
export const TRANSFER_DOMINATES = 0.5;

export interface WireChoiceInput {
  /** The request asked for exact outputs. */
  exact: boolean;
  /** float32 bytes a step moves to and from the server (what compression shrinks). */
  floatBytes: number;
  /** Other bytes a step moves (token ids, masks): they travel exact. */
  otherBytes?: number;
  flops: number;
  estimate: Pick<PeerEstimate, 'rttMs' | 'secondsPerByte' | 'secondsPerFlop' | 'bandwidthSamples'>;
  /** Encodings the server runs (default: all). */
  offered?: readonly WireEncodingName[];
}

export interface WireChoice { encoding: WireEncodingName; reason: string; transferMs: Record<WireEncodingName, number>; otherMs: number }

/** Picks the encoding (see module doc). */
export function chooseWireEncoding(input: WireChoiceInput): WireChoice {
  const e = input.estimate;
  const transferMs = Object.fromEntries((Object.keys(WIRE_BYTES_RATIO) as WireEncodingName[]).map((k) => [
    k, (input.floatBytes * WIRE_BYTES_RATIO[k] + (input.otherBytes ?? 0)) * e.secondsPerByte * 1000,
  ])) as Record<WireEncodingName, number>;
  const otherMs = e.rttMs + input.flops * e.secondsPerFlop * 1000;
  const choice = (encoding: WireEncodingName, reason: string): WireChoice => ({ encoding, reason, transferMs, otherMs });
  if (input.exact) return choice('exact', 'the request asks for exact outputs');
  if (e.bandwidthSamples === 0) return choice('exact', 'the link\'s bandwidth is not measured yet');
  const dominates = (k: WireEncodingName): boolean => transferMs[k] > TRANSFER_DOMINATES * otherMs;
  if (!dominates('exact')) return choice('exact', 'transfer does not dominate');
  const offered = new Set(input.offered ?? (['exact', 'fp16', 'int8'] as const));
  if (offered.has('fp16') && (!dominates('fp16') || !offered.has('int8'))) return choice('fp16', 'transfer dominates; fp16 brings it under');
  if (offered.has('int8')) return choice('int8', 'transfer dominates even in fp16');
  return choice('exact', 'the server runs no compressed encoding');
}
