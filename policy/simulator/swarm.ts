/**
 * The supplier side of the simulation: peers with GPUs, links and lifetimes; placement with the real
 * `chooseSpan` on the swarm's coverage when they join; departures (graceful, or crashes whose records
 * linger until they expire); periodic rebalancing with the real `shouldMove`, confirmed on consecutive
 * checks; and each server's step queue (a server runs as many steps at once as it has slots, FIFO).
 */
import { chooseSpan, shouldMove, spanLengthAt } from '../placement.js';
import type { ServerEstimate } from '../routing.js';
import type { SimContext } from './context.js';
import type { Fireable } from './event-queue.js';
import type { GpuClass } from './hardware.js';
import { exponential, logNormal, uniform, weightedIndex } from './random.js';

/** Petals' routing penalty for a server without KV room for the session, ms. */
export const KV_PENALTY_MS = 10_000;

export type PeerState = 'waiting' | 'joining' | 'online' | 'gone';

/** What a client keeps about a server: the routing estimate plus the prefill rate it learns separately. */
export interface Estimate extends ServerEstimate {
  /** Seconds per FLOP for multi-token steps (prefill, replay); decode uses secondsPerFlop. */
  prefillSecondsPerFlop: number;
  /** Whether any sample has been taken (false: the shared defaults from the record). */
  learned: boolean;
}

/** What a server's record says, as a routing estimate (rates from its self-test, load as last announced). */
export interface RecordEstimate extends Estimate {
  /** Petals' routing penalty when the server announced no KV room for another session (in queueMs too). */
  kvPenaltyMs: number;
}

export interface SimPeer {
  peerId: string;
  gpu: GpuClass;
  region: number;
  /** Last-mile round trip, ms. */
  accessMs: number;
  bandwidthBytesPerS: number;
  /** GPU memory offered for fragments, bytes. */
  memoryBytes: number;
  slots: number;
  /** True speed: seconds per FLOP when compute-bound, seconds per weight byte when bandwidth-bound. */
  secondsPerFlop: number;
  secondsPerByte: number;
  /** Span and the throughput it adds to each fragment of it (Petals' T_p from the self-test). */
  start: number;
  end: number;
  throughput: number;
  /**
   * Longest span it could host anywhere (for the rebalance pre-check). Not named maxLength: placement
   * reads PlacedServer.maxLength as a cap, and these objects are passed to shouldMove as they are.
   */
  longestSpan: number;
  state: PeerState;
  /** Its record is in the DHT (joining, online, or crashed and not yet expired). */
  listed: boolean;
  crashed: boolean;
  /** Bumped when it moves or leaves: sessions opened before fail. */
  incarnation: number;
  lifetimeMs: number;
  votes: number;
  /** The server's own EMA of queueing delay, ms (announced in its record). */
  queueEmaMs: number;
  /** KV-cache room left, in tokens of context per hosted fragment (Petals' cache_tokens_left). */
  kvTokensLeft: number;
  /** What a client that never measured it assumes (from its record). */
  defaults: RecordEstimate;
  // Server queue.
  busy: number;
  waiting: Job[];
  waitingHead: number;
  running: Job[];
  // Positions in the swarm's arrays (-1 when absent).
  listedAt: number;
  routableAt: number;
}

/** Event kinds a job's `fire` must route to the swarm: reaching the server, and the server finishing it. */
export const JOB_ARRIVE = 0;
export const JOB_FINISH = 1;

/** One call as the server sees it. */
export interface Job extends Fireable {
  peer: SimPeer;
  incarnation: number;
  start: number;
  end: number;
  tokens: number;
  arrivedMs: number;
  startedMs: number;
  /** Compute time once finished, ms. */
  serverMs: number;
  cancelled: boolean;
  /** KV tokens a session's first call reserves on the server (its max length), 0 on later calls. */
  reserveTokens: number;
  /** Called when the reservation is granted (at arrival). */
  reserved(): void;
  /** The server answers: `ok` with serverMs and startedMs − arrivedMs set, or a refusal. Never called when it crashed. */
  answer(ok: boolean, refused?: 'full'): void;
}

export interface CoverageSample {
  t: number;
  /** Online servers. */
  online: number;
  /** Coverage (throughput) of the least and the average fragment, over online servers. */
  min: number;
  mean: number;
  /** Online replicas of the least replicated fragment. */
  minReplicas: number;
}

