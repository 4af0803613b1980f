/** Simulator configuration: every knob with its default and unit. */
import { GPU_MIX, REGION_RTT_MS, REGIONS, type GpuClass, type Region } from './hardware.js';
import { llama70bClass, type SimModel } from './model.js';

export interface SimConfig {
  seed: number;
  /** Suppliers online at t = 0 (placed one after another with chooseSpan). */
  peers: number;
  /** Simulated seconds to run. */
  horizonS: number;
  /** Requests arriving before this are left out of latency percentiles and tokens/s. */
  warmupS: number;
  model: SimModel;
  hardware: {
    gpus: readonly GpuClass[];
    /** Share of a prefill's FLOPs peak the GPU reaches. */
    flopsEfficiency: number;
    /** Share of memory bandwidth a decode step reaches (decode reads every weight once). */
    bandwidthEfficiency: number;
    /** Fixed cost of one call on the server (deserialise, launch, serialise), ms. */
    callOverheadMs: number;
    /** GPU memory a supplier keeps for itself (runtime, activations), GB. */
    reserveGB: number;
    /** Share of memory a supplier offers: uniform in [min, 1]. */
    minShare: number;
    /** A host's true speed differs from its class by a log-normal factor with this σ (drivers, thermals, a game running). */
    speedSigma: number;
    /** Its self-test misjudges its speed by a log-normal factor with this σ. */
    selfTestSigma: number;
  };
  network: {
    regions: readonly Region[];
    regionRttMs: readonly (readonly number[])[];
    /** Last-mile round trip added per end: home suppliers log-normal(median, σ), data centres 1 ms. */
    homeAccessMs: number;
    homeAccessSigma: number;
    /** Home upload bandwidth: log-normal(median, σ), clamped to [10 Mbit/s, 1 Gbit/s]. */
    homeBandwidthMbit: number;
    homeBandwidthSigma: number;
    datacenterBandwidthMbit: number;
    clientBandwidthMbit: number;
    /** Per message: one-way delay × log-normal(1, σ), and with probability p an extra exponential(mean) spike. */
    jitterSigma: number;
    spikeProbability: number;
    spikeMeanMs: number;
  };
  churn: {
    /** Mean supplier lifetime (exponential), s; Infinity for no departures. */
    meanLifetimeS: number;
    /** New suppliers per second (Poisson); default peers / meanLifetimeS keeps the swarm's size. */
    joinRatePerS?: number;
    /** Share of departures that are crashes (silent; the record lingers until it expires) rather than graceful leaves. */
    crashFraction: number;
    /** A joiner sleeps uniform(0, this) before choosing its span (Petals: 10 s). */
    joinJitterS: number;
    /** Loading a span: this many bytes per second (from a local cache), plus a fixed start-up. */
    loadBytesPerS: number;
    startupS: number;
    /** Records are re-announced every period and expire after ttl (Petals: 60 s, 2 × period). */
    announcePeriodS: number;
    recordTtlS: number;
    /** Servers refresh the load in their record (queue-wait EMA, calls in flight) this often, s; 0: never. */
    loadAnnounceS: number;
  };
  rebalance: {
    enabled: boolean;
    /** Checks at uniform(0, 2 × mean) intervals (Petals: mean 120 s). */
    meanIntervalS: number;
    q: number;
    /** Consecutive positive checks needed before a supplier moves. */
    confirmations: number;
  };
  load: {
    /** Gateways issuing requests; each has its own location, estimates and bans. */
    clients: number;
    /** Poisson arrivals over the whole swarm. */
    requestsPerS: number;
    promptTokens: number;
    newTokens: number;
  };
  routing: {
    /** 'estimates': findRoute over learned estimates; 'random': uniform choice among covering servers. */
    policy: 'estimates' | 'random';
    /** findRoute mode for a session's chain (the chain is chosen for one-token steps). */
    mode: 'latency' | 'throughput';
    /**
     * Route the chain again before every decode step (servers that already hold the session's KV for the
     * range are kept; others replay). Off: route once per session and again only to repair (Petals).
     */
    rerouteEachStep: boolean;
    /** Round trip assumed for a server the client never measured, ms (Petals: 2 × 0.15 s). */
    unknownRttMs: number;
    /** EMA weight of a new sample. */
    emaAlpha: number;
    /** Each client pings this many random servers every interval (Petals: a few per refresh). */
    pingIntervalS: number;
    pingSample: number;
    /** Call deadline: max(min, factor × predicted). */
    deadlineMinMs: number;
    deadlineFactor: number;
    /** Attempts per step before the request fails. */
    maxAttempts: number;
    /** Ban after a failure: base × 2^k seconds (hivemind: 15 s). */
    banBaseS: number;
  };
  /** Coverage is sampled at this period, s. */
  sampleEveryS: number;
}

export type SimOptions = Partial<Omit<SimConfig, 'hardware' | 'network' | 'churn' | 'rebalance' | 'load' | 'routing'>> & {
  hardware?: Partial<SimConfig['hardware']>;
  network?: Partial<SimConfig['network']>;
  churn?: Partial<SimConfig['churn']>;
  rebalance?: Partial<SimConfig['rebalance']>;
  load?: Partial<SimConfig['load']>;
  routing?: Partial<SimConfig['routing']>;
};

export function defaultConfig(): SimConfig {
  return {
    seed: 1,
    peers: 100,
    horizonS: 600,
    warmupS: 0,
    model: llama70bClass(),
    hardware: {
      gpus: GPU_MIX,
      flopsEfficiency: 0.45,
      bandwidthEfficiency: 0.7,
      callOverheadMs: 1.5,
      reserveGB: 1.5,
      minShare: 0.6,
      speedSigma: 0.25,
      selfTestSigma: 0.2,
    },
    network: {
      regions: REGIONS,
      regionRttMs: REGION_RTT_MS,
      homeAccessMs: 8,
      homeAccessSigma: 0.7,
      homeBandwidthMbit: 100,
      homeBandwidthSigma: 0.7,
      datacenterBandwidthMbit: 1000,
      clientBandwidthMbit: 1000,
      jitterSigma: 0.1,
      spikeProbability: 0.01,
      spikeMeanMs: 100,
    },
    churn: {
      meanLifetimeS: 3600,
      crashFraction: 0.5,
      joinJitterS: 10,
      loadBytesPerS: 1e9,
      startupS: 10,
      announcePeriodS: 60,
      recordTtlS: 120,
      loadAnnounceS: 10,
    },
    rebalance: { enabled: true, meanIntervalS: 120, q: 0.75, confirmations: 2 },
    load: { clients: 4, requestsPerS: 1, promptTokens: 256, newTokens: 64 },
    routing: {
      policy: 'estimates',
      mode: 'throughput',
      rerouteEachStep: false,
      unknownRttMs: 300,
      emaAlpha: 0.2,
      pingIntervalS: 60,
      pingSample: 16,
      deadlineMinMs: 1000,
      deadlineFactor: 3,
      maxAttempts: 8,
      banBaseS: 15,
    },
    sampleEveryS: 5,
  };
}

/** Defaults overlaid with `options` (one level deep for the grouped settings). */
export function resolveConfig(options: SimOptions = {}): SimConfig {
  const d = defaultConfig();
  return {
    ...d,
    ...options,
    hardware: { ...d.hardware, ...options.hardware },
    network: { ...d.network, ...options.network },
    churn: { ...d.churn, ...options.churn },
    rebalance: { ...d.rebalance, ...options.rebalance },
    load: { ...d.load, ...options.load },
    routing: { ...d.routing, ...options.routing },
  } as SimConfig;
}
