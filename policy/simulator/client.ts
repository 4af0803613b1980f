/**
 * The client side: gateways that open inference sessions (Petals' InferenceSession, DESIGN "Sessions").
 * A session routes its chain once with the real `findRoute` (or the random baseline), runs a P-token
 * prefill and N one-token steps through it (a star: the gateway relays every hop), learns RTT, speed and
 * queueing of each server from its replies (EMA), and on a failed or timed-out call bans the server,
 * re-routes the failed span from the failed fragment and replays the session's history into the fresh
 * servers as one prefill-sized step. A request fails only when some fragment has no server left to try
 * (NoRouteError), or after `maxAttempts` consecutive failures at one point of the chain.
 */
import { findRoute, NoRouteError, type Route, type ServerEstimate } from '../routing.js';
import type { SimContext } from './context.js';
import type { EventQueue } from './event-queue.js';
import { randomRoute } from './random-route.js';
import { exponential, logNormal, uniform, weightedIndex } from './random.js';
import { JOB_ARRIVE, JOB_FINISH, KV_PENALTY_MS, type Estimate, type Job, type RecordEstimate, type SimPeer, type Swarm } from './swarm.js';

const CALL_REPLY = 2;
const CALL_ERROR = 3;
const CALL_TIMEOUT = 4;
const CALL_FULL = 5;

export interface RequestFailure {
  requestId: number;
  atS: number;
  /** The fragment the request could not get past. */
  fragment: number;
  /** 'no-route': no listed server hosts it; 'attempts': every try there failed. */
  reason: 'no-route' | 'attempts';
}

interface Link {
  peer: SimPeer;
  start: number;
  end: number;
  incarnation: number;
  /** No call has succeeded yet: the next one carries the whole history (replay) and reserves KV. */
  fresh: boolean;
  /** The server granted this session's KV reservation. */
  reserved: boolean;
}

interface Session {
  id: number;
  gw: Gateway;
  arrivalMs: number;
  chain: Link[];
  /** Positions every server of the chain has processed (the client's single source of truth). */
  pos: number;
  /** 0: prefill; 1..N: decode steps. */
  step: number;
  link: number;
  /** The boundary the current step has reached. */
  j: number;
  attempts: number;
  firstTokenMs: number;
  lastTokenMs: number;
  /** Prompt plus new tokens: the KV each server reserves for the session. */
  maxLength: number;
  /** A fragment only banned servers hosted at the last routing (reported if the request fails). */
  stuckAt?: number;
  /** The last failed call was a refusal for want of KV room (its repair is a re-route, not a failover). */
  full: boolean;
}

interface Gateway {
  index: number;
  region: number;
  accessMs: number;
  est: Map<string, ClientEstimate>;
  bans: Map<string, { until: number; strikes: number }>;
  /** Mirrors swarm.routable index for index: the gateway's estimate of each server, or its record's defaults. */
  view: ServerEstimate[];
  viewVersion: number;
  /** Position in the swarm's change log the mirror has applied up to. */
  logPos: number;
}

export class Clients {
  readonly ttftMs: number[] = [];
  readonly decodeMsPerToken: number[] = [];
  readonly failures: RequestFailure[] = [];
  private readonly gateways: Gateway[] = [];
  /** Sessions neither completed nor failed. */
  private readonly active = new Set<Session>();
  private nextRequest = 0;

  constructor(private readonly ctx: SimContext, private readonly swarm: Swarm) {
    const { cfg, rng } = ctx;
    for (let i = 0; i < cfg.load.clients; i++) {
      this.gateways.push({
        index: i, region: weightedIndex(rng.clients, cfg.network.regions.map((r) => r.weight)), accessMs: 1,
        est: new Map(), bans: new Map(), view: [], viewVersion: -1, logPos: -1,
      });
    }
  }

  swarmOf(): Swarm {
    return this.swarm;
  }

  start(): void {
    const { cfg, queue, rng } = this.ctx;
    if (cfg.load.requestsPerS > 0 && this.gateways.length > 0) {
      const next = (): void => {
        queue.after(exponential(rng.arrivals, 1000 / cfg.load.requestsPerS), () => {
          this.open(this.gateways[Math.floor(rng.arrivals() * this.gateways.length)]);
          next();
        });
      };
      next();
    }
    if (cfg.routing.policy === 'estimates' && cfg.routing.pingSample > 0) {
      for (const gw of this.gateways) {
        const ping = (): void => {
          this.ping(gw);
          queue.after(uniform(rng.ping, 0.5, 1.5) * cfg.routing.pingIntervalS * 1000, ping);
        };
        queue.after(uniform(rng.ping, 0, 1) * 1000, ping);
      }
    }
  }

