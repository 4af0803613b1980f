/**
 * Joining the swarm of a model whose mixture-of-experts layers are cut apart (policy/expert-placement.ts): its
 * expert fragments are stateless and called in parallel, so a supplier hosts a set of fragments, not one span,
 * chosen to put each expert on two or more hosts. As the span agent's join does: wait a random jitter so
 * suppliers started together do not read the same swarm, read the records, choose, list the choice as joining
 * at once (others count it before the download), read again and choose once more if a supplier with a lower
 * peer id announced meanwhile and the choice changed, then fetch and serve.
 *
 * After the join, expert-repair.ts puts experts whose host left back on two hosts.
 */
import type { Logger } from 'pino';
import type { CapacityRecord } from '../../net/capacity/record.js';
import { swarmFromRecords } from '../../net/capacity/swarm.js';
import type { ModelPlacementInfo } from '../../policy/placement-model.js';
import { chooseMoeFragments, holdersOf } from '../../policy/expert-placement.js';
import { PlacementError, sleep } from './agent.js';

/** What the join asks of the supplier. */
export interface FragmentSetHost {
  /** Lists `indices` in the capacity record as joining (replacing any earlier announcement) and publishes. */
  announce(indices: number[]): Promise<void>;
  /** Fetches, serves and publishes `indices` as served. */
  commit(indices: number[], signal: AbortSignal): Promise<void>;
}

export interface ExpertJoinInit {
  manifestCid: string;
  model: ModelPlacementInfo;
  /** The model's expert fragments, in fill order (`expertFragmentsOf`). */
  experts: number[];
  self: { peerId: string; memoryBytes: number; maxLength?: number };
  host: FragmentSetHost;
  /** Every supplier's current capacity record. */
  records: () => Promise<CapacityRecord[]>;
  /** Sleep uniform(0, this) before choosing (default 5 s). */
  joinJitterMs?: number;
  signal: AbortSignal;
  random?: () => number;
  logger?: Logger;
}

/** Chooses the fragments to host, announces them, fetches and serves them; resolves with the indices. */
export async function joinExpertSwarm(init: ExpertJoinInit): Promise<number[]> {
  const { model, self, host, signal } = init;
  const log = init.logger?.child({ component: 'placement', manifestCid: init.manifestCid });
  const jitter = init.joinJitterMs ?? 5000;
  if (jitter > 0) await sleep((init.random ?? Math.random)() * jitter, signal);
  const read = async (): Promise<{ listed: Map<string, number[]>; holders: number[] }> => {
    const members = swarmFromRecords(await init.records(), init.manifestCid, model, { exclude: self.peerId });
    const listed = new Map(members.map((m) => [m.peerId, [...m.online, ...m.joining]]));
    return { listed, holders: holdersOf([...listed.values()], model.fragmentBytes.length) };
  };
  const choose = (holders: number[]): number[] => {
    const chosen = chooseMoeFragments({ model, experts: init.experts, holders, memoryBytes: self.memoryBytes, ...(self.maxLength ? { maxLength: self.maxLength } : {}) });
    if (chosen.length === 0) {
      throw new PlacementError(`no fragment fits in ${self.memoryBytes} bytes (the smallest needs ${Math.min(...model.fragmentBytes)} with its KV budget; raise --max-memory or lower --kv-tokens)`);
    }
    return chosen;
  };
  let swarm = await read();
  let chosen = choose(swarm.holders);
  log?.info({ fragments: chosen, suppliers: swarm.listed.size }, 'chose fragments of a mixture-of-experts model; announcing them before the download');
  await host.announce(chosen);
  // Someone who chose at the same moment may have taken the same gap: the higher peer id chooses again.
  swarm = await read();
  const twin = [...swarm.listed].some(([peer, indices]) => peer < self.peerId && indices.some((j) => chosen.includes(j)));
  if (twin) {
    const again = choose(swarm.holders);
    if (again.join() !== chosen.join()) {
      log?.info({ fragments: again }, 'another supplier announced some of the same fragments first; choosing again');
      chosen = again;
      await host.announce(chosen);
    }
  }
  await host.commit(chosen, signal);
  log?.info({ fragments: chosen }, 'hosting the chosen fragments');
  return chosen;
}