export class Swarm {
  readonly k: number;
  /** Peers whose record is listed (placement sees these). */
  readonly listed: SimPeer[] = [];
  /** Listed and online: what clients route over (crashed ones stay until their record expires). */
  readonly routable: SimPeer[] = [];
  /** Bumped whenever `routable` changes (a moved peer leaves it and comes back). */
  version = 0;
  /**
   * Changes to `routable` since `logBase`, so a client's mirror of it can follow without a rebuild:
   * a peer pushed (its span may be new), or the entry at an index removed by swap-with-last.
   */
  readonly log: { peer: SimPeer | undefined; removedAt: number }[] = [];
  logBase = 0;
  readonly byId = new Map<string, SimPeer>();
  /** Coverage over listed peers (placement's view) and over live online peers (what is really served). */
  readonly tauListed: Float64Array;
  readonly tauLive: Float64Array;
  readonly replicas: Int32Array;
  /** Σ throughput × longest span over listed peers: an upper bound on the mean of tauListed × k. */
  private capacitySum = 0;
  private nextId = 0;
  readonly samples: CoverageSample[] = [];

  constructor(private readonly ctx: SimContext) {
    this.k = ctx.cfg.model.flopsPerToken.length;
    this.tauListed = new Float64Array(this.k);
    this.tauLive = new Float64Array(this.k);
    this.replicas = new Int32Array(this.k);
  }

  /** Places the initial peers one after another, online at t = 0, and starts churn and sampling. */
  start(): void {
    const { cfg, queue } = this.ctx;
    for (let i = 0; i < cfg.peers; i++) {
      const p = this.createPeer();
      const span = chooseSpan(this.tauListed, this.ctx.placement, p.memoryBytes);
      if (!span) { this.ctx.counters.joinsRejected++; continue; }
      this.setSpan(p, span.start, span.end);
      this.list(p);
      this.goOnline(p);
      this.scheduleLife(p);
    }
    const rate = cfg.churn.joinRatePerS ?? (Number.isFinite(cfg.churn.meanLifetimeS) ? cfg.peers / cfg.churn.meanLifetimeS : 0);
    if (rate > 0) {
      const next = (): void => {
        queue.after(exponential(this.ctx.rng.churn, 1000 / rate), () => { this.join(); next(); });
      };
      next();
    }
    const sample = (): void => { this.sample(); queue.after(cfg.sampleEveryS * 1000, sample); };
    sample();
    if (cfg.churn.loadAnnounceS > 0) {
      const announce = (): void => { this.announceLoad(); queue.after(cfg.churn.loadAnnounceS * 1000, announce); };
      announce();
    }
  }