  /** One-way delay client ↔ server for one message: backbone + last miles, jitter, rare spikes. */
  private oneWay(gw: Gateway, p: SimPeer): number {
    const net = this.ctx.cfg.network;
    const r = this.ctx.rng.net;
    const base = (net.regionRttMs[gw.region][p.region] + gw.accessMs + p.accessMs) / 2;
    const spike = r() < net.spikeProbability ? exponential(r, net.spikeMeanMs) : 0;
    return base * logNormal(r, 1, net.jitterSigma) + spike;
  }

  /** Petals' ping aggregator: measure the round trip to a few random servers. */
  private ping(gw: Gateway): void {
    const { rng, counters, cfg } = this.ctx;
    const list = this.swarm.routable;
    for (let i = 0; i < cfg.routing.pingSample && list.length > 0; i++) {
      const p = list[Math.floor(rng.ping() * list.length)];
      counters.pings++;
      if (p.crashed) { this.ban(gw, p); continue; }
      const net = cfg.network;
      const rtt = (net.regionRttMs[gw.region][p.region] + gw.accessMs + p.accessMs) * logNormal(rng.ping, 1, net.jitterSigma);
      const e = this.estimate(gw, p);
      e.rttMs = e.learned ? e.rttMs + cfg.routing.emaAlpha * (rtt - e.rttMs) : rtt;
      e.learned = true;
    }
  }

  /** The gateway's own estimate of p (created from p's record on first use). */
  private estimate(gw: Gateway, p: SimPeer): ClientEstimate {
    let e = gw.est.get(p.peerId);
    if (!e) {
      e = new ClientEstimate(p.defaults, this.ctx.queue);
      gw.est.set(p.peerId, e);
      this.refreshView(gw);
      if (p.routableAt >= 0) gw.view[p.routableAt] = e;
    }
    return e;
  }

  /** Brings the gateway's mirror of swarm.routable up to date from the change log (or rebuilds it). */
  private refreshView(gw: Gateway): void {
    const sw = this.swarm;
    if (gw.viewVersion === sw.version) return;
    const entry = (p: SimPeer): ServerEstimate => {
      const e = gw.est.get(p.peerId);
      if (!e) return p.defaults;
      e.start = p.start;
      e.end = p.end;
      return e;
    };
    const view = gw.view;
    if (gw.logPos < sw.logBase) {
      view.length = 0;
      for (const p of sw.routable) view.push(entry(p));
    } else {
      for (let i = gw.logPos - sw.logBase; i < sw.log.length; i++) {
        const { peer, removedAt } = sw.log[i];
        if (peer) { view.push(entry(peer)); continue; }
        const last = view.pop()!;
        if (removedAt < view.length) view[removedAt] = last;
      }
    }
    gw.logPos = sw.logBase + sw.log.length;
    gw.viewVersion = sw.version;
  }

  private ban(gw: Gateway, p: SimPeer): void {
    const now = this.ctx.queue.now;
    const b = gw.bans.get(p.peerId) ?? { until: 0, strikes: 0 };
    if (b.until <= now) {
      b.until = now + this.ctx.cfg.routing.banBaseS * 1000 * 2 ** b.strikes;
      b.strikes++;
    }
    gw.bans.set(p.peerId, b);
  }

  /** Routes [from, to) over the gateway's view; bans are ignored when honouring them leaves a fragment uncovered. */
  private route(s: Session, from: number, to: number): Link[] {
    const gw = s.gw;
    this.refreshView(gw);
    const now = this.ctx.queue.now;
    let exclude: Set<string> | undefined;
    for (const [id, b] of gw.bans) {
      if (b.until > now) (exclude ??= new Set()).add(id);
      else if (!this.swarm.byId.get(id)?.listed) gw.bans.delete(id);
    }
    let route: Route;
    try {
      route = this.policyRoute(gw, from, to, exclude);
    } catch (e) {
      if (!(e instanceof NoRouteError) || !exclude) throw e;
      // Only banned servers host e.fragment: try them anyway (hivemind PR #197), remembering where it was stuck.
      s.stuckAt = e.fragment;
      route = this.policyRoute(gw, from, to, undefined);
    }
    return route.stages.map(({ calls: [c] }) => {
      const peer = this.swarm.byId.get(c.peerId)!;
      return { peer, start: c.start, end: c.end, incarnation: peer.incarnation, fresh: true, reserved: false };
    });
  }

