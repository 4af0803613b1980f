/**
 * `npm run bench -- swarm`: the swarm simulator (policy/simulator) at 100, 1,000 and 10,000 peers under
 * churn, with the real placement (chooseSpan, shouldMove) and routing (findRoute). Same model and request
 * shape at every size; load scales with the peers (0.01 requests/s per peer). Baseline in the same run:
 * the same swarm, seed and arrivals with routing by uniform random choice among covering servers.
 *
 * Flags: --sizes=100,1000 (a subset), --quick (a third of each horizon).
 */
import { simulate, type SimOptions, type SimResult } from '../policy/simulator/index.js';
import { reportResult } from './report.js';

interface Size { peers: number; label: string; horizonS: number; warmupS: number }

/** Horizons sized so the whole run stays within about 3 minutes on 2 cores (10k: findRoute over 10k servers per session). */
const SIZES: Size[] = [
  { peers: 100, label: 'p100', horizonS: 1200, warmupS: 120 },
  { peers: 1_000, label: 'p1k', horizonS: 600, warmupS: 60 },
  { peers: 10_000, label: 'p10k', horizonS: 120, warmupS: 30 },
];
const REQUESTS_PER_PEER_S = 0.01;
const LIFETIME_S = 3600;
const CRASH_FRACTION = 0.5;
const PROMPT = 256;
const NEW_TOKENS = 64;

function options(size: Size, policy: 'estimates' | 'random', quick: boolean): SimOptions {
  return {
    seed: 2026,
    peers: size.peers,
    horizonS: quick ? Math.round(size.horizonS / 3) : size.horizonS,
    warmupS: quick ? Math.round(size.warmupS / 2) : size.warmupS,
    churn: { meanLifetimeS: LIFETIME_S, crashFraction: CRASH_FRACTION },
    load: { clients: Math.max(4, Math.round(size.peers / 100)), requestsPerS: size.peers * REQUESTS_PER_PEER_S, promptTokens: PROMPT, newTokens: NEW_TOKENS },
    routing: { policy },
  };
}

function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Number.isFinite(v) ? Math.round(v * f) / f : -1;
}

/** Runs the benchmark. */
export async function swarmBench(flags: string[] = []): Promise<void> {
  const quick = flags.includes('--quick');
  const only = flags.find((f) => f.startsWith('--sizes='))?.slice('--sizes='.length).split(',').map(Number);
  const sizes = SIZES.filter((s) => !only || only.includes(s.peers));
  const metrics: Record<string, number> = {};
  const horizons: string[] = [];
  let wallTotal = 0;
  for (const size of sizes) {
    const runs: [string, SimResult][] = [];
    for (const policy of ['estimates', 'random'] as const) {
      process.stderr.write(`  swarm ${size.label} ${policy}…\n`);
      const r = simulate(options(size, policy, quick));
      wallTotal += r.timing.wallS;
      runs.push([policy, r]);
    }
    const [[, est], [, rnd]] = runs;
    const p = size.label;
    Object.assign(metrics, {
      [`${p}_tokens_per_s`]: round(est.tokensPerS),
      [`${p}_decode_ms_p50`]: round(est.decodeMsPerToken.p50),
      [`${p}_decode_ms_p95`]: round(est.decodeMsPerToken.p95),
      [`${p}_ttft_ms_p50`]: round(est.ttftMs.p50),
      [`${p}_ttft_ms_p95`]: round(est.ttftMs.p95),
      [`${p}_completed_requests`]: est.requests.completed,
      [`${p}_failed_requests`]: est.requests.failed,
      [`${p}_unfinished_requests`]: est.requests.unfinished,
      [`${p}_failovers`]: est.failovers,
      [`${p}_timeouts`]: est.timeouts,
      [`${p}_kv_refusals`]: est.kvRefusals,
      [`${p}_kv_reroutes`]: est.kvReroutes,
      [`${p}_chain_links`]: round(est.meanChainLinks, 2),
      [`${p}_departures`]: est.churn.leaves + est.churn.crashes,
      [`${p}_joins`]: est.churn.joins,
      [`${p}_moves`]: est.churn.moves,
      [`${p}_coverage_mean`]: round(est.coverage.meanAvg, 0),
      [`${p}_coverage_min_avg`]: round(est.coverage.minAvg, 0),
      [`${p}_coverage_min`]: round(est.coverage.minEver, 0),
      [`${p}_min_replicas`]: est.coverage.minReplicasEver,
      [`${p}_random_route_tokens_per_s`]: round(rnd.tokensPerS),
      [`${p}_random_route_decode_ms_p50`]: round(rnd.decodeMsPerToken.p50),
      [`${p}_random_route_decode_ms_p95`]: round(rnd.decodeMsPerToken.p95),
      [`${p}_random_route_ttft_ms_p50`]: round(rnd.ttftMs.p50),
      [`${p}_random_route_failed_requests`]: rnd.requests.failed,
      [`${p}_random_route_failovers`]: rnd.failovers,
      [`${p}_random_route_chain_links`]: round(rnd.meanChainLinks, 2),
      [`${p}_random_over_estimates_decode_p50`]: round(rnd.decodeMsPerToken.p50 / est.decodeMsPerToken.p50, 2),
      [`${p}_sim_s`]: est.horizonS,
      [`${p}_wall_s`]: round(est.timing.wallS, 2),
      [`${p}_sim_s_per_wall_s`]: round(est.timing.simSecondsPerWallSecond, 1),
      [`${p}_events`]: est.timing.events,
      [`${p}_random_route_wall_s`]: round(rnd.timing.wallS, 2),
    });
    horizons.push(`${p}: ${est.horizonS} s simulated (warm-up ${est.warmupS} s), ${options(size, 'estimates', quick).load!.clients} gateways, ${round(size.peers * REQUESTS_PER_PEER_S, 2)} req/s`);
  }
  metrics.wall_s_total = round(wallTotal, 1);
  const notes = [
    `Discrete-event swarm simulation with the real chooseSpan/shouldMove placement and findRoute routing (throughput mode, one route per session, repaired from the failed fragment with replay).`,
    `Model: Llama-2-70B-class, fp16, 96 fragments (1.43 GB + 16,384-token KV budget each); requests: ${PROMPT}-token prefill + ${NEW_TOKENS} decode steps, Poisson arrivals at ${REQUESTS_PER_PEER_S} req/s per peer.`,
    `Swarm: RTX 3060/3070/3080/3090/4070/4080/4090 and A100 40/80 GB mix, 60-100% memory share; 4 regions with 25-310 ms backbone RTT, log-normal last mile and home links (median 100 Mbit/s), jitter and rare spikes.`,
    `Churn: exponential lifetimes, mean ${LIFETIME_S} s (${round(1 / LIFETIME_S * 3600, 2)} departures per peer-hour), ${CRASH_FRACTION * 100}% crashes (record lingers up to 120 s) and the rest graceful; joins Poisson at peers/${LIFETIME_S} per s; rebalance checks uniform(0, 240 s), moves confirmed twice.`,
    `Horizons: ${horizons.join('; ')}.`,
    `decode_ms = per request (last token - first token) / decode steps, requests still decoding at the horizon counted with their rate so far; ttft = arrival to end of prefill; tokens/s = tokens produced after warm-up (open-loop load, so both policies approach the offered load unless saturated); coverage in Petals T_p units (tokens/s) over online servers.`,
    `Baseline: random_route = uniform choice among servers covering the current fragment, ridden to its span end; same swarm, churn and arrivals.`,
  ].join(' ');
  reportResult('swarm', metrics, notes);
}
