/**
 * The placement agent of one model on one supplier (Petals' block selection and rebalancing, over the
 * capacity records in the DHT):
 *
 * - `join()`: wait uniform(0, joinJitterMs) so suppliers started together do not all read the same
 *   swarm, read the records, take the span whose coverage is weakest and that fits (`chooseSpan`), list
 *   it in the record at once (joining: others count it before the download), then fetch and serve it.
 *   If a supplier with a lower peer id announced the very same span meanwhile, choose once more.
 * - `start()`: re-check at random intervals, uniform(0.5, 1.5) × checkEveryMs, with `shouldMove`. A
 *   move needs `confirmations` (2) checks in a row that agree on the target (Petals #389 and PR #493:
 *   rebalancing on one stale reading oscillated). When several suppliers see the same gap, the one with the lowest peer id that could take it
 *   without uncovering anything goes first; the others yield (at most `maxYields` times in a row, in
 *   case that one runs no agent), and by their next check the gap is taken. Then the target is
 *   announced, the records are read again, and the move is abandoned if a fragment left behind would have
 *   no host once the moves under way end (two suppliers leaving the same fragment at once; the next check
 *   then waits longer, at random, to break the tie); otherwise the host fetches and serves the target,
 *   publishes it, and stops serving the old span.
 *
 * The agent decides; a `SpanHost` (the supplier) downloads, serves and publishes.
 */
import type { Logger } from 'pino';
import { chooseSpan, coverage, shouldMove, type MoveCheck, type PlacedServer } from '../../policy/placement.js';
import type { CapacityRecord } from '../../net/capacity/record.js';
import type { ModelPlacementInfo } from '../../policy/placement-model.js';
import { placedServers, settledHolders, swarmFromRecords, type Span, type SwarmMember } from '../../net/capacity/swarm.js';
import { GridpipeError } from '../../errors/base.js';
import { PeriodicCheck } from './periodic-check.js';

/** What the agent asks of the supplier. */
export interface SpanHost {
  /** The span served now; undefined before the first join. */
  current(): Span | undefined;
  /** Lists `target` in the capacity record as joining (replacing any earlier announced target) and publishes. */
  announce(target: Span): Promise<void>;
  /** Stops listing an announced target (the move is off) and publishes. */
  abandon(target: Span): Promise<void>;
  /**
   * Fetches the target's fragments, serves them, publishes them as served, then stops serving the
   * fragments of the old span that the target does not keep. On failure it leaves the old span served.
   */
  commit(target: Span, signal: AbortSignal): Promise<void>;
}

/** This supplier, as placement sees it. */
export interface PlacementSelf {
  peerId: string;
  /** Bytes it can give a span (weights + KV budget). */
  memoryBytes: number;
  /** Most fragments it hosts (default: as many as fit). */
  maxLength?: number;
  /** Its compute rate in the model's cost units per second (FLOP/s). */
  throughput: number;
}

export interface PlacementAgentInit {
  manifestCid: string;
  model: ModelPlacementInfo;
  self: PlacementSelf;
  host: SpanHost;
  /** Every supplier's current capacity record (e.g. `findAllRecords`). */
  records: () => Promise<CapacityRecord[]>;
  /** Join jitter: sleep uniform(0, this) before choosing (default 5 s). */
  joinJitterMs?: number;
  /** Mean time between rebalance checks (default 60 s). */
  checkEveryMs?: number;
  /** Move when the bottleneck would grow beyond before/q (default 0.75; 0 never moves). */
  q?: number;
  /** Checks in a row that must agree on a move (default 2). */
  confirmations?: number;
  /** Checks in a row a move may wait for a supplier with a lower peer id that wants the same gap (default 3). */
  maxYields?: number;
  /** While true, checks are skipped (e.g. the supplier is paused). */
  idle?: () => boolean;
  /** Random numbers in [0, 1) (tests may seed it). */
  random?: () => number;
  logger?: Logger;
}

export interface PlacementStatus {
  manifestCid: string;
  span?: Span;
  checks: number;
  moves: number;
  /** Moves announced and then called off (a fragment left behind would have lost its last host). */
  abandoned: number;
  /** Confirmed moves left to a supplier with a lower peer id that wanted the same gap. */
  yielded: number;
  failed: number;
  /** A move seen by the last check(s), waiting for confirmation. */
  pending?: { target: Span; agreed: number };
  lastCheck?: { at: number; move: boolean; before: number; after: number; target?: Span };
  lastMove?: { at: number; from: Span; to: Span; confirmations: number };
}

export type CheckOutcome =
  | { kind: 'skipped'; why: string }
  | { kind: 'stay'; check: MoveCheck }
  | { kind: 'pending'; check: MoveCheck; agreed: number }
  | { kind: 'yielded'; to: string }
  | { kind: 'moved'; from: Span; to: Span }
  | { kind: 'abandoned'; target: Span; orphaned: number }
  | { kind: 'failed'; target: Span; error: string };

