/**
 * Routing over plain data: which servers carry a request from fragment `from` to fragment `to`.
 *
 * The graph (after Petals' sequence manager): a vertex per server p and boundary j inside its span
 * [start, end); a compute edge (p, j) → (p, j+1) costs p's estimated time for fragment j; a route may
 * enter a span anywhere but leaves it only at its end (or at `to`). Today's pipelines are a star (the
 * client relays every hop), so a switch from p to q costs p's return leg plus q's send leg and the
 * DP runs in time linear in the total span length: no O(N²) switch edges.
 *
 * Latency mode weighs one request alone; throughput mode inflates compute by each server's load and
 * adds its queue, spreading prefill and batches over replicas.
 *
 * Price is a term of the same sum: a server's advertised price per GFLOP, weighted by the request's
 * `msPerPriceUnit`, is added to its compute edges as milliseconds, so among servers of similar speed the
 * cheaper wins and an absurd price (whatever speed it claims) loses to any honest host. `priceWeight` gives the
 * weight that makes the median priced server's price count as much as its compute time.
 */
import { GridpipeError } from '../errors/base.js';

export interface FragmentCost {
  /** FLOPs of the fragment per token. */
  flopsPerToken: number;
  /** Bytes that enter the fragment per token (its inputs from the client). */
  inputBytesPerToken: number;
  /** Bytes that leave it per token back to the client. */
  outputBytesPerToken: number;
}

export interface ServerEstimate {
  peerId: string;
  /** The span it hosts: fragments start .. end-1. */
  start: number;
  end: number;
  /** Estimated seconds per FLOP (from its benchmark, then from replies). */
  secondsPerFlop: number;
  /** Round trip client ↔ server, ms. */
  rttMs: number;
  /** Bytes per second between client and server. */
  bandwidthBytesPerS: number;
  /** Recent queueing delay, ms. */
  queueMs: number;
  /** Requests in flight from this client, and how many the server takes at once. */
  inflight: number;
  capacity: number;
  /** Advertised price, base units per GFLOP (absent or 0: free). */
  pricePerGflop?: number;
}

export interface RouteRequest {
  from: number;
  to: number;
  /** New tokens per sequence in this step (1 for decode, the prompt length for prefill). */
  tokens: number;
  batch?: number;
  mode: 'latency' | 'throughput';
  /** Peers not to use (banned or failed). */
  exclude?: ReadonlySet<string>;
  /** Milliseconds a unit of price (one base unit per GFLOP, per GFLOP run) weighs against time (default 0: price ignored). */
  msPerPriceUnit?: number;
}

/** One call: a server runs fragments start..end-1. */
export interface RouteCall { peerId: string; start: number; end: number }
/** Calls made in parallel; a dense span is one call, a mixture-of-experts layer several. */
export interface RouteStage { calls: RouteCall[] }
/** `estimatedMs` is time only; the price term that chose the route is left out of it. */
export interface Route { stages: RouteStage[]; estimatedMs: number }

/** No live server hosts some fragment: the request cannot be served. */
export class NoRouteError extends GridpipeError<'NO_ROUTE'> {
  constructor(readonly fragment: number, message = `no live server hosts fragment ${fragment}`) {
    super('NO_ROUTE', message);
    this.name = 'NoRouteError';
  }
}