  /** A new supplier: GPU, place, memory share, link, true and self-tested speed, lifetime. */
  private createPeer(): SimPeer {
    const { cfg, rng } = this.ctx;
    const r = rng.peers;
    const hw = cfg.hardware;
    const net = cfg.network;
    const gpu = hw.gpus[weightedIndex(r, hw.gpus.map((g) => g.weight))];
    const region = weightedIndex(r, net.regions.map((g) => g.weight));
    const share = uniform(r, hw.minShare, 1);
    const access = gpu.datacenter ? 1 : logNormal(r, net.homeAccessMs, net.homeAccessSigma);
    const mbit = gpu.datacenter ? net.datacenterBandwidthMbit : Math.min(1000, Math.max(10, logNormal(r, net.homeBandwidthMbit, net.homeBandwidthSigma)));
    const speed = logNormal(r, 1, hw.speedSigma);
    const selfTest = logNormal(r, 1, hw.selfTestSigma);
    const lifetimeMs = exponential(r, cfg.churn.meanLifetimeS * 1000);
    const memoryBytes = Math.max(0, (gpu.memoryGB * share - hw.reserveGB) * 1e9);
    const secondsPerFlop = 1 / (gpu.tflops * 1e12 * hw.flopsEfficiency * speed);
    const secondsPerByte = 1 / (gpu.memoryGBs * 1e9 * hw.bandwidthEfficiency * speed);
    const bandwidthBytesPerS = Math.min(mbit, net.clientBandwidthMbit) * 125_000;
    let longestSpan = 0;
    for (let s = 0; s < this.k; s++) longestSpan = Math.max(longestSpan, spanLengthAt(this.ctx.placement, s, memoryBytes));
    const k = this.k;
    const meanFlops = this.ctx.flopsPrefix[k] / k;
    const meanWeight = this.ctx.weightPrefix[k] / k;
    // Self-test (Petals' throughput.py): decode rate from one-token steps, prefill rate from big batches, link rate.
    const advDecode = (meanWeight * secondsPerByte * selfTest) / meanFlops;
    const advPrefill = secondsPerFlop * selfTest;
    const prefillRate = 1 / (advPrefill * meanFlops);
    const linkRate = bandwidthBytesPerS / cfg.model.activationBytesPerToken;
    const throughput = Math.min(prefillRate / ((longestSpan + 1) / 2), linkRate);
    const peerId = `peer-${String(this.nextId++).padStart(6, '0')}`;
    const p: SimPeer = {
      peerId, gpu, region, accessMs: access, bandwidthBytesPerS, memoryBytes, slots: gpu.slots, secondsPerFlop, secondsPerByte,
      start: 0, end: 0, throughput, longestSpan, state: 'waiting', listed: false, crashed: false, incarnation: 0, lifetimeMs, votes: 0, queueEmaMs: 0, kvTokensLeft: cfg.model.kvBudgetTokens,
      defaults: {
        peerId, start: 0, end: 0, secondsPerFlop: advDecode, prefillSecondsPerFlop: advPrefill, rttMs: cfg.routing.unknownRttMs,
        bandwidthBytesPerS, queueMs: 0, inflight: 0, capacity: gpu.slots, learned: false, kvPenaltyMs: 0,
      },
      busy: 0, waiting: [], waitingHead: 0, running: [], listedAt: -1, routableAt: -1,
    };
    this.byId.set(peerId, p);
    return p;
  }

  private scheduleLife(p: SimPeer): void {
    const { cfg, queue } = this.ctx;
    if (Number.isFinite(p.lifetimeMs)) queue.after(p.lifetimeMs, () => this.depart(p, this.ctx.rng.churn() < cfg.churn.crashFraction));
    if (cfg.rebalance.enabled) this.scheduleCheck(p);
  }

  /** A supplier arrives: waits a little (Petals' join jitter), picks its span, announces JOINING, loads, goes online. */
  private join(): void {
    const { cfg, queue, counters } = this.ctx;
    const p = this.createPeer();
    counters.joins++;
    queue.after(uniform(this.ctx.rng.churn, 0, cfg.churn.joinJitterS * 1000), () => {
      if (p.state !== 'waiting') return;
      const span = chooseSpan(this.tauListed, this.ctx.placement, p.memoryBytes);
      if (!span) { counters.joinsRejected++; p.state = 'gone'; return; }
      this.setSpan(p, span.start, span.end);
      this.list(p);
      p.state = 'joining';
      this.scheduleLife(p);
      this.load(p);
    });
  }

  private load(p: SimPeer): void {
    const { cfg, queue } = this.ctx;
    const bytes = this.ctx.weightPrefix[p.end] - this.ctx.weightPrefix[p.start];
    const inc = p.incarnation;
    queue.after(cfg.churn.startupS * 1000 + (bytes / cfg.churn.loadBytesPerS) * 1000, () => {
      if (p.state === 'joining' && p.incarnation === inc) this.goOnline(p);
    });
  }

  private setSpan(p: SimPeer, start: number, end: number): void {
    p.start = start;
    p.end = end;
    p.defaults.start = start;
    p.defaults.end = end;
  }

  private list(p: SimPeer): void {
    p.listed = true;
    p.listedAt = this.listed.length;
    this.listed.push(p);
    for (let j = p.start; j < p.end; j++) this.tauListed[j] += p.throughput;
    this.capacitySum += p.throughput * p.longestSpan;
  }

  private unlist(p: SimPeer): void {
    if (!p.listed) return;
    p.listed = false;
    removeAt(this.listed, p.listedAt, (q, i) => { q.listedAt = i; });
    p.listedAt = -1;
    for (let j = p.start; j < p.end; j++) this.tauListed[j] -= p.throughput;
    this.capacitySum -= p.throughput * p.longestSpan;
    this.unroute(p);
  }

  private goOnline(p: SimPeer): void {
    p.state = 'online';
    p.routableAt = this.routable.length;
    this.routable.push(p);
    this.changed(p, -1);
    for (let j = p.start; j < p.end; j++) { this.tauLive[j] += p.throughput; this.replicas[j]++; }
  }

