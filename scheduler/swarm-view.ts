/**
 * The swarm view: one per process (after Petals' sequence manager), owned by the GridClient. It holds what
 * the process knows about the suppliers, so every consumer sees the same thing and pays for it once:
 * - the DHT reads: one sweep of every capacity record per refresh, shared by the gateway's catalog and
 *   every model's discovery (they filter the same records for their own manifest), with a background sweep
 *   only when no other sweep ran for `refreshMs`;
 * - the per-peer estimates (policy/estimates.ts) learned from every session's replies, and the bans of
 *   peers that failed or stalled, so a peer one session banned is avoided by all the others;
 * - route making (policy/routing.ts over the admissible spans, policy/price-limits.ts).
 * A pipeline session asks it for routes and reports each outcome to it; the session itself keeps only its
 * own state (what it sent to each span) and replay.
 */
import type { Logger } from 'pino';
import { findAllRecords, type CapacityNode } from '../net/capacity/dht.js';
import type { CapacityRecord } from '../net/capacity/record.js';
import { Estimates, type EstimatesOptions, type PeerEstimate } from '../policy/estimates.js';
import { findRoute, NoRouteError, priceWeight, type FragmentCost, type RouteCall, type ServerEstimate } from '../policy/routing.js';
import { admissibleSpans, DEFAULT_PRICE_LIMITS, type PriceLimits } from '../policy/price-limits.js';
import type { HostedSpan, ModelDiscovery, RecordFeed, Sweep } from './discovery.js';
import { PeerPenalties, type PeerPenaltiesOptions } from '../policy/peer-penalties.js';

/** Reads every (verified) capacity record of the swarm once; `findAllRecords` on the client's host by default. */
export type RecordSource = (timeoutMs: number) => Promise<CapacityRecord[]>;

export interface SwarmViewOptions {
  /** Background sweep when no sweep ran for this long, while some discovery listens (default 30 s). */
  refreshMs?: number;
  /** Timeout of one DHT sweep (default 10 s). */
  lookupTimeoutMs?: number;
  /** Moving averages and ban lengths of the per-peer estimates. */
  estimates?: EstimatesOptions;
  /**
   * Garbage replies a server may send before its records are ignored and it is excluded from routing for a
   * while (default 3 in 10 minutes, then 10 minutes, doubled per repeat: an honest server sends none).
   */
  garbage?: PeerPenaltiesOptions;
  logger?: Logger;
}

/** What a route needs besides the spans: the model's per-fragment costs and the request. */
export interface RouteAsk {
  costs: FragmentCost[];
  from: number;
  to: number;
  /** New positions per step (costing). */
  tokens: number;
  priceLimits?: PriceLimits;
  /** Sweep the DHT again before routing (after a failure); otherwise the spans known now do when there are any. */
  lookAgain?: boolean;
  /** Peers that already failed this caller: their bans are never lifted for it (see routeDespiteBans). */
  keepBanned?: ReadonlySet<string>;
}

/** A call of a route with the supplier's record of the span it runs in (address to dial and pay, price). */
export interface PlannedCall extends RouteCall { hosted: HostedSpan }

/**
 * A route, or why there is none: `unroutable` names the first fragment without an admissible live host,
 * `refused` why its live hosts (if any) were refused for their price.
 */
export type RoutePlan =
  | { calls: PlannedCall[]; estimatedMs: number; unroutable?: undefined }
  | { unroutable: NoRouteError; refused?: string };

export class SwarmView implements RecordFeed {
  /** What every session of this process learned about each peer; also holds the bans. */
  readonly estimates: Estimates;
  /** DHT sweeps started so far (each reads every capacity record once). */
  sweeps = 0;
  readonly refreshMs: number;
  private readonly lookupTimeoutMs: number;
  private last?: Sweep;
  private inflight?: Promise<Sweep>;
  private readonly listeners = new Set<(sweep: Sweep) => unknown>();
  private timer?: ReturnType<typeof setTimeout>;
  private closed = false;
  /** Servers that sent garbage replies: past the limit, their records are left out of every sweep for a while. */
  readonly garbage: PeerPenalties;

