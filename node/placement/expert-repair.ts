/**
 * After the join of a cut mixture-of-experts model (expert-join.ts): put an expert whose host left back on
 * EXPERT_REPLICAS hosts. Every supplier of the model checks now and then (uniform(0.5, 1.5) × the check interval,
 * as the span agent does) which experts the others list fewer times than that, and takes on what it can
 * (policy/expert-repair.ts: in free memory, or in the place of a fragment others hold enough). Several suppliers
 * see the same gap at once, so, as at the join: wait a random jitter, read the records again and choose again,
 * list the new set as joining, read once more and, if a supplier with a lower peer id announced some of the same
 * fragments meanwhile, choose again with its announcement counted (or give up); then fetch and serve the new set,
 * dropping what it replaced (sessions on it drain first).
 */
import type { Logger } from 'pino';
import type { CapacityRecord } from '../../net/capacity/record.js';
import { swarmFromRecords } from '../../net/capacity/swarm.js';
import type { ModelPlacementInfo } from '../../policy/placement-model.js';
import { holdersOf } from '../../policy/expert-placement.js';
import { chooseExpertRepair, type ExpertRepair } from '../../policy/expert-repair.js';
import type { FragmentSetHost } from './expert-join.js';
import { sleep } from './agent.js';
import { PeriodicCheck } from './periodic-check.js';

/** What the repair asks of the supplier: the join's announce and commit (commit now replaces the whole set), and the set it hosts. */
export interface RepairableFragmentSetHost extends FragmentSetHost {
  /** The model's fragments this supplier serves now. */
  current(): number[];
}

export interface ExpertRepairAgentInit {
  manifestCid: string;
  model: ModelPlacementInfo;
  /** The model's expert fragments, in fill order (`expertFragmentsOf`). */
  experts: number[];
  self: { peerId: string; memoryBytes: number; maxLength?: number };
  host: RepairableFragmentSetHost;
  /** Every supplier's current capacity record. */
  records: () => Promise<CapacityRecord[]>;
  /** Mean time between checks (default 60 s). */
  checkEveryMs?: number;
  /** Wait uniform(0, this) between seeing a gap and choosing (default 5 s). */
  jitterMs?: number;
  /** Whether to skip checks for now (paused, stopping). */
  idle?: () => boolean;
  random?: () => number;
  logger?: Logger;
}

/** What one check did. */
export type RepairOutcome =
  | { kind: 'skipped'; why: string }
  | { kind: 'nothing' }
  | { kind: 'yielded'; to: string }
  | { kind: 'repaired'; adopted: number[]; dropped: number[]; fragments: number[] };

export class ExpertRepairAgent {
  private readonly abort = new AbortController();
  private readonly random: () => number;
  private readonly log?: Logger;
  private readonly loop: PeriodicCheck;

  constructor(private readonly init: ExpertRepairAgentInit) {
    this.random = init.random ?? Math.random;
    this.log = init.logger?.child({ component: 'expert-repair', manifestCid: init.manifestCid });
    this.loop = new PeriodicCheck({
      meanMs: init.checkEveryMs ?? 60_000, random: this.random, check: () => this.check(),
      onError: (err) => this.log?.warn({ err: err.message }, 'expert repair check failed'),
    });
  }

  /** Starts the periodic checks. */
  start(): void {
    if (!this.abort.signal.aborted) this.loop.start();
  }

  /** Stops the checks and aborts a repair in flight (the old set stays served). */
  async stop(): Promise<void> {
    this.abort.abort(new Error('expert repair stopped'));
    await this.loop.stop();
  }

  /** One check (the timer calls it; tests may too). */
  async check(): Promise<RepairOutcome> {
    const { host, signal } = { host: this.init.host, signal: this.abort.signal };
    if (signal.aborted) return { kind: 'skipped', why: 'stopped' };
    if (this.init.idle?.()) return { kind: 'skipped', why: 'idle' };
    if ((await this.plan()).repair.adopt.length === 0) return { kind: 'nothing' };
    const jitter = this.init.jitterMs ?? 5000;
    if (jitter > 0) await sleep(this.random() * jitter, signal);
    let { repair, listed } = await this.plan();
    if (repair.adopt.length === 0) return { kind: 'nothing' };
    const current = host.current();
    let target = nextSet(current, repair);
    this.log?.info({ adopt: repair.adopt, drop: repair.drop }, 'experts of the model have fewer hosts than wanted; taking them on');
    await host.announce(target);
    // Someone who saw the same gap may have announced it too: the higher peer id chooses again, counting it.
    const before = listed;
    ({ repair, listed } = await this.plan());
    const twin = [...listed].find(([peer, indices]) => peer < this.init.self.peerId && indices.some((j) => target.includes(j) && !current.includes(j) && !before.get(peer)?.includes(j)));
    if (twin) {
      if (repair.adopt.length === 0) {
        this.log?.info({ to: twin[0] }, 'another supplier took the missing experts first');
        await host.commit(current, signal); // clears the joining announcement; nothing changes
        return { kind: 'yielded', to: twin[0] };
      }
      target = nextSet(current, repair);
      await host.announce(target);
    }
    await host.commit(target, signal);
    this.log?.info({ fragments: target, adopted: repair.adopt, dropped: repair.drop }, 'hosting the repaired set');
    return { kind: 'repaired', adopted: repair.adopt, dropped: repair.drop, fragments: target };
  }

  /** What the others list, and what this supplier could take on given that. */
  private async plan(): Promise<{ repair: ExpertRepair; listed: Map<string, number[]> }> {
    const { model, self } = this.init;
    const members = swarmFromRecords(await this.init.records(), this.init.manifestCid, model, { exclude: self.peerId });
    const listed = new Map(members.map((m) => [m.peerId, [...m.online, ...m.joining]]));
    const repair = chooseExpertRepair({
      model, experts: this.init.experts, holders: holdersOf([...listed.values()], model.fragmentBytes.length),
      hosted: this.init.host.current(), memoryBytes: self.memoryBytes, ...(self.maxLength ? { maxLength: self.maxLength } : {}),
    });
    return { repair, listed };
  }
}

/** The set a supplier hosts after `repair` (sorted). */
function nextSet(current: readonly number[], repair: ExpertRepair): number[] {
  return [...current.filter((j) => !repair.drop.includes(j)), ...repair.adopt].sort((a, b) => a - b);
}