  private unroute(p: SimPeer): void {
    if (p.routableAt < 0) return;
    const at = p.routableAt;
    removeAt(this.routable, at, (q, i) => { q.routableAt = i; });
    p.routableAt = -1;
    this.changed(undefined, at);
  }

  private changed(peer: SimPeer | undefined, removedAt: number): void {
    this.version++;
    // Keep the log short: clients that fell further behind than this rebuild their mirror.
    if (this.log.length > 2 * this.routable.length + 1024) {
      this.logBase += this.log.length;
      this.log.length = 0;
    }
    this.log.push({ peer, removedAt });
  }

  /** Stops serving: live coverage drops; queued and running work fails (graceful) or vanishes (crash). */
  private stopServing(p: SimPeer, crash: boolean): void {
    if (p.state === 'online') for (let j = p.start; j < p.end; j++) { this.tauLive[j] -= p.throughput; this.replicas[j]--; }
    p.incarnation++;
    const jobs = [...p.running, ...p.waiting.slice(p.waitingHead)];
    p.running = [];
    p.waiting = [];
    p.waitingHead = 0;
    p.busy = 0;
    p.kvTokensLeft = this.ctx.cfg.model.kvBudgetTokens;
    for (const job of jobs) {
      job.cancelled = true;
      if (!crash) job.answer(false);
    }
  }

  /** Leaves: gracefully (record withdrawn now) or by crashing (record lingers until it expires). */
  depart(p: SimPeer, crash: boolean): void {
    if (p.state === 'gone') return;
    const { cfg, queue, counters } = this.ctx;
    if (crash) counters.crashes++; else counters.leaves++;
    this.stopServing(p, crash);
    p.state = 'gone';
    if (crash) {
      p.crashed = true;
      // Its last announce was uniform in the past period; the record expires ttl after it.
      const linger = cfg.churn.recordTtlS - this.ctx.rng.churn() * Math.min(cfg.churn.announcePeriodS, cfg.churn.recordTtlS);
      queue.after(linger * 1000, () => this.unlist(p));
    } else {
      this.unlist(p);
    }
  }

  private scheduleCheck(p: SimPeer): void {
    const { cfg, queue } = this.ctx;
    queue.after(uniform(this.ctx.rng.rebalance, 0, 2 * cfg.rebalance.meanIntervalS * 1000), () => {
      if (p.state === 'gone') return;
      this.check(p);
      this.scheduleCheck(p);
    });
  }

  /** Petals' rebalance test, run only when it could possibly say yes (see below), confirmed on consecutive checks. */
  private check(p: SimPeer): void {
    const { cfg, counters } = this.ctx;
    if (p.state !== 'online') { p.votes = 0; return; }
    counters.rebalanceChecks++;
    // shouldMove moves only when before/after < q − ε, and `after` (a minimum of coverage after everyone
    // re-optimises) is at most its mean, at most Σ T_p × longest span / k. When before is already ≥ q × that
    // bound, shouldMove must say no: skip its O(servers × fragments) simulation.
    let before = Number.POSITIVE_INFINITY;
    for (let j = 0; j < this.k; j++) if (this.tauListed[j] < before) before = this.tauListed[j];
    const bound = (this.capacitySum / this.k) * (1 + 1e-9);
    if (before >= cfg.rebalance.q * bound) { p.votes = 0; return; }
    counters.fullMoveChecks++;
    const verdict = shouldMove(p, this.listed, this.ctx.placement, cfg.rebalance.q);
    if (!verdict.move || !verdict.target) { p.votes = 0; return; }
    if (++p.votes < cfg.rebalance.confirmations) return;
    p.votes = 0;
    this.move(p, verdict.target.start, verdict.target.end);
  }

  /** Unloads the span (its sessions fail), announces JOINING at the new one, loads, goes online. */
  private move(p: SimPeer, start: number, end: number): void {
    this.ctx.counters.moves++;
    this.stopServing(p, false);
    this.unlist(p);
    this.setSpan(p, start, end);
    this.list(p);
    p.state = 'joining';
    this.load(p);
  }

