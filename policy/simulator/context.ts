/** What the swarm and the gateways share: configuration, clock, random streams, counters. */
import type { FragmentCost } from '../routing.js';
import type { PlacementModel } from '../placement.js';
import type { SimConfig } from './config.js';
import type { EventQueue } from './event-queue.js';
import { rngStream, type Rng } from './random.js';
import { fragmentCosts, placementModel } from './model.js';

export interface Counters {
  arrived: number;
  completed: number;
  failed: number;
  /** Tokens produced (prefill's first token and every decode step) after warm-up. */
  tokens: number;
  failovers: number;
  callErrors: number;
  timeouts: number;
  /** Timeouts on a server that was alive (slow or queued, not crashed). */
  falseTimeouts: number;
  /** Links in the chains sessions were routed over (initial routes), and how many chains. */
  chainLinks: number;
  chains: number;
  replays: number;
  /** First calls refused because the server had no KV room left, and the re-routes they caused. */
  kvRefusals: number;
  kvReroutes: number;
  replayTokens: number;
  joins: number;
  joinsRejected: number;
  leaves: number;
  crashes: number;
  moves: number;
  rebalanceChecks: number;
  fullMoveChecks: number;
  pings: number;
}

export function zeroCounters(): Counters {
  return { arrived: 0, completed: 0, failed: 0, tokens: 0, failovers: 0, callErrors: 0, timeouts: 0, falseTimeouts: 0, chainLinks: 0, chains: 0, replays: 0, kvRefusals: 0, kvReroutes: 0, replayTokens: 0, joins: 0, joinsRejected: 0, leaves: 0, crashes: 0, moves: 0, rebalanceChecks: 0, fullMoveChecks: 0, pings: 0 };
}

export interface SimContext {
  cfg: SimConfig;
  queue: EventQueue;
  counters: Counters;
  frags: FragmentCost[];
  placement: PlacementModel;
  /** Prefix sums over fragments: FLOPs per token and weight bytes of [0, j). */
  flopsPrefix: Float64Array;
  weightPrefix: Float64Array;
  rng: Record<'peers' | 'churn' | 'arrivals' | 'net' | 'compute' | 'route' | 'rebalance' | 'ping' | 'clients', Rng>;
}

export function makeContext(cfg: SimConfig, queue: EventQueue): SimContext {
  const k = cfg.model.flopsPerToken.length;
  const flopsPrefix = new Float64Array(k + 1);
  const weightPrefix = new Float64Array(k + 1);
  for (let j = 0; j < k; j++) {
    flopsPrefix[j + 1] = flopsPrefix[j] + cfg.model.flopsPerToken[j];
    weightPrefix[j + 1] = weightPrefix[j] + cfg.model.weightBytes[j];
  }
  const names = ['peers', 'churn', 'arrivals', 'net', 'compute', 'route', 'rebalance', 'ping', 'clients'] as const;
  const rng = Object.fromEntries(names.map((n) => [n, rngStream(cfg.seed, n)])) as SimContext['rng'];
  return { cfg, queue, counters: zeroCounters(), frags: fragmentCosts(cfg.model), placement: placementModel(cfg.model), flopsPrefix, weightPrefix, rng };
}
