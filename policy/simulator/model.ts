/**
 * The model a simulated swarm serves: K transformer fragments with FLOPs per token, weight bytes,
 * KV-cache bytes per token and the activation that crosses each boundary. The client runs the
 * embedding and the head itself (as Petals does), so every fragment is a run of decoder layers.
 */
import type { FragmentCost } from '../routing.js';
import type { PlacementModel } from '../placement.js';

export interface SimModel {
  name: string;
  /** Per fragment: FLOPs per new token (≈ 2 × parameters). */
  flopsPerToken: number[];
  /** Per fragment: weight bytes a host keeps in GPU memory. */
  weightBytes: number[];
  /** Per fragment: KV-cache bytes per token of context. */
  kvBytesPerToken: number[];
  /** Bytes per token of the hidden state that enters and leaves every fragment. */
  activationBytesPerToken: number;
  /** KV budget a host reserves per fragment, in tokens (Petals: 4096, 16384 with multi-query attention). */
  kvBudgetTokens: number;
}

export interface DecoderModelOptions {
  name?: string;
  /** Decoder parameters (embeddings excluded). */
  parameters: number;
  layers: number;
  hidden: number;
  /** Width of K (= of V) per layer: kv heads × head dim. */
  kvWidth: number;
  fragments: number;
  /** Bytes per weight: 2 for fp16, 1 for int8, ~0.56 for NF4 with scales. */
  bytesPerParam?: number;
  kvBudgetTokens?: number;
}

/** A decoder-only model cut into equal fragments. */
export function decoderModel(o: DecoderModelOptions): SimModel {
  const k = o.fragments;
  const perFragment = o.parameters / k;
  const kv = ((o.layers / k) * 2 * o.kvWidth * 2); // K and V, fp16
  return {
    name: o.name ?? `decoder-${(o.parameters / 1e9).toFixed(0)}B-${k}`,
    flopsPerToken: Array.from({ length: k }, () => 2 * perFragment),
    weightBytes: Array.from({ length: k }, () => perFragment * (o.bytesPerParam ?? 1)),
    kvBytesPerToken: Array.from({ length: k }, () => kv),
    activationBytesPerToken: o.hidden * 2,
    kvBudgetTokens: o.kvBudgetTokens ?? 8192,
  };
}

/**
 * A Llama-2-70B-class model (80 layers, hidden 8192, grouped-query KV of 8×128), fp16 weights by default
 * (≈137 GB: no single supplier holds it), cut into `fragments` (default 96), with the KV budget
 * Petals gives grouped-query models (16,384 tokens per block).
 */
export function llama70bClass(fragments = 96, bytesPerParam = 2): SimModel {
  return decoderModel({ name: `llama-70b-class/${fragments}`, parameters: 68.7e9, layers: 80, hidden: 8192, kvWidth: 1024, fragments, bytesPerParam, kvBudgetTokens: 16384 });
}

/** What routing needs per fragment. */
export function fragmentCosts(m: SimModel): FragmentCost[] {
  return m.flopsPerToken.map((flops) => ({ flopsPerToken: flops, inputBytesPerToken: m.activationBytesPerToken, outputBytesPerToken: m.activationBytesPerToken }));
}

/** What placement needs: bytes per hosted fragment, weights plus the KV budget. */
export function placementModel(m: SimModel): PlacementModel {
  return { fragmentBytes: m.weightBytes.map((w, j) => w + m.kvBytesPerToken[j] * m.kvBudgetTokens) };
}