  private policyRoute(gw: Gateway, from: number, to: number, exclude: Set<string> | undefined): Route {
    const { cfg, frags, rng } = this.ctx;
    if (cfg.routing.policy === 'random') return randomRoute(gw.view, from, to, rng.route, exclude);
    return findRoute(frags, gw.view, { from, to, tokens: 1, mode: cfg.routing.mode, exclude });
  }

  /** A request arrives at a gateway: route the chain, then prefill and decode. */
  private open(gw: Gateway): void {
    this.ctx.counters.arrived++;
    const s: Session = { id: this.nextRequest++, gw, arrivalMs: this.ctx.queue.now, chain: [], pos: 0, step: 0, link: 0, j: 0, attempts: 0, firstTokenMs: 0, lastTokenMs: 0, maxLength: this.ctx.cfg.load.promptTokens + this.ctx.cfg.load.newTokens, full: false };
    this.active.add(s);
    this.establish(s);
  }

  private establish(s: Session): void {
    try {
      s.chain = this.route(s, 0, this.swarm.k);
      this.ctx.counters.chains++;
      this.ctx.counters.chainLinks += s.chain.length;
    } catch (e) {
      if (!(e instanceof NoRouteError)) throw e;
      this.retryLater(s, e.fragment, 'no-route', () => this.establish(s));
      return;
    }
    s.link = 0;
    s.j = 0;
    this.next(s);
  }

  private retryLater(s: Session, fragment: number, reason: RequestFailure['reason'], again: () => void): void {
    s.attempts++;
    if (s.attempts >= this.ctx.cfg.routing.maxAttempts) { this.fail(s, fragment, reason); return; }
    // hivemind's back-off: retry at once, then 1 s, 2 s, 4 s ... capped at 60 s.
    const delay = s.attempts <= 1 ? 0 : Math.min(1000 * 2 ** (s.attempts - 2), 60_000);
    this.ctx.queue.after(delay, again);
  }

  private next(s: Session): void {
    if (s.link < s.chain.length) this.call(s);
    else this.stepDone(s);
  }

  private call(s: Session): void {
    const { cfg, queue, counters, flopsPrefix } = this.ctx;
    const l = s.chain[s.link];
    const p = l.peer;
    const stepTokens = s.step === 0 ? cfg.load.promptTokens : 1;
    const tokens = l.fresh ? s.pos + stepTokens : stepTokens;
    if (l.fresh && s.pos > 0) { counters.replays++; counters.replayTokens += s.pos; }
    const e = this.estimate(s.gw, p);
    const bytes = tokens * cfg.model.activationBytesPerToken;
    const flops = (flopsPrefix[l.end] - flopsPrefix[l.start]) * tokens;
    const estTransferMs = ((2 * bytes) / e.bandwidthBytesPerS) * 1000;
    const predicted = e.rttMs + estTransferMs + flops * (tokens === 1 ? e.secondsPerFlop : e.prefillSecondsPerFlop) * 1000 + e.ownQueueMs;
    const deadline = Math.max(cfg.routing.deadlineMinMs, cfg.routing.deadlineFactor * predicted);
    e.inflight++;
    const c = new Call(this, s, l, e, tokens, flops, estTransferMs, (bytes / p.bandwidthBytesPerS) * 1000, queue.now);
    queue.fire(this.oneWay(s.gw, p) + c.transferMs, c, JOB_ARRIVE);
    queue.fire(deadline, c, CALL_TIMEOUT);
  }

  /** How a call ended, as the client sees it (each call settles once). */
  settled(c: Call, kind: number): void {
    const { queue, counters } = this.ctx;
    const { session: s, link: l, est: e } = c;
    e.inflight--;
    if (kind === CALL_REPLY) {
      this.learn(e, c.serverMs, c.startedMs - c.arrivedMs, queue.now - c.sentMs - c.estTransferMs, c.flops, c.tokens);
      s.gw.bans.delete(l.peer.peerId);
      l.fresh = false;
      s.j = l.end;
      s.link++;
      s.attempts = 0;
      s.stuckAt = undefined;
      this.next(s);
      return;
    }
    if (kind === CALL_FULL) {
      // Not a fault: the server is healthy but has no KV room. Penalise it in this gateway's routing until
      // its record could say otherwise; a ban would be lifted by the next success of another session there.
      e.kvFullUntilMs = queue.now + Math.max(10, this.ctx.cfg.churn.loadAnnounceS) * 1000;
      s.full = true;
    } else {
      s.full = false;
      if (kind === CALL_TIMEOUT) {
        counters.timeouts++;
        if (!l.peer.crashed) counters.falseTimeouts++;
      }
      counters.callErrors++;
      this.ban(s.gw, l.peer);
    }
    this.retryLater(s, s.stuckAt ?? s.j, 'attempts', () => this.repair(s));
  }

