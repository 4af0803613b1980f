/**
 * `npm run bench -- routing`: route computation time for a swarm of 10,000 simulated peers over a
 * 96-fragment model (spans of 1-12 fragments, heterogeneous speeds and round trips). Baseline in the
 * same run: the same routes with a naive all-pairs switch graph (Dijkstra over every (p, j) → (q, j)
 * edge) on a 1,000-peer swarm, the O(N²) construction Petals' PR #362 removed. Goal: route_ms_p50 ≤ 5.
 */
import { findRoute, type FragmentCost, type RouteRequest, type ServerEstimate } from '../policy/routing.js';
import { seededRandom } from '../fragments/seeded-random.js';
import { reportResult } from './report.js';
import { quantile } from './stats.js';

const FRAGMENTS = 96;

function swarm(peers: number, seed: number): { frags: FragmentCost[]; servers: ServerEstimate[] } {
  const r = seededRandom(seed);
  const frags = Array.from({ length: FRAGMENTS }, () => ({ flopsPerToken: 2e8, inputBytesPerToken: 8192, outputBytesPerToken: 8192 }));
  const servers = Array.from({ length: peers }, (_, i) => {
    const length = 1 + Math.floor(r() * 12);
    const start = Math.floor(r() * (FRAGMENTS - length + 1));
    return {
      peerId: `peer-${i}`, start, end: start + length,
      secondsPerFlop: 1 / (1e12 * (0.5 + 40 * r())), rttMs: 2 + 150 * r() ** 2, bandwidthBytesPerS: 1e6 * (5 + 100 * r()),
      queueMs: 10 * r(), inflight: Math.floor(r() * 4), capacity: 4,
    };
  });
  return { frags, servers };
}


function time(fn: () => void, runs: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/** Naive baseline: explicit graph with an edge between every pair of servers at every shared boundary. */
function naiveRoute(frags: FragmentCost[], servers: ServerEstimate[], req: RouteRequest): number {
  const covering: number[][] = Array.from({ length: FRAGMENTS + 1 }, () => []);
  servers.forEach((s, i) => { for (let j = s.start; j < s.end; j++) covering[j].push(i); });
  const dist = new Map<string, number>();
  const key = (p: number, j: number): string => `${p}:${j}`;
  for (const p of covering[req.from]) dist.set(key(p, req.from), servers[p].rttMs / 2);
  let best = Number.POSITIVE_INFINITY;
  for (let j = req.from; j < req.to; j++) {
    for (const p of covering[j]) {
      const d = dist.get(key(p, j));
      if (d === undefined) continue;
      const s = servers[p];
      const next = d + frags[j].flopsPerToken * s.secondsPerFlop * 1000;
      if (j + 1 === req.to) { best = Math.min(best, next + s.rttMs / 2); continue; }
      if (s.end > j + 1) dist.set(key(p, j + 1), Math.min(dist.get(key(p, j + 1)) ?? Infinity, next));
      if (s.end === j + 1) for (const q of covering[j + 1]) dist.set(key(q, j + 1), Math.min(dist.get(key(q, j + 1)) ?? Infinity, next + s.rttMs / 2 + servers[q].rttMs / 2));
    }
  }
  return best;
}

/** Runs the benchmark. */
export async function routingBench(): Promise<void> {
  const big = swarm(10_000, 1);
  const latency = time(() => findRoute(big.frags, big.servers, { from: 0, to: FRAGMENTS, tokens: 1, mode: 'latency' }), 200);
  const throughput = time(() => findRoute(big.frags, big.servers, { from: 0, to: FRAGMENTS, tokens: 128, mode: 'throughput' }), 100);
  const excluded = new Set(big.servers.slice(0, 500).map((s) => s.peerId));
  const repair = time(() => findRoute(big.frags, big.servers, { from: 40, to: FRAGMENTS, tokens: 1, mode: 'latency', exclude: excluded }), 100);
  const small = swarm(1_000, 2);
  const ours1k = time(() => findRoute(small.frags, small.servers, { from: 0, to: FRAGMENTS, tokens: 1, mode: 'latency' }), 50);
  const naive1k = time(() => naiveRoute(small.frags, small.servers, { from: 0, to: FRAGMENTS, tokens: 1, mode: 'latency' }), 10);
  reportResult('routing', {
    peers: 10_000,
    fragments: FRAGMENTS,
    route_ms_p50: quantile(latency, 0.5),
    route_ms_p95: quantile(latency, 0.95),
    throughput_route_ms_p50: quantile(throughput, 0.5),
    repair_route_ms_p50: quantile(repair, 0.5),
    route_1k_ms_p50: quantile(ours1k, 0.5),
    naive_all_pairs_1k_ms_p50: quantile(naive1k, 0.5),
  }, 'findRoute over 10,000 simulated peers (spans of 1-12 of 96 fragments); latency mode for one decode token, throughput mode for a 128-token prefill, repair = re-route from fragment 40 with 500 peers banned. Baseline: an explicit all-pairs switch graph on 1,000 peers. Goal: route_ms_p50 <= 5.');
}