/** A placement that cannot be made (nothing fits in the memory given). */
export class PlacementError extends GridpipeError<'NO_FRAGMENT_FITS'> {
  override readonly name = 'PlacementError';
  constructor(message: string) {
    super('NO_FRAGMENT_FITS', message);
  }
}

const sameSpan = (a: Span | undefined, b: Span | undefined): boolean => !!a && !!b && a.start === b.start && a.end === b.end;

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts (placement's join jitter). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) { reject(signal.reason as Error); return; }
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = (): void => { clearTimeout(t); reject(signal.reason as Error); };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class PlacementAgent {
  private readonly init: PlacementAgentInit;
  private readonly random: () => number;
  private readonly log?: Logger;
  private readonly abort = new AbortController();
  private readonly loop: PeriodicCheck;
  private pending?: { target: Span; agreed: number };
  private stats = { checks: 0, moves: 0, abandoned: 0, yielded: 0, failed: 0 };
  /** Yields in a row for the pending move. */
  private yields = 0;
  private lastCheck?: PlacementStatus['lastCheck'];
  private lastMove?: PlacementStatus['lastMove'];

  constructor(init: PlacementAgentInit) {
    this.init = init;
    this.random = init.random ?? Math.random;
    this.log = init.logger?.child({ component: 'placement', manifestCid: init.manifestCid });
    this.loop = new PeriodicCheck({
      meanMs: init.checkEveryMs ?? 60_000, random: this.random, check: () => this.check(),
      onError: (err) => this.log?.warn({ err: err.message }, 'placement check failed'),
    });
  }

  get status(): PlacementStatus {
    return {
      manifestCid: this.init.manifestCid,
      ...(this.init.host.current() ? { span: this.init.host.current() } : {}),
      ...this.stats,
      ...(this.pending ? { pending: { ...this.pending } } : {}),
      ...(this.lastCheck ? { lastCheck: this.lastCheck } : {}),
      ...(this.lastMove ? { lastMove: this.lastMove } : {}),
    };
  }

  /** The other suppliers of the model, from fresh records. */
  private async members(): Promise<SwarmMember[]> {
    const records = await this.init.records();
    return swarmFromRecords(records, this.init.manifestCid, this.init.model, { exclude: this.init.self.peerId });
  }

  /** The span this supplier would take among `members`. */
  private choose(members: SwarmMember[]): Span {
    const { model, self } = this.init;
    const tau = coverage(placedServers(members, model), model.fragmentBytes.length, model.fragmentCost);
    const span = chooseSpan(tau, model, self.memoryBytes, self.maxLength);
    if (!span) {
      const smallest = Math.min(...model.fragmentBytes);
      throw new PlacementError(`no fragment fits in ${self.memoryBytes} bytes (the smallest needs ${smallest} with its KV budget; raise --max-memory or lower --kv-tokens)`);
    }
    return span;
  }

  /** Chooses a span, announces it, fetches and serves it; resolves with the span. */
  async join(): Promise<Span> {
    const signal = this.abort.signal;
    const jitter = this.init.joinJitterMs ?? 5000;
    if (jitter > 0) await sleep(this.random() * jitter, signal);
    let members = await this.members();
    let target = this.choose(members);
    this.log?.info({ span: target, suppliers: members.length }, 'chose a span; announcing it before the download');
    await this.init.host.announce(target);
    // Someone who chose at the same moment may have announced the same span: the higher peer id yields.
    members = await this.members();
    const twin = members.find((m) => m.peerId < this.init.self.peerId && sameSpan(spanOf(m), target));
    if (twin) {
      const again = this.choose(members);
      if (!sameSpan(again, target)) {
        this.log?.info({ span: again, twin: twin.peerId }, 'another supplier announced the same span first; choosing again');
        target = again;
        await this.init.host.announce(target);
      }
    }
    await this.init.host.commit(target, signal);
    this.log?.info({ span: target }, 'hosting the chosen span');
    return target;
  }

  /** Starts the periodic rebalance checks. */
  start(): void {
    if (!this.abort.signal.aborted) this.loop.start();
  }

  /** Stops the checks and aborts a move in flight (the old span stays served). */
  async stop(): Promise<void> {
    this.abort.abort(new Error('placement agent stopped'));
    await this.loop.stop();
  }

  /** One rebalance check (the timer calls it; tests may too). */
  async check(): Promise<CheckOutcome> {
    const { host, model, self } = this.init;
    if (this.abort.signal.aborted) return { kind: 'skipped', why: 'stopped' };
    if (this.init.idle?.()) { this.pending = undefined; return { kind: 'skipped', why: 'idle' }; }
    const current = host.current();
    if (!current) return { kind: 'skipped', why: 'no span yet' };
    const members = await this.members();
    const me = { peerId: self.peerId, ...current, throughput: self.throughput, memoryBytes: self.memoryBytes, ...(self.maxLength ? { maxLength: self.maxLength } : {}) };
    const result = shouldMove(me, [...placedServers(members, model), me], model, this.init.q ?? 0.75);
    this.stats.checks++;
    this.lastCheck = { at: Date.now(), move: result.move, before: result.before, after: result.after, ...(result.target ? { target: result.target } : {}) };
    if (!result.move || !result.target) {
      if (this.pending) this.log?.info({ target: this.pending.target }, 'move not confirmed; staying');
      this.pending = undefined;
      this.yields = 0;
      return { kind: 'stay', check: result };
    }
    this.pending = sameSpan(this.pending?.target, result.target) ? { target: result.target, agreed: this.pending!.agreed + 1 } : { target: result.target, agreed: 1 };
    const need = this.init.confirmations ?? 2;
    if (this.pending.agreed < need) {
      this.log?.info({ from: current, target: result.target, before: result.before, after: result.after, agreed: this.pending.agreed, need }, 'the swarm looks unbalanced; confirming on the next check');
      return { kind: 'pending', check: result, agreed: this.pending.agreed };
    }
    const { target, agreed } = this.pending;
    const rival = this.rival(members, me, target);
    if (rival && this.yields < (this.init.maxYields ?? 3)) {
      this.yields++;
      this.stats.yielded++;
      this.log?.info({ target, rival }, 'another supplier with a lower peer id wants the same fragments; letting it go first');
      return { kind: 'yielded', to: rival };
    }
    this.pending = undefined;
    this.yields = 0;
    return this.moveTo(current, target, agreed);
  }

  /**
   * A supplier with a lower peer id, not moving already, that would take a span overlapping `target`
   * if it moved, without leaving any fragment it alone hosts: it goes first. (A cheap test, without the
   * swarm simulation of `shouldMove`, so it stays linear in the swarm's size.)
   */
  private rival(members: SwarmMember[], me: PlacedServer & { memoryBytes: number }, target: Span): string | undefined {
    const { model } = this.init;
    const k = model.fragmentBytes.length;
    const settled = members.filter((m) => m.joining.length === 0);
    const servers = [...placedServers(members, model), me];
    const tau = coverage(servers, k, model.fragmentCost);
    const hosts = new Array<number>(k).fill(0);
    for (const s of servers) for (let j = s.start; j < s.end; j++) hosts[j]++;
    for (const other of placedServers(settled, model)) {
      if (other.peerId.includes('#') || other.peerId >= me.peerId) continue;
      const without = Float64Array.from(tau);
      for (let j = other.start; j < other.end; j++) without[j] -= other.throughput * 1.001 / (model.fragmentCost[j] ?? 1);
      const theirs = chooseSpan(without, model, other.memoryBytes, other.maxLength);
      if (!theirs || theirs.start === other.start || theirs.end <= target.start || theirs.start >= target.end) continue;
      let orphans = false;
      for (let j = other.start; j < other.end; j++) if ((j < theirs.start || j >= theirs.end) && hosts[j] <= 1) orphans = true;
      if (!orphans) return other.peerId;
    }
    return undefined;
  }

  private async moveTo(from: Span, target: Span, confirmations: number): Promise<CheckOutcome> {
    const { host, model } = this.init;
    this.log?.info({ from, to: target, confirmations }, 'moving: announcing the new span');
    await host.announce(target);
    // Read again with our announcement out: did someone else leave the same fragments meanwhile?
    const holders = settledHolders(await this.members(), model.fragmentBytes.length);
    let orphaned = -1;
    for (let j = from.start; j < from.end && orphaned < 0; j++) if ((j < target.start || j >= target.end) && holders[j] === 0) orphaned = j;
    if (orphaned >= 0) {
      this.stats.abandoned++;
      this.log?.info({ from, to: target, fragment: orphaned }, 'move called off: another supplier is leaving the same fragment');
      await host.abandon(target);
      this.loop.backOff(1 + 2 * this.random());
      return { kind: 'abandoned', target, orphaned };
    }
    try {
      await host.commit(target, this.abort.signal);
    } catch (err) {
      this.stats.failed++;
      await host.abandon(target).catch(() => undefined);
      const error = (err as Error).message;
      if (this.abort.signal.aborted) this.log?.info({ from, to: target }, 'move interrupted by shutdown');
      else this.log?.warn({ from, to: target, err: error }, 'move failed; staying on the old span');
      return { kind: 'failed', target, error };
    }
    this.stats.moves++;
    this.lastMove = { at: Date.now(), from, to: target, confirmations };
    this.log?.info({ from, to: target }, 'moved');
    return { kind: 'moved', from, to: target };
  }
}

/** A member's listed span (online and joining together), when contiguous. */
function spanOf(m: SwarmMember): Span | undefined {
  const all = [...m.online, ...m.joining].sort((a, b) => a - b);
  if (all.length === 0 || all[all.length - 1] - all[0] + 1 !== all.length) return undefined;
  return { start: all[0], end: all[all.length - 1] + 1 };
}