  /** Return leg of an answer: the reply (with the output rows) or the refusal, as a fired event on the call. */
  answered(c: Call, ok: boolean, refused?: 'full'): void {
    const back = this.oneWay(c.session.gw, c.peer);
    if (ok) this.ctx.queue.fire(back + c.transferMs, c, CALL_REPLY);
    else this.ctx.queue.fire(back, c, refused === 'full' ? CALL_FULL : CALL_ERROR);
  }

  /** Learns as the grid client does (policy/estimates.ts): rtt from wall time minus server, queue and transfer time; speed per FLOP; queue (EMA). */
  private learn(e: ClientEstimate, serverMs: number, queueMs: number, wallMs: number, flops: number, tokens: number): void {
    const a = this.ctx.cfg.routing.emaAlpha;
    const rtt = Math.max(0, wallMs - serverMs - queueMs);
    const spf = serverMs / 1000 / flops;
    if (!e.learned) { e.rttMs = rtt; e.ownQueueMs = queueMs; e.learned = true; } else {
      e.rttMs += a * (rtt - e.rttMs);
      e.ownQueueMs += a * (queueMs - e.ownQueueMs);
    }
    // One-token steps teach the decode rate, longer ones (prefill, replay) the prefill rate.
    if (tokens === 1) e.secondsPerFlop += a * (spf - e.secondsPerFlop);
    else e.prefillSecondsPerFlop += a * (spf - e.prefillSecondsPerFlop);
  }

  /** Petals' repair: re-route the failed link's range from the failed fragment; the new servers replay. */
  private repair(s: Session): void {
    const l = s.chain[s.link];
    let links: Link[];
    try {
      links = this.route(s, s.j, l.end);
    } catch (e) {
      if (!(e instanceof NoRouteError)) throw e;
      this.retryLater(s, e.fragment, 'no-route', () => this.repair(s));
      return;
    }
    this.drop(l);
    s.chain.splice(s.link, 1, ...links);
    if (s.full) this.ctx.counters.kvReroutes++;
    else this.ctx.counters.failovers++;
    this.call(s);
  }

  /**
   * Optional (routing.rerouteEachStep): route the whole chain again before a decode step. A new link served
   * by a server that already holds this session's KV for a superset of its range keeps it; any other is
   * fresh and must be brought up to date by a replay.
   */
  private reroute(s: Session): void {
    let links: Link[];
    try {
      links = this.route(s, 0, this.swarm.k);
    } catch (e) {
      if (e instanceof NoRouteError) return; // keep the current chain; a failing call will repair it
      throw e;
    }
    const kept = new Set<Link>();
    const chain = links.map((n) => {
      const old = s.chain.find((o) => o.peer === n.peer && o.incarnation === n.incarnation && !o.fresh && o.start <= n.start && n.end <= o.end);
      if (!old) return n;
      kept.add(old);
      return { ...n, fresh: false, reserved: old.reserved };
    });
    for (const o of s.chain) if (!kept.has(o)) this.drop(o);
    s.chain = chain;
  }

  private stepDone(s: Session): void {
    const { cfg, queue, counters } = this.ctx;
    s.pos += s.step === 0 ? cfg.load.promptTokens : 1;
    s.step++;
    const measured = s.arrivalMs >= cfg.warmupS * 1000;
    if (queue.now >= cfg.warmupS * 1000) counters.tokens++;
    if (s.step === 1) s.firstTokenMs = queue.now;
    s.lastTokenMs = queue.now;
    if (s.step <= cfg.load.newTokens) {
      s.link = 0;
      s.j = 0;
      if (cfg.routing.rerouteEachStep) this.reroute(s);
      this.next(s);
      return;
    }
    counters.completed++;
    this.active.delete(s);
    for (const l of s.chain) this.drop(l);
    if (measured) {
      this.ttftMs.push(s.firstTokenMs - s.arrivalMs);
      this.decodeMsPerToken.push(cfg.load.newTokens > 0 ? (queue.now - s.firstTokenMs) / cfg.load.newTokens : 0);
    }
  }