/** Finds the cheapest route (see module doc); throws NoRouteError naming the first uncovered fragment. */
export function findRoute(fragments: FragmentCost[], servers: ServerEstimate[], request: RouteRequest): Route {
  const { from, to, tokens } = request;
  const units = tokens * (request.batch ?? 1);
  if (!(from >= 0 && to <= fragments.length && from < to)) throw new RangeError(`bad fragment range ${from}..${to}`);
  const width = to - from;
  const throughput = request.mode === 'throughput';

  // Usable servers, clipped to the request, with their per-request constants in flat arrays.
  const idx: number[] = [];
  for (let i = 0; i < servers.length; i++) {
    const s = servers[i];
    if (s.start < to && s.end > from && s.end > s.start && !request.exclude?.has(s.peerId)) idx.push(i);
  }
  const n = idx.length;
  const first = new Int32Array(n);
  const last = new Int32Array(n); // clipped end boundary
  const halfRtt = new Float64Array(n);
  const msPerByte = new Float64Array(n);
  const msPerFlop = new Float64Array(n);
  const queue = new Float64Array(n);
  const msPerFlopPrice = new Float64Array(n); // the price term, per FLOP of this request
  const weight = request.msPerPriceUnit ?? 0;
  const startingAt: number[][] = Array.from({ length: width + 1 }, () => []);
  const endingAt: number[][] = Array.from({ length: width + 1 }, () => []);
  const coverDiff = new Int32Array(width + 1);
  for (let p = 0; p < n; p++) {
    const s = servers[idx[p]];
    first[p] = Math.max(s.start, from);
    last[p] = Math.min(s.end, to);
    halfRtt[p] = s.rttMs / 2;
    msPerByte[p] = (units * 1000) / s.bandwidthBytesPerS;
    msPerFlop[p] = units * s.secondsPerFlop * 1000 * (throughput ? 1 + s.inflight / Math.max(1, s.capacity) : 1);
    queue[p] = throughput ? s.queueMs : 0;
    msPerFlopPrice[p] = weight > 0 ? (units * (s.pricePerGflop ?? 0) * weight) / 1e9 : 0;
    startingAt[first[p] - from].push(p);
    endingAt[last[p] - from].push(p);
    coverDiff[first[p] - from]++;
    coverDiff[last[p] - from]--;
  }
  for (let k = 0, covered = 0; k < width; k++) {
    covered += coverDiff[k];
    if (covered === 0) throw new NoRouteError(from + k);
  }

  const INF = Number.POSITIVE_INFINITY;
  const dist = new Float64Array(n).fill(INF); // cost of p's best chain at its current boundary
  const enteredAt = new Int32Array(n).fill(-1); // where that chain entered
  const arrival = new Float64Array(width + 1).fill(INF); // best cost at boundary j with nothing in flight
  const arrivalFrom = new Int32Array(width + 1).fill(-1); // the server whose chain ended there
  const arrivalEntered = new Int32Array(width + 1).fill(-1); // and where that chain had entered
  arrival[0] = 0;
  const active: number[] = [];
  const slot = new Int32Array(n).fill(-1);

  for (let k = 0; k <= width; k++) {
    const j = from + k;
    if (k > 0) {
      // Chains ending here (span end, or the request's end) become an arrival at j; then they leave.
      const enders = k === width ? active : endingAt[k];
      for (const p of enders) {
        if (dist[p] === INF) continue;
        const c = dist[p] + halfRtt[p] + fragments[j - 1].outputBytesPerToken * msPerByte[p];
        if (c < arrival[k]) { arrival[k] = c; arrivalFrom[k] = p; arrivalEntered[k] = enteredAt[p]; }
      }
      if (k === width) break;
      for (const p of endingAt[k]) {
        const at = slot[p];
        const moved = active[active.length - 1];
        active[at] = moved;
        slot[moved] = at;
        active.pop();
        slot[p] = -1;
      }
    }
    for (const p of startingAt[k]) { slot[p] = active.length; active.push(p); }
    // Enter any covering span at j fresh from the best arrival, or continue the chain in it; then compute j.
    const here = arrival[k];
    const sendBytes = fragments[j].inputBytesPerToken;
    const flops = fragments[j].flopsPerToken;
    for (const p of active) {
      if (here < INF) {
        const c = here + halfRtt[p] + sendBytes * msPerByte[p] + queue[p];
        if (c < dist[p]) { dist[p] = c; enteredAt[p] = j; }
      }
      if (dist[p] < INF) dist[p] += flops * (msPerFlop[p] + msPerFlopPrice[p]);
    }
  }

  const total = arrival[width];
  if (!(total < INF)) throw new NoRouteError(from, `no route from fragment ${from} to ${to}`);
  // Walk back: each arrival names the chain (server, entry) that produced it.
  const calls: RouteCall[] = [];
  let priceMs = 0;
  for (let k = width; k > 0;) {
    const p = arrivalFrom[k];
    const entered = arrivalEntered[k];
    calls.push({ peerId: servers[idx[p]].peerId, start: entered, end: k + from });
    for (let j = entered; j < k + from; j++) priceMs += fragments[j].flopsPerToken * msPerFlopPrice[p];
    k = entered - from;
  }
  calls.reverse();
  return { stages: calls.map((c) => ({ calls: [c] })), estimatedMs: Math.max(0, total - priceMs) };
}

/**
 * The price weight (RouteRequest.msPerPriceUnit) under which the median priced server's price costs as much as
 * the median server's compute: ms per GFLOP over price per GFLOP. Speed takes the upper median and price the
 * lower one, so that with two servers a fake speed or an absurd price claimed by one does not set the scale.
 * 0 when no server charges.
 */
export function priceWeight(servers: readonly ServerEstimate[]): number {
  const sorted = (xs: number[]): number[] => xs.sort((a, b) => a - b);
  const prices = sorted(servers.map((s) => s.pricePerGflop ?? 0).filter((p) => p > 0 && Number.isFinite(p)));
  if (!prices.length) return 0;
  const msPerGflop = sorted(servers.map((s) => s.secondsPerFlop * 1e12));
  return msPerGflop[msPerGflop.length >> 1] / prices[(prices.length - 1) >> 1];
}
