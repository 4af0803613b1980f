/**
 * A discrete-event simulation of a gridpipe swarm serving one model, using the real placement
 * (`chooseSpan`, `shouldMove`) and routing (`findRoute`) code. Deterministic for a seed: the same
 * options give the same result (wall-clock figures, in `timing`, aside).
 *
 *   const result = simulate({ peers: 200, horizonS: 600, load: { requestsPerS: 2 } });
 *
 *   const sim = new Simulation({ seed: 7, churn: { meanLifetimeS: Infinity } });
 *   sim.at(60, (s) => s.kill(s.hostsOf(40)));   // scripted events
 *   const r = sim.run();
 */
import { resolveConfig, type SimConfig, type SimOptions } from './config.js';
import { makeContext, type SimContext } from './context.js';
import { EventQueue } from './event-queue.js';
import { Clients, type RequestFailure } from './client.js';
import { mean, percentile } from './stats.js';
import { Swarm, type CoverageSample, type SimPeer } from './swarm.js';

export interface Distribution { p50: number; p95: number; mean: number; count: number }

export interface SimResult {
  seed: number;
  peers: number;
  horizonS: number;
  warmupS: number;
  policy: SimConfig['routing']['policy'];
  requests: { arrived: number; completed: number; failed: number; unfinished: number };
  /** Tokens produced after warm-up (first token of each prefill, then one per decode step), and per second. */
  tokens: number;
  tokensPerS: number;
  /**
   * Per request arriving after warm-up: ms per decoded token, (last token − first token) / decode steps;
   * requests still decoding at the horizon count with their rate so far (`unfinishedInDecode` of them).
   */
  decodeMsPerToken: Distribution & { unfinishedInDecode: number };
  /** Time to first token (arrival to the end of prefill), ms. */
  ttftMs: Distribution;
  /** Repairs after a server failed, left, moved or timed out; failed calls, of which timeouts; replays into fresh servers. */
  failovers: number;
  callErrors: number;
  timeouts: number;
  /** Timeouts on servers that were alive, only slow or queued. */
  falseTimeouts: number;
  /** Mean links (servers) per session chain as first routed. */
  meanChainLinks: number;
  replays: number;
  replayTokens: number;
  /** First calls a server refused for want of KV room, and the re-routes they caused (not counted as failovers). */
  kvRefusals: number;
  kvReroutes: number;
  /** First 1,000 failed requests, and failures counted by the fragment they could not pass. */
  failures: RequestFailure[];
  failedByFragment: Record<number, number>;
  /** Coverage over online servers in the placement's unit (Petals' T_p, tokens/s), sampled every sampleEveryS. */
  coverage: { meanAvg: number; minAvg: number; minEver: number; minReplicasEver: number; coveredShare: number; samples: CoverageSample[] };
  churn: { joins: number; joinsRejected: number; leaves: number; crashes: number; moves: number; rebalanceChecks: number; fullMoveChecks: number; onlineAtEnd: number };
  pings: number;
  /** Wall-clock figures: not deterministic. */
  timing: { events: number; wallS: number; simSecondsPerWallSecond: number };
}

export class Simulation {
  readonly config: SimConfig;
  private readonly queue = new EventQueue();
  private readonly ctx: SimContext;
  readonly swarm: Swarm;
  private readonly clients: Clients;
  private started = false;

  constructor(options: SimOptions = {}) {
    this.config = resolveConfig(options);
    this.ctx = makeContext(this.config, this.queue);
    this.swarm = new Swarm(this.ctx);
    this.clients = new Clients(this.ctx, this.swarm);
  }

  /** Simulated time now, s. */
  get nowS(): number {
    return this.queue.now / 1000;
  }

  /** Runs `fn` at simulated second `seconds`. */
  at(seconds: number, fn: (sim: Simulation) => void): this {
    this.queue.at(seconds * 1000, () => fn(this));
    return this;
  }

  /** Online servers whose span holds `fragment`. */
  hostsOf(fragment: number): SimPeer[] {
    return this.swarm.hostsOf(fragment);
  }

  /** Makes peers leave now: gracefully (record withdrawn) or by crashing (silent; record lingers). */
  kill(peers: readonly SimPeer[], options: { crash?: boolean } = {}): void {
    for (const p of peers) this.swarm.depart(p, options.crash ?? false);
  }

  /** Runs to the horizon and summarises. */
  run(): SimResult {
    const wall0 = performance.now();
    if (!this.started) {
      this.started = true;
      this.swarm.start();
      this.clients.start();
    }
    this.queue.runUntil(this.config.horizonS * 1000);
    return this.summarise((performance.now() - wall0) / 1000);
  }

  private summarise(wallS: number): SimResult {
    const { cfg, counters } = this.ctx;
    const dist = (v: number[]): Distribution => ({ p50: percentile(v, 0.5), p95: percentile(v, 0.95), mean: mean(v), count: v.length });
    const samples = this.swarm.samples;
    const byFragment: Record<number, number> = {};
    for (const f of this.clients.failures) byFragment[f.fragment] = (byFragment[f.fragment] ?? 0) + 1;
    const window = Math.max(1e-9, cfg.horizonS - cfg.warmupS);
    const unfinished = this.clients.unfinishedDecodeMsPerToken();
    return {
      seed: cfg.seed,
      peers: cfg.peers,
      horizonS: cfg.horizonS,
      warmupS: cfg.warmupS,
      policy: cfg.routing.policy,
      requests: { arrived: counters.arrived, completed: counters.completed, failed: counters.failed, unfinished: counters.arrived - counters.completed - counters.failed },
      tokens: counters.tokens,
      tokensPerS: counters.tokens / window,
      decodeMsPerToken: { ...dist([...this.clients.decodeMsPerToken, ...unfinished]), unfinishedInDecode: unfinished.length },
      ttftMs: dist(this.clients.ttftMs),
      failovers: counters.failovers,
      callErrors: counters.callErrors,
      timeouts: counters.timeouts,
      falseTimeouts: counters.falseTimeouts,
      meanChainLinks: counters.chainLinks / Math.max(1, counters.chains),
      replays: counters.replays,
      replayTokens: counters.replayTokens,
      kvRefusals: counters.kvRefusals,
      kvReroutes: counters.kvReroutes,
      failures: this.clients.failures.slice(0, 1000),
      failedByFragment: byFragment,
      coverage: {
        meanAvg: mean(samples.map((s) => s.mean)),
        minAvg: mean(samples.map((s) => s.min)),
        minEver: samples.reduce((m, s) => Math.min(m, s.min), Number.POSITIVE_INFINITY),
        minReplicasEver: samples.reduce((m, s) => Math.min(m, s.minReplicas), Number.POSITIVE_INFINITY),
        coveredShare: samples.filter((s) => s.minReplicas > 0).length / Math.max(1, samples.length),
        samples,
      },
      churn: {
        joins: counters.joins, joinsRejected: counters.joinsRejected, leaves: counters.leaves, crashes: counters.crashes, moves: counters.moves,
        rebalanceChecks: counters.rebalanceChecks, fullMoveChecks: counters.fullMoveChecks, onlineAtEnd: this.swarm.routable.filter((p) => !p.crashed).length,
      },
      pings: counters.pings,
      timing: { events: this.queue.processed, wallS, simSecondsPerWallSecond: cfg.horizonS / Math.max(1e-9, wallS) },
    };
  }
}

/** Runs one simulation to its horizon. */
export function simulate(options: SimOptions = {}): SimResult {
  return new Simulation(options).run();
}