  /** The session closes its stream to a server: the server frees the session's KV. */
  private drop(l: Link): void {
    if (!l.reserved) return;
    l.reserved = false;
    const { cfg } = this.ctx;
    this.swarm.release(l.peer, l.incarnation, cfg.load.promptTokens + cfg.load.newTokens);
  }

  /**
   * Sessions still decoding at the horizon (arrived after warm-up, at least one decode step done): their
   * ms per token so far. Leaving them out would keep only the requests fast enough to finish in time.
   */
  unfinishedDecodeMsPerToken(): number[] {
    const out: number[] = [];
    for (const s of this.active) {
      if (s.arrivalMs >= this.ctx.cfg.warmupS * 1000 && s.step >= 2) out.push((s.lastTokenMs - s.firstTokenMs) / (s.step - 1));
    }
    return out;
  }

  private fail(s: Session, fragment: number, reason: RequestFailure['reason']): void {
    this.ctx.counters.failed++;
    this.active.delete(s);
    for (const l of s.chain) this.drop(l);
    this.failures.push({ requestId: s.id, atS: this.ctx.queue.now / 1000, fragment, reason });
  }
}

/** One call of a session to one server: the job the server runs and the client's pending request. */
class Call implements Job {
  readonly peer: SimPeer;
  readonly incarnation: number;
  readonly start: number;
  readonly end: number;
  arrivedMs = 0;
  startedMs = 0;
  serverMs = 0;
  cancelled = false;
  readonly reserveTokens: number;
  private done = false;

  constructor(
    private readonly clients: Clients,
    readonly session: Session,
    readonly link: Link,
    readonly est: ClientEstimate,
    readonly tokens: number,
    readonly flops: number,
    readonly estTransferMs: number,
    readonly transferMs: number,
    readonly sentMs: number,
  ) {
    this.peer = link.peer;
    this.incarnation = link.incarnation;
    this.start = link.start;
    this.end = link.end;
    this.reserveTokens = link.fresh && !link.reserved ? session.maxLength : 0;
  }

  reserved(): void {
    // A call the client already gave up on: its session will not use the reservation.
    if (this.done) this.clients.swarmOf().release(this.peer, this.incarnation, this.reserveTokens);
    else this.link.reserved = true;
  }

  answer(ok: boolean, refused?: 'full'): void {
    this.clients.answered(this, ok, refused);
  }

  fire(kind: number): void {
    if (kind === JOB_ARRIVE) { this.clients.swarmOf().arrive(this); return; }
    if (kind === JOB_FINISH) { this.clients.swarmOf().finish(this); return; }
    if (this.done) return;
    this.done = true;
    this.clients.settled(this, kind);
  }
}

/**
 * A gateway's own estimate of one server, learned from its replies and pings; the KV-room penalty comes
 * from the server's record (announced), so a full server is avoided even by clients that know it well.
 */
class ClientEstimate implements Estimate {
  readonly peerId: string;
  start: number;
  end: number;
  secondsPerFlop: number;
  prefillSecondsPerFlop: number;
  rttMs: number;
  bandwidthBytesPerS: number;
  inflight = 0;
  capacity: number;
  learned = false;
  /** Queueing delay this gateway saw (EMA), ms. */
  ownQueueMs: number;
  /** The server refused this gateway a session for want of KV room: penalised until then. */
  kvFullUntilMs = 0;

  constructor(private readonly record: RecordEstimate, private readonly clock: EventQueue) {
    this.peerId = record.peerId;
    this.start = record.start;
    this.end = record.end;
    this.secondsPerFlop = record.secondsPerFlop;
    this.prefillSecondsPerFlop = record.prefillSecondsPerFlop;
    this.rttMs = record.rttMs;
    this.bandwidthBytesPerS = record.bandwidthBytesPerS;
    this.capacity = record.capacity;
    this.ownQueueMs = record.queueMs - record.kvPenaltyMs;
  }

  get queueMs(): number {
    return this.ownQueueMs + (this.kvFullUntilMs > this.clock.now ? KV_PENALTY_MS : this.record.kvPenaltyMs);
  }
}