  constructor(private readonly source: RecordSource, private readonly options: SwarmViewOptions = {}) {
    this.estimates = new Estimates(options.estimates);
    this.refreshMs = options.refreshMs ?? 30_000;
    this.lookupTimeoutMs = options.lookupTimeoutMs ?? 10_000;
    this.garbage = new PeerPenalties({ garbage: { limit: 3, windowMs: 10 * 60_000 }, refuseMs: 10 * 60_000, maxRefuseMs: 4 * 60 * 60_000, now: options.estimates?.now, ...options.garbage });
  }

  /** The view of a host's DHT. */
  static of(host: CapacityNode, options: SwarmViewOptions = {}): SwarmView {
    return new SwarmView((timeoutMs) => findAllRecords(host, { timeoutMs }), options);
  }

  /** The last completed sweep, if any. */
  get latest(): Sweep | undefined { return this.last; }

  /**
   * Sweeps the DHT now (concurrent callers share one sweep) and tells every listener before resolving. With
   * `acceptRecent`, a sweep completed less than `refreshMs` ago is answered instead (what the background
   * sweeps keep current anyway).
   */
  refresh(options: { acceptRecent?: boolean } = {}): Promise<Sweep> {
    if (options.acceptRecent && this.last && Date.now() - this.last.at < this.refreshMs) return Promise.resolve(this.last);
    this.inflight ??= this.sweep().finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  /** Calls `listener` after every sweep (and keeps background sweeps running while any listens); returns the unsubscribe. */
  subscribe(listener: (sweep: Sweep) => unknown): () => void {
    this.listeners.add(listener);
    this.timer ??= this.arm();
    return () => {
      this.listeners.delete(listener);
      if (!this.listeners.size && this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    };
  }

  /** The estimate of a peer (created from its advertised GFLOP/s at first sight). */
  estimateOf(peerId: string, advertisedGflops?: number): PeerEstimate {
    return this.estimates.get(peerId, advertisedGflops);
  }

  /** A reply from a peer: wall time of the call, its queue and compute time, the FLOPs it ran, the bytes it moved. Clears its ban. */
  reportReply(peerId: string, wallMs: number, queueMs: number, computeMs: number, flops: number, bytes = 0): void {
    this.estimates.recordReply(peerId, wallMs, queueMs, computeMs, flops, bytes);
  }

  /** A round trip to a peer measured by this client (a ping), never by the peer. */
  reportRoundTrip(peerId: string, rttMs: number): void {
    this.estimates.recordRoundTrip(peerId, rttMs);
  }

  /** A peer failed, stalled or would not open a session: banned for every session of this process (back-off). */
  reportFailure(peerId: string): void {
    this.estimates.recordFailure(peerId);
  }

  isBanned(peerId: string): boolean {
    return this.estimates.isBanned(peerId);
  }

  /**
   * A server sent a garbage reply (net/exec/garbage-reply.ts): past the limit its records are ignored by every
   * sweep and it is excluded from routing until the back-off ends (a warn line says so).
   */
  reportGarbage(peerId: string, what: string): void {
    const penalty = this.garbage.record(peerId, 'garbage');
    if (!penalty) return;
    const forMs = Math.max(0, penalty.until - (this.options.estimates?.now ?? Date.now)());
    this.estimates.condemn(peerId, forMs);
    this.options.logger?.warn({ peer: peerId, count: penalty.count, repeat: penalty.repeat, last: what },
      `server ${peerId} sent ${penalty.count} garbage replies: its records are ignored and it is not routed to for ${Math.round(forMs / 1000)} s`);
  }

  /**
   * A route over `discovery`'s hosts of the fragments [from, to): hosts refused for their price are no
   * candidates, banned peers are excluded, and among the rest routing weighs each one's estimated time,
   * load (throughput mode) and price.
   */
  async planRoute(discovery: ModelDiscovery, ask: RouteAsk): Promise<RoutePlan> {
    const live = !ask.lookAgain && discovery.current.length ? discovery.current : await discovery.refresh();
    // Hosts whose price the limits refuse are not candidates at all (issue 13: a price is the host's own claim).
    const { spans, refused } = admissibleSpans(live, ask.priceLimits ?? DEFAULT_PRICE_LIMITS, ask.costs.length);
    const servers = spans.map((s) => this.serverEstimate(s));
    try {
      // Throughput mode even for decode: it weighs each server's queue and the calls already in flight from
      // this process's other sessions, so concurrent sessions spread over replicas instead of herding onto
      // the one fastest chain (what the swarm simulator showed latency mode doing under load).
      const routeWithout = (exclude: Set<string>): ReturnType<typeof findRoute> => findRoute(ask.costs, servers, {
        from: ask.from, to: ask.to, tokens: ask.tokens, mode: 'throughput', exclude, msPerPriceUnit: priceWeight(servers),
      });
      const banned = this.estimates.banned();
      let route: ReturnType<typeof findRoute>;
      try {
        route = routeWithout(banned);
      } catch (err) {
        if (!(err instanceof NoRouteError)) throw err;
        route = this.routeDespiteBans(routeWithout, banned, ask.keepBanned) ?? (() => { throw err; })();
      }
      const calls = route.stages.map((s) => s.calls[0]).map((call) => ({
        ...call, hosted: spans.find((s) => s.peerId === call.peerId && s.start <= call.start && call.end <= s.end)!,
      }));
      return { calls, estimatedMs: route.estimatedMs };
    } catch (err) {
      if (err instanceof NoRouteError) return { unroutable: err, refused: refused.get(err.fragment) };
      throw err;
    }
  }

  /**
   * A failure's ban steers routing around a host for a while; it is no verdict. When the bans leave a fragment
   * with no host at all (on a loaded machine every host of a fragment can time out once, and honest requests
   * then got 503 "no live supplier hosts" with every supplier alive), the banned hosts are let back one at a
   * time, the soonest-ending ban first, until a route exists. Condemned hosts (wrong outputs, garbage replies)
   * stay out, and so do the hosts that failed this caller already (`keepBanned`: a session tries a banned host
   * once, so hosts that are really gone still end in "no live server"). Undefined when no route is found.
   */
  private routeDespiteBans<T>(routeWithout: (exclude: Set<string>) => T, banned: Set<string>, keepBanned?: ReadonlySet<string>): T | undefined {
    const liftable = [...banned].filter((id) => !this.estimates.isCondemned(id) && !keepBanned?.has(id))
      .sort((a, b) => this.estimates.get(a).bannedUntil - this.estimates.get(b).bannedUntil);
    const exclude = new Set(banned);
    for (const id of liftable) {
      exclude.delete(id);
      try {
        const route = routeWithout(exclude);
        this.options.logger?.info({ lifted: [...banned].filter((b) => !exclude.has(b)) }, 'every host of a fragment was banned after failures: routing to banned hosts again');
        return route;
      } catch (err) {
        if (!(err instanceof NoRouteError)) throw err;
      }
    }
    return undefined;
  }

  /** Stops the background sweeps (a sweep under way still ends). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.listeners.clear();
  }

  private serverEstimate(span: HostedSpan): ServerEstimate {
    const e = this.estimates.get(span.peerId, span.gflops);
    return {
      peerId: span.peerId, start: span.start, end: span.end, secondsPerFlop: e.secondsPerFlop, rttMs: e.rttMs,
      bandwidthBytesPerS: 1 / e.secondsPerByte, queueMs: e.queueMs, inflight: e.inflight, capacity: 4, pricePerGflop: Number(span.pricePerGflop) || 0,
    };
  }

  private async sweep(): Promise<Sweep> {
    const number = ++this.sweeps;
    try {
      // records of servers that kept sending garbage are ignored until their back-off ends
      const records = (await this.source(this.lookupTimeoutMs)).filter((r) => !r.withdrawn && !this.garbage.isRefused(r.peerId));
      const sweep: Sweep = { number, records, at: Date.now() };
      if (!this.last || this.last.number < number) this.last = sweep;
      await Promise.all([...this.listeners].map(async (listener) => {
        try {
          await listener(sweep);
        } catch (err) {
          this.options.logger?.warn({ err: (err as Error).message }, 'a swarm view listener failed');
        }
      }));
      return sweep;
    } finally {
      // The background sweep waits a full period after the last sweep, whoever asked for it.
      if (this.timer) { clearTimeout(this.timer); this.timer = this.arm(); }
    }
  }

  private arm(): ReturnType<typeof setTimeout> | undefined {
    if (this.closed || !this.listeners.size) return undefined;
    const timer = setTimeout(() => {
      this.timer = undefined;
      void this.refresh().catch((err: unknown) => this.options.logger?.debug({ err: (err as Error).message }, 'background sweep failed'))
        .finally(() => { this.timer ??= this.arm(); });
    }, this.refreshMs);
    timer.unref?.();
    return timer;
  }
}
