/**
 * Repairing the placement of a cut mixture-of-experts model after a host left (docs/moe.md), over plain data.
 * The join (expert-placement.ts) put each expert on EXPERT_REPLICAS hosts; when one of them goes, its experts are
 * left with fewer, and the next death would cost a fallback to another expert (a different output) instead of a
 * retry. Each remaining supplier of the model then checks, now and then, which experts are under-replicated and
 * takes them on itself: in free memory when it has some, else in the place of a fragment it hosts that keeps
 * EXPERT_REPLICAS hosts without it (suppliers fill their memory at the join, so a repair is usually a swap).
 * Which supplier takes what is left to the caller's protocol (jitter, announce as joining, read again): this module
 * only says what one supplier could do, given what the others list.
 */
import type { PlacementModel } from './placement.js';
import { EXPERT_REPLICAS } from './expert-placement.js';

export interface ExpertRepairInput {
  /** Bytes per fragment (weights plus KV budget), as for the join. */
  model: PlacementModel;
  /** The model's expert fragments, in fill order (`expertFragmentsOf`). */
  experts: readonly number[];
  /** How many other suppliers list each fragment (served or joining), this one left out. */
  holders: readonly number[];
  /** The fragments this supplier hosts now. */
  hosted: readonly number[];
  /** This supplier's memory budget for the model (its whole budget: what it hosts counts against it). */
  memoryBytes: number;
  /** Most fragments it may host (default: as many as fit). */
  maxLength?: number;
  replicas?: number;
}

/** What a supplier changes: fragments it adds and fragments it stops hosting to make room (both sorted). */
export interface ExpertRepair { adopt: number[]; drop: number[] }

/**
 * The under-replicated expert fragments (fewer than `replicas` hosts counting this supplier) that this supplier
 * can take on, least-held first, each in free memory or in the place of hosted fragments that others hold
 * `replicas` times or more (experts and trunk alike, most-held first). Empty when nothing is missing or it has
 * no room to give.
 */
export function chooseExpertRepair(input: ExpertRepairInput): ExpertRepair {
  const replicas = input.replicas ?? EXPERT_REPLICAS;
  const bytes = (j: number): number => input.model.fragmentBytes[j] ?? 0;
  const held = (j: number): number => input.holders[j] ?? 0;
  const hosted = new Set(input.hosted);
  const missing = input.experts
    .map((j, rank) => ({ j, rank }))
    .filter(({ j }) => !hosted.has(j) && held(j) < replicas)
    .sort((a, b) => held(a.j) - held(b.j) || a.rank - b.rank)
    .map(({ j }) => j);
  if (missing.length === 0) return { adopt: [], drop: [] };

  // Fragments others already hold `replicas` times: hosting them here adds nothing the swarm needs.
  const spare = input.hosted.filter((j) => held(j) >= replicas).sort((a, b) => held(b) - held(a) || a - b);
  let free = input.memoryBytes - input.hosted.reduce((n, j) => n + bytes(j), 0);
  let room = (input.maxLength ?? Number.POSITIVE_INFINITY) - input.hosted.length;
  const adopt: number[] = [];
  const drop: number[] = [];
  for (const j of missing) {
    // Give up spare fragments, most-held first, until j fits (bytes and count); keep them if it never does.
    const given: number[] = [];
    let f = free;
    let r = room;
    while ((bytes(j) > f || r < 1) && given.length < spare.length) {
      const x = spare[given.length];
      given.push(x);
      f += bytes(x);
      r++;
    }
    if (bytes(j) > f || r < 1) continue;
    spare.splice(0, given.length);
    drop.push(...given);
    adopt.push(j);
    free = f - bytes(j);
    room = r - 1;
  }
  return { adopt: adopt.sort((a, b) => a - b), drop: drop.sort((a, b) => a - b) };
}
