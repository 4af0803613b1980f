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
import { randomRoute } from './random-route.js';
import { exponential, logNormal, uniform, weightedIndex } from './random.js';
import { JOB_ARRIVE, JOB_FINISH, type Estimate, type Job, type SimPeer, type Swarm } from './swarm.js';

const CALL_REPLY = 2;
const CALL_ERROR = 3;
const CALL_TIMEOUT = 4;

export interface RequestFailure {
  requestId: number;
  atS: number;
  /** The fragment the request could not get past. */
  fragment: number;
  /** 'no-route': no listed server hosts it; 'attempts': every try there failed. */
  reason: 'no-route' | 'attempts';
}

interface Link { peer: SimPeer; start: number; end: number; incarnation: number; fresh: boolean }

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
}

interface Gateway {
  index: number;
  region: number;
  accessMs: number;
  est: Map<string, Estimate>;
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
  private estimate(gw: Gateway, p: SimPeer): Estimate {
    let e = gw.est.get(p.peerId);
    if (!e) {
      e = { ...p.defaults, inflight: 0 };
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
  private route(gw: Gateway, from: number, to: number): Link[] {
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
      route = this.policyRoute(gw, from, to, undefined);
    }
    return route.stages.map(({ calls: [c] }) => {
      const peer = this.swarm.byId.get(c.peerId)!;
      return { peer, start: c.start, end: c.end, incarnation: peer.incarnation, fresh: true };
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
    const s: Session = { id: this.nextRequest++, gw, arrivalMs: this.ctx.queue.now, chain: [], pos: 0, step: 0, link: 0, j: 0, attempts: 0, firstTokenMs: 0, lastTokenMs: 0 };
    this.active.add(s);
    this.establish(s);
  }

  private establish(s: Session): void {
    try {
      s.chain = this.route(s.gw, 0, this.swarm.k);
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
    const predicted = e.rttMs + estTransferMs + flops * (tokens === 1 ? e.secondsPerFlop : e.prefillSecondsPerFlop) * 1000 + e.queueMs;
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
      this.next(s);
      return;
    }
    if (kind === CALL_TIMEOUT) {
      counters.timeouts++;
      if (!l.peer.crashed) counters.falseTimeouts++;
    }
    counters.callErrors++;
    this.ban(s.gw, l.peer);
    this.retryLater(s, s.j, 'attempts', () => this.repair(s));
  }

  /** Return leg of an answer: the reply (with the output rows) or the refusal, as a fired event on the call. */
  answered(c: Call, ok: boolean): void {
    const back = this.oneWay(c.session.gw, c.peer);
    if (ok) this.ctx.queue.fire(back + c.transferMs, c, CALL_REPLY);
    else this.ctx.queue.fire(back, c, CALL_ERROR);
  }

  /** notes/scheduling.md §3.4: rtt from wall time minus server, queue and transfer time; speed per FLOP; queue (EMA). */
  private learn(e: Estimate, serverMs: number, queueMs: number, wallMs: number, flops: number, tokens: number): void {
    const a = this.ctx.cfg.routing.emaAlpha;
    const rtt = Math.max(0, wallMs - serverMs - queueMs);
    const spf = serverMs / 1000 / flops;
    if (!e.learned) { e.rttMs = rtt; e.queueMs = queueMs; e.learned = true; } else {
      e.rttMs += a * (rtt - e.rttMs);
      e.queueMs += a * (queueMs - e.queueMs);
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
      links = this.route(s.gw, s.j, l.end);
    } catch (e) {
      if (!(e instanceof NoRouteError)) throw e;
      this.retryLater(s, e.fragment, 'no-route', () => this.repair(s));
      return;
    }
    s.chain.splice(s.link, 1, ...links);
    this.ctx.counters.failovers++;
    this.call(s);
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
      this.next(s);
      return;
    }
    counters.completed++;
    this.active.delete(s);
    if (measured) {
      this.ttftMs.push(s.firstTokenMs - s.arrivalMs);
      this.decodeMsPerToken.push(cfg.load.newTokens > 0 ? (queue.now - s.firstTokenMs) / cfg.load.newTokens : 0);
    }
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
  private done = false;

  constructor(
    private readonly clients: Clients,
    readonly session: Session,
    readonly link: Link,
    readonly est: Estimate,
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
  }

  answer(ok: boolean): void {
    this.clients.answered(this, ok);
  }

  fire(kind: number): void {
    if (kind === JOB_ARRIVE) { this.clients.swarmOf().arrive(this); return; }
    if (kind === JOB_FINISH) { this.clients.swarmOf().finish(this); return; }
    if (this.done) return;
    this.done = true;
    this.clients.settled(this, kind);
  }
}
