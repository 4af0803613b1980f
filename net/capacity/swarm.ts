/**
 * The swarm of one model as placement sees it, read from the suppliers' capacity records: who hosts
 * which fragments (joining ones included, as Petals counts JOINING servers), and how fast.
 *
 * Joining fragments: a supplier lists the span it has chosen before it downloads it, so that others
 * count it at once. The record format has no state per fragment yet, so a joining fragment is written
 * as `load = 1` with no active session (a busy fragment always has sessions). See `joiningFragment`.
 */
import type { CapacityRecord, HostedFragment } from './record.js';
import type { PlacedServer } from '../../policy/placement.js';
import type { ModelPlacementInfo } from '../../policy/placement-model.js';

/** A contiguous run of fragments. */
export interface Span { start: number; end: number }

/** One supplier of the model. */
export interface SwarmMember {
  peerId: string;
  /** Fragment indices it lists as served (sorted). */
  online: number[];
  /** Fragment indices it lists as joining: chosen, still downloading (sorted). */
  joining: number[];
  /** Its rate in the model's cost units per second (FLOP/s): stepsPerSecond × cost, median over its fragments. */
  throughput: number;
}

/** The marks of a fragment that is listed but not served yet. */
export function joiningFragment<T extends Omit<HostedFragment, 'load' | 'activeSessions'>>(f: T): T & Pick<HostedFragment, 'load' | 'activeSessions'> {
  return { ...f, load: 1, activeSessions: 0 };
}

/** Whether a listed fragment is joining (see the module doc). */
export function isJoining(f: Pick<HostedFragment, 'load' | 'activeSessions'>): boolean {
  return f.load >= 1 && f.activeSessions === 0;
}

function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x) && x >= 0).sort((a, b) => a - b);
  if (v.length === 0) return 0;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/**
 * The members of the swarm of `manifestCid`: every record that lists fragments of it (checked against
 * the manifest's CIDs), leaving out withdrawn and paused suppliers (they serve nothing now) and `exclude`.
 * Sorted by peer id.
 */
export function swarmFromRecords(records: readonly CapacityRecord[], manifestCid: string, model: ModelPlacementInfo, options: { exclude?: string } = {}): SwarmMember[] {
  const out: SwarmMember[] = [];
  for (const r of records) {
    if (r.withdrawn || r.limits?.paused || r.peerId === options.exclude) continue;
    const mine = r.fragments.filter((f) => f.manifestCid === manifestCid && model.fragmentCids[f.index] === f.cid);
    if (mine.length === 0) continue;
    const online = new Set<number>();
    const joining = new Set<number>();
    for (const f of mine) (isJoining(f) ? joining : online).add(f.index);
    for (const j of online) joining.delete(j);
    out.push({
      peerId: r.peerId,
      online: [...online].sort((a, b) => a - b),
      joining: [...joining].sort((a, b) => a - b),
      throughput: median(mine.map((f) => f.stepsPerSecond * model.fragmentCost[f.index])),
    });
  }
  return out.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
}

/** Splits sorted indices into contiguous spans. */
export function spansOfIndices(indices: readonly number[]): Span[] {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const spans: Span[] = [];
  for (const j of sorted) {
    const last = spans[spans.length - 1];
    if (last && last.end === j) last.end++;
    else spans.push({ start: j, end: j + 1 });
  }
  return spans;
}

/**
 * The members as placement servers: one per contiguous run of listed fragments (online and joining
 * together), its memory taken as what that run needs and its length as a cap, since a record does not
 * say how much more a supplier could hold. Runs after the first get ids `<peer>#<n>`.
 */
export function placedServers(members: readonly SwarmMember[], model: ModelPlacementInfo): (PlacedServer & { memoryBytes: number })[] {
  return members.flatMap((m) => spansOfIndices([...m.online, ...m.joining]).map((span, i) => {
    let memoryBytes = 0;
    for (let j = span.start; j < span.end; j++) memoryBytes += model.fragmentBytes[j];
    return { peerId: i === 0 ? m.peerId : `${m.peerId}#${i}`, ...span, throughput: m.throughput, memoryBytes, maxLength: span.end - span.start };
  }));
}

/**
 * How many members would still host each fragment once the moves under way end: a member that is
 * joining a span may be about to drop any of its online fragments, so only its joining ones count.
 */
export function settledHolders(members: readonly SwarmMember[], fragments: number): number[] {
  const count = new Array<number>(fragments).fill(0);
  for (const m of members) {
    for (const j of m.joining.length ? m.joining : m.online) if (j >= 0 && j < fragments) count[j]++;
  }
  return count;
}
