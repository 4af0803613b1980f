/**
 * Placement of a model whose mixture-of-experts layers were cut for selective activation (docs/moe.md), over
 * plain data. Its fragments are of two kinds: the trunk (dense fragments and routers), which every token
 * crosses in order and which is placed as a contiguous run as for any model (`chooseSpan`, over the trunk
 * alone), and expert fragments, each called only for the tokens that chose its experts, in parallel and
 * statelessly, so they need not be contiguous and are best spread: each expert on two or more hosts, so a
 * dead host costs a retry on another, never a fallback to another expert (hivemind's DMoE re-declares each
 * expert on several servers for the same reason).
 *
 * A joining supplier counts the hosts of every fragment (joining ones included, as for spans) and serves
 * first the kind whose least-held fragment has fewer hosts (the trunk on a tie: every token needs it):
 * the trunk run whose host counts, sorted ascending, are lexicographically smallest, or the expert fragments
 * with the fewest hosts, in the order expert 0 of each layer, expert 1 of each layer, … (so a supplier holds
 * whole experts across the layers, as a hand placement would). Then it fills what memory is left with the
 * other kind the same way. Counts, not throughput: an expert fragment costs k/E of a dense one per token, and
 * what matters for it is a second host, not a faster one.
 */
import type { Manifest } from '../fragments/manifest.js';
import { chooseSpan, type PlacementModel } from './placement.js';

/** Hosts an expert should have when the swarm allows (one to serve, one to fail over to). */
export const EXPERT_REPLICAS = 2;

/** The expert fragments of a manifest (fragments that compute experts of a cut MoE layer), in fill order. */
export function expertFragmentsOf(manifest: Pick<Manifest, 'fragments'>): number[] {
  return manifest.fragments
    .filter((f) => f.moe?.role === 'experts')
    .map((f) => ({ index: f.index, group: f.moe!.group, first: Math.min(...(f.moe!.experts ?? [0])) }))
    .sort((a, b) => a.first - b.first || a.group - b.group || a.index - b.index)
    .map((f) => f.index);
}

/** Whether a manifest has mixture-of-experts layers cut apart (its placement is `chooseMoeFragments`). */
export function hasCutExperts(manifest: Pick<Manifest, 'fragments'>): boolean {
  return manifest.fragments.some((f) => f.moe?.role === 'experts');
}

export interface MoePlacementInput {
  /** Bytes per fragment (weights plus KV budget), as for spans. */
  model: PlacementModel;
  /** The expert fragments, in fill order (`expertFragmentsOf`). */
  experts: readonly number[];
  /** How many suppliers list each fragment (served or joining), this one left out. */
  holders: readonly number[];
  memoryBytes: number;
  /** Most fragments to host (default: as many as fit). */
  maxLength?: number;
}

/** The fragments (sorted indices) a joining supplier hosts; empty when not even one fits. */
export function chooseMoeFragments(input: MoePlacementInput): number[] {
  const { model, holders } = input;
  const expertSet = new Set(input.experts);
  const trunk = model.fragmentBytes.map((_, j) => j).filter((j) => !expertSet.has(j));
  const least = (list: readonly number[]): number => (list.length ? Math.min(...list.map((j) => holders[j] ?? 0)) : Number.POSITIVE_INFINITY);
  let memory = input.memoryBytes;
  let room = input.maxLength ?? Number.POSITIVE_INFINITY;
  const chosen: number[] = [];
  const take = (j: number): void => { chosen.push(j); memory -= model.fragmentBytes[j]; room--; };

  const placeTrunk = (): void => {
    if (trunk.length === 0 || room <= 0) return;
    const span = chooseSpan(trunk.map((j) => holders[j] ?? 0), { fragmentBytes: trunk.map((j) => model.fragmentBytes[j]) }, memory, room);
    if (!span) return;
    for (let t = span.start; t < span.end; t++) take(trunk[t]);
  };
  const placeExperts = (): void => {
    const order = input.experts.map((j, rank) => ({ j, rank })).sort((a, b) => (holders[a.j] ?? 0) - (holders[b.j] ?? 0) || a.rank - b.rank);
    for (const { j } of order) {
      if (room <= 0) break;
      if (model.fragmentBytes[j] <= memory) take(j);
    }
  };

  if (least(trunk) <= least(input.experts)) {
    placeTrunk();
    placeExperts();
  } else {
    placeExperts();
    placeTrunk();
  }
  return chosen.sort((a, b) => a - b);
}

/** Hosts per fragment of a model with `fragments` fragments, from each supplier's listed indices. */
export function holdersOf(listed: readonly (readonly number[])[], fragments: number): number[] {
  const count = new Array<number>(fragments).fill(0);
  for (const indices of listed) for (const j of new Set(indices)) if (j >= 0 && j < fragments) count[j]++;
  return count;
}

/** Expert fragments with fewer than `replicas` hosts (what a swarm still lacks). */
export function underReplicatedExperts(experts: readonly number[], holders: readonly number[], replicas = EXPERT_REPLICAS): number[] {
  return experts.filter((j) => (holders[j] ?? 0) < replicas);
}
