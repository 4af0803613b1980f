/**
 * Placement over plain data: which contiguous span of fragments a supplier hosts. After Petals' block
 * selection: coverage τ[j] is the summed throughput of the servers whose span holds fragment j
 * (joining ones included, summed in peer-id order so every node computes the same floats); a joining
 * supplier takes the span it can fit in memory whose coverage, sorted ascending, is lexicographically
 * smallest (the weakest fragment first). Fragments differ in size, so each start gets its own length.
 * Suppliers re-check now and then and move only when the bottleneck would grow by 1/q (default 1.33×),
 * never when leaving would uncover a fragment.
 *
 * Fragments of unequal cost: with `PlacementModel.fragmentCost` (e.g. FLOPs per step), a server's
 * `throughput` is in cost units per second (FLOP/s) and it adds `throughput / cost[j]` (steps/s) to
 * fragment j, so τ is each fragment's steps/s and a move is valued where the server would run.
 */

export interface PlacedServer {
  peerId: string;
  start: number;
  end: number;
  /**
   * What it adds to each fragment of its span (tokens/s or steps/s; any unit, used consistently); with
   * `PlacementModel.fragmentCost`, its rate in cost units per second (it adds throughput / cost[j]).
   */
  throughput: number;
  /** Most fragments it hosts wherever it goes (default: as many as fit its memory). */
  maxLength?: number;
}

export interface PlacementModel {
  /** Bytes a supplier needs to host each fragment (weights plus its KV budget). */
  fragmentBytes: number[];
  /** Relative compute cost of each fragment (e.g. FLOPs per step; default 1 each): see the module doc. */
  fragmentCost?: number[];
}

const EPS = 1e-3;

/** What a server of `throughput` adds to fragment j. */
function rateAt(throughput: number, cost: ArrayLike<number> | undefined, j: number): number {
  return cost ? throughput / cost[j] : throughput;
}

/** Coverage per fragment (`cost`: the model's fragmentCost, when it has one). */
export function coverage(servers: PlacedServer[], fragments: number, cost?: ArrayLike<number>): Float64Array {
  const tau = new Float64Array(fragments);
  for (const s of [...servers].sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))) {
    for (let j = Math.max(0, s.start); j < Math.min(fragments, s.end); j++) tau[j] += rateAt(s.throughput, cost, j);
  }
  return tau;
}

/** Longest span from `start` whose fragments fit in `memoryBytes` (0 when not even one does). */
export function spanLengthAt(model: PlacementModel, start: number, memoryBytes: number, maxLength = Number.POSITIVE_INFINITY): number {
  let used = 0;
  let n = 0;
  for (let j = start; j < model.fragmentBytes.length && n < maxLength; j++) {
    if (used + model.fragmentBytes[j] > memoryBytes) break;
    used += model.fragmentBytes[j];
    n++;
  }
  return n;
}

/** Compares coverage windows: sorted ascending, lexicographically; a longer window wins a tie on its prefix. */
function compareWindows(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (Math.abs(a[i] - b[i]) > 1e-12 * Math.max(1, Math.abs(a[i]))) return a[i] - b[i];
  }
  return b.length - a.length;
}

/** The best span for a supplier with `memoryBytes` given coverage τ, or undefined when nothing fits. */
export function chooseSpan(tau: ArrayLike<number>, model: PlacementModel, memoryBytes: number, maxLength?: number): { start: number; end: number } | undefined {
  let best: { start: number; end: number; window: number[] } | undefined;
  for (let s = 0; s < model.fragmentBytes.length; s++) {
    const n = spanLengthAt(model, s, memoryBytes, maxLength);
    if (n === 0) continue;
    const window = Array.from({ length: n }, (_, i) => tau[s + i]).sort((a, b) => a - b);
    if (!best || compareWindows(window, best.window) < 0) best = { start: s, end: s + n, window };
  }
  return best && { start: best.start, end: best.end };
}

export interface MoveCheck {
  move: boolean;
  /** Where to go when moving. */
  target?: { start: number; end: number };
  /** Bottleneck (min coverage) now and after everyone re-optimises. */
  before: number;
  after: number;
}

/**
 * Whether `me` should move (Petals' `should_choose_other_blocks`): take me out, put me at my best span,
 * let every other server re-optimise in turn (by peer id) until nobody moves, and move when the
 * bottleneck would grow beyond before/q. Never when a fragment I would leave has no other host, even
 * when the swarm already has a gap elsewhere (that would only move the gap).
 */
export function shouldMove(me: PlacedServer & { memoryBytes: number }, servers: (PlacedServer & { memoryBytes: number })[], model: PlacementModel, q = 0.75): MoveCheck {
  const k = model.fragmentBytes.length;
  const cost = model.fragmentCost;
  const tau = coverage(servers, k, cost);
  const before = Math.min(...tau);
  const remove = (t: Float64Array, s: PlacedServer, factor = 1): void => { for (let j = s.start; j < s.end; j++) t[j] -= rateAt(s.throughput, cost, j) * factor; };
  const add = (t: Float64Array, s: PlacedServer, factor = 1): void => { for (let j = s.start; j < s.end; j++) t[j] += rateAt(s.throughput, cost, j) * factor; };

  const without = Float64Array.from(tau);
  remove(without, me, 1 + EPS); // prefer staying on near-ties
  const target = chooseSpan(without, model, me.memoryBytes, me.maxLength);
  if (!target || (target.start === me.start && target.end === me.end)) return { move: false, before, after: before };
  // The last host of a fragment never leaves it (PR #210); hosts are counted, not summed, so a slow
  // second host still counts.
  for (let j = me.start; j < me.end; j++) {
    if (j >= target.start && j < target.end) continue;
    if (!servers.some((s) => s.peerId !== me.peerId && s.start <= j && j < s.end)) return { move: false, before, after: before };
  }

  // Simulate the swarm re-optimising around the move, each server biased (by ε) towards staying put.
  const t = Float64Array.from(tau);
  remove(t, me);
  const placed = new Map(servers.map((s) => [s.peerId, { ...s }]));
  const moved = { ...me, ...target };
  add(t, moved);
  placed.set(me.peerId, moved);
  const ids = [...placed.keys()].sort();
  for (let round = 0; round < 16; round++) {
    let changed = false;
    for (const id of ids) {
      const s = placed.get(id)!;
      remove(t, s, 1 + EPS);
      const best = chooseSpan(t, model, s.memoryBytes, s.maxLength);
      add(t, s, EPS);
      const next = best && best.start !== s.start ? { ...s, ...best } : s;
      if (next !== s) changed = true;
      add(t, next);
      placed.set(id, next);
    }
    if (!changed) break;
  }
  const after = Math.min(...t);
  if (after < before || after < EPS) return { move: false, before, after };
  return { move: before / after < q - EPS, target, before, after };
}
