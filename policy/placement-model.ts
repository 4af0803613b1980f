/**
 * What placement needs to know of a model, from its manifest: per fragment, the bytes a supplier must
 * set aside to host it (weights plus a KV-cache budget, as Petals budgets 4096 tokens per block) and
 * its compute cost (FLOPs per step, so a supplier's FLOP/s turns into steps/s per fragment).
 */
import type { Manifest, ManifestFragment } from '../fragments/manifest.js';
import { bitsPerElement, dataTypeFromName } from '../fragments/onnx/dtype.js';
import type { PlacementModel } from './placement.js';

/** KV positions budgeted per hosted fragment when no other number is given (Petals' default). */
export const DEFAULT_KV_TOKENS = 4096;

/** A model as placement sees it. */
export interface ModelPlacementInfo extends PlacementModel {
  fragmentBytes: number[];
  fragmentCost: number[];
  /** CID of each fragment (records naming another CID at an index are ignored). */
  fragmentCids: string[];
}

/**
 * KV-cache bytes one position costs in a fragment, for one sequence: the stateful inputs' fixed dims
 * multiplied out (symbolic dims, batch and sequence, count as 1) times the element size.
 */
export function kvBytesPerToken(fragment: ManifestFragment): number {
  const stateful = new Set(fragment.stateful.map((p) => p.input));
  let bytes = 0;
  for (const input of fragment.inputs) {
    if (!stateful.has(input.name)) continue;
    let elements = 1;
    for (const d of input.shape ?? []) if (typeof d === 'number' && d > 0) elements *= d;
    let bits = 32;
    try {
      bits = bitsPerElement(dataTypeFromName(input.dtype)) || 32;
    } catch { /* an unknown type name: assume 4 bytes */ }
    bytes += (elements * bits) / 8;
  }
  return Math.ceil(bytes);
}

/** Placement data of a manifest; `kvTokens` positions of KV cache are budgeted per fragment. */
export function placementModelOf(manifest: Manifest, options: { kvTokens?: number } = {}): ModelPlacementInfo {
  const kvTokens = options.kvTokens ?? DEFAULT_KV_TOKENS;
  return {
    fragmentBytes: manifest.fragments.map((f) => Math.max(1, (f.weightBytes || f.bytes + (f.data?.bytes ?? 0)) + kvBytesPerToken(f) * kvTokens)),
    // as the supplier's capacity record does (node/supplier.ts): steps/s = FLOP/s ÷ max(1, flops)
    fragmentCost: manifest.fragments.map((f) => Math.max(1, f.flops)),
    fragmentCids: manifest.fragments.map((f) => f.cid),
  };
}