  /** A call reaches the server: refused when it left or moved, lost when it crashed, else queued. */
  arrive(job: Job): void {
    const p = job.peer;
    if (p.crashed) return;
    if (p.state !== 'online' || p.incarnation !== job.incarnation) { job.answer(false); return; }
    if (job.reserveTokens > 0) {
      // Petals' memory cache: a session reserves its max length up front, or is refused at once (alloc_timeout 0).
      if (p.kvTokensLeft < job.reserveTokens) { this.ctx.counters.kvRefusals++; job.answer(false, 'full'); return; }
      p.kvTokensLeft -= job.reserveTokens;
      job.reserved();
    }
    job.arrivedMs = this.ctx.queue.now;
    if (p.busy < p.slots) this.run(p, job);
    else p.waiting.push(job);
  }

  /** Gives back a session's KV reservation (the session ended or dropped this server), if the server still holds it. */
  release(p: SimPeer, incarnation: number, tokens: number): void {
    if (p.incarnation === incarnation && p.state === 'online') p.kvTokensLeft = Math.min(this.ctx.cfg.model.kvBudgetTokens, p.kvTokensLeft + tokens);
  }

  /**
   * Every online server refreshes the load in its record: what clients assume before they measure it
   * themselves. A server without KV room for one more session gets Petals' 10 s routing penalty, which
   * findRoute's inputs carry as queueing delay.
   */
  private announceLoad(): void {
    const { cfg } = this.ctx;
    const need = cfg.load.promptTokens + cfg.load.newTokens;
    for (const p of this.routable) {
      if (p.crashed) continue;
      p.defaults.kvPenaltyMs = p.kvTokensLeft < need ? KV_PENALTY_MS : 0;
      p.defaults.queueMs = p.queueEmaMs + p.defaults.kvPenaltyMs;
      p.defaults.inflight = p.busy + p.waiting.length - p.waitingHead;
    }
  }

  private run(p: SimPeer, job: Job): void {
    const { cfg, queue } = this.ctx;
    p.busy++;
    p.running.push(job);
    job.startedMs = queue.now;
    p.queueEmaMs += 0.2 * (job.startedMs - job.arrivedMs - p.queueEmaMs);
    const flops = this.ctx.flopsPrefix[job.end] - this.ctx.flopsPrefix[job.start];
    const bytes = this.ctx.weightPrefix[job.end] - this.ctx.weightPrefix[job.start];
    // Roofline: a one-token step reads every weight once; a long prefill is bound by FLOPs.
    const seconds = Math.max(job.tokens * flops * p.secondsPerFlop, bytes * p.secondsPerByte);
    job.serverMs = (cfg.hardware.callOverheadMs + seconds * 1000) * logNormal(this.ctx.rng.compute, 1, 0.05);
    queue.fire(job.serverMs, job, JOB_FINISH);
  }

  /** The server finished a job (the job's fire(JOB_FINISH) lands here). */
  finish(job: Job): void {
    if (job.cancelled) return;
    const p = job.peer;
    p.busy--;
    const i = p.running.indexOf(job);
    if (i >= 0) p.running.splice(i, 1);
    job.answer(true);
    if (p.waitingHead < p.waiting.length && p.busy < p.slots) {
      const next = p.waiting[p.waitingHead++];
      if (p.waitingHead > 64 && p.waitingHead * 2 > p.waiting.length) { p.waiting = p.waiting.slice(p.waitingHead); p.waitingHead = 0; }
      this.run(p, next);
    }
  }

  /** Peers whose span holds fragment j and that serve it now. */
  hostsOf(fragment: number): SimPeer[] {
    return this.routable.filter((p) => !p.crashed && p.start <= fragment && fragment < p.end);
  }

  sample(): void {
    let min = Number.POSITIVE_INFINITY;
    let sum = 0;
    let minReplicas = Number.POSITIVE_INFINITY;
    for (let j = 0; j < this.k; j++) {
      const t = Math.max(0, this.tauLive[j]);
      if (t < min) min = t;
      sum += t;
      if (this.replicas[j] < minReplicas) minReplicas = this.replicas[j];
    }
    let online = 0;
    for (const p of this.routable) if (!p.crashed) online++;
    this.samples.push({ t: this.ctx.queue.now / 1000, online, min, mean: sum / this.k, minReplicas });
  }
}

function removeAt<T>(list: T[], i: number, moved: (item: T, index: number) => void): void {
  const last = list.pop()!;
  if (i < list.length) { list[i] = last; moved(last, i); }
}
