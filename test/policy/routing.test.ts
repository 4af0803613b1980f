/**
 * findRoute (policy/): the cheapest route (checked against exhaustive search on random swarms), a named missing
 * fragment, fast replicas and long spans when round trips dominate, and price as a routing term.
 */
import { describe, expect, it } from 'vitest';
import { findRoute, NoRouteError, priceWeight, type FragmentCost, type RouteRequest, type ServerEstimate } from '../../policy/routing.js';
import { seededRandom } from '../../fragments/seeded-random.js';

function randomSwarm(seed: number, fragments: number, servers: number): { frags: FragmentCost[]; servers: ServerEstimate[] } {
  const r = seededRandom(seed);
  const frags = Array.from({ length: fragments }, () => ({ flopsPerToken: 1e8 * (0.5 + r()), inputBytesPerToken: 3072, outputBytesPerToken: 3072 }));
  const list: ServerEstimate[] = Array.from({ length: servers }, (_, i) => {
    const start = Math.floor(r() * fragments);
    const end = Math.min(fragments, start + 1 + Math.floor(r() * 4));
    return { peerId: `p${i}`, start, end, secondsPerFlop: 1e-11 * (0.2 + 3 * r()), rttMs: 1 + 80 * r(), bandwidthBytesPerS: 1e7 * (1 + 10 * r()), queueMs: 5 * r(), inflight: Math.floor(4 * r()), capacity: 4 };
  });
  return { frags, servers: list };
}

/** Every route the model allows, by exhaustive search: enter any covering span, leave at its end or at `to`. */
function bruteForce(frags: FragmentCost[], servers: ServerEstimate[], req: RouteRequest): number {
  const memo = new Map<number, number>();
  const batch = req.batch ?? 1;
  const best = (j: number): number => {
    if (j === req.to) return 0;
    if (memo.has(j)) return memo.get(j)!;
    let m = Number.POSITIVE_INFINITY;
    for (const s of servers) {
      if (req.exclude?.has(s.peerId) || !(s.start <= j && j < s.end)) continue;
      const load = req.mode === 'throughput' ? 1 + s.inflight / s.capacity : 1;
      const send = s.rttMs / 2 + (frags[j].inputBytesPerToken * req.tokens * batch) / s.bandwidthBytesPerS * 1000 + (req.mode === 'throughput' ? s.queueMs : 0);
      let compute = 0;
      for (let e = j + 1; e <= Math.min(s.end, req.to); e++) {
        compute += frags[e - 1].flopsPerToken * req.tokens * batch * s.secondsPerFlop * 1000 * load;
        if (e !== s.end && e !== req.to) continue;
        const back = s.rttMs / 2 + (frags[e - 1].outputBytesPerToken * req.tokens * batch) / s.bandwidthBytesPerS * 1000;
        m = Math.min(m, send + compute + back + best(e));
      }
    }
    memo.set(j, m);
    return m;
  };
  return best(req.from);
}

describe('findRoute', () => {
  it('finds the cheapest route, as exhaustive search does, on random swarms', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const { frags, servers } = randomSwarm(seed, 8, 14);
      for (const mode of ['latency', 'throughput'] as const) {
        const req: RouteRequest = { from: seed % 3, to: 8 - (seed % 2), tokens: mode === 'latency' ? 1 : 64, mode };
        let expected: number;
        try { expected = bruteForce(frags, servers, req); } catch { continue; }
        if (!Number.isFinite(expected)) {
          expect(() => findRoute(frags, servers, req)).toThrow(NoRouteError);
          continue;
        }
        const route = findRoute(frags, servers, req);
        expect(route.estimatedMs).toBeCloseTo(expected, 6);
        // The route is contiguous, covers from..to, and each call is inside its server's span.
        let at = req.from;
        for (const { calls: [c] } of route.stages) {
          const s = servers.find((x) => x.peerId === c.peerId)!;
          expect(c.start).toBe(at);
          expect(c.start).toBeGreaterThanOrEqual(s.start);
          expect(c.end === s.end || c.end === req.to).toBe(true);
          at = c.end;
        }
        expect(at).toBe(req.to);
      }
    }
  });

  it('names the fragment that no live server hosts', () => {
    const frags = Array.from({ length: 4 }, () => ({ flopsPerToken: 1, inputBytesPerToken: 1, outputBytesPerToken: 1 }));
    const base = { secondsPerFlop: 1e-9, rttMs: 1, bandwidthBytesPerS: 1e6, queueMs: 0, inflight: 0, capacity: 1 };
    const servers = [{ ...base, peerId: 'a', start: 0, end: 2 }, { ...base, peerId: 'b', start: 2, end: 3 }, { ...base, peerId: 'c', start: 3, end: 4 }];
    expect(findRoute(frags, servers, { from: 0, to: 4, tokens: 1, mode: 'latency' }).stages.map((s) => s.calls[0].peerId)).toEqual(['a', 'b', 'c']);
    const err = (() => { try { findRoute(frags, servers, { from: 0, to: 4, tokens: 1, mode: 'latency', exclude: new Set(['b']) }); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(NoRouteError);
    expect((err as NoRouteError).fragment).toBe(2);
    expect((err as Error).message).toMatch(/fragment 2/);
  });

  it('prefers a fast replica, and one long span over hops when round trips dominate', () => {
    const frags = Array.from({ length: 4 }, () => ({ flopsPerToken: 1e9, inputBytesPerToken: 4096, outputBytesPerToken: 4096 }));
    const base = { rttMs: 20, bandwidthBytesPerS: 1e8, queueMs: 0, inflight: 0, capacity: 1 };
    const servers = [
      { ...base, peerId: 'slow-all', start: 0, end: 4, secondsPerFlop: 1e-10 },
      { ...base, peerId: 'fast-all', start: 0, end: 4, secondsPerFlop: 1e-12 },
      { ...base, peerId: 'fast-half1', start: 0, end: 2, secondsPerFlop: 0.9e-12 },
      { ...base, peerId: 'fast-half2', start: 2, end: 4, secondsPerFlop: 0.9e-12 },
    ];
    const route = findRoute(frags, servers, { from: 0, to: 4, tokens: 1, mode: 'latency' });
    expect(route.stages.map((s) => s.calls[0].peerId)).toEqual(['fast-all']);
  });

  describe('price as a routing term', () => {
    const frags = Array.from({ length: 2 }, () => ({ flopsPerToken: 1e9, inputBytesPerToken: 256, outputBytesPerToken: 256 }));
    const base = { rttMs: 2, bandwidthBytesPerS: 1e9, queueMs: 0, inflight: 0, capacity: 4, start: 0, end: 2 };
    const route = (servers: ServerEstimate[], mode: 'latency' | 'throughput' = 'throughput'): string[] =>
      findRoute(frags, servers, { from: 0, to: 2, tokens: 1, mode, msPerPriceUnit: priceWeight(servers) }).stages.map((s) => s.calls[0].peerId);

    it('among hosts of similar speed, the cheaper wins (it lost on speed alone)', () => {
      const servers = [
        { ...base, peerId: 'dear-a-bit-faster', secondsPerFlop: 0.95e-11, pricePerGflop: 3e12 },
        { ...base, peerId: 'cheap', secondsPerFlop: 1e-11, pricePerGflop: 1e12 },
        { ...base, peerId: 'median', secondsPerFlop: 1e-11, pricePerGflop: 2e12 },
      ];
      expect(findRoute(frags, servers, { from: 0, to: 2, tokens: 1, mode: 'throughput' }).stages[0].calls[0].peerId).toBe('dear-a-bit-faster');
      expect(route(servers)).toEqual(['cheap']);
    });

    it('an absurd price loses to any honest host, whatever speed it claims', () => {
      const honest = [
        { ...base, peerId: 'honest-slow', secondsPerFlop: 1e-9, pricePerGflop: 1e12 },
        { ...base, peerId: 'honest', secondsPerFlop: 1e-11, pricePerGflop: 1e12 },
      ];
      const rogue = { ...base, peerId: 'rogue', secondsPerFlop: 1e-18, pricePerGflop: 7e20 };
      expect(route([rogue, ...honest])).toEqual(['honest']);
      expect(route([rogue, honest[0]], 'latency')).toEqual(['honest-slow']);
    });

    it('leaves the price term out of the estimated time', () => {
      const servers = [{ ...base, peerId: 'only', secondsPerFlop: 1e-11, pricePerGflop: 1e12 }];
      const priced = findRoute(frags, servers, { from: 0, to: 2, tokens: 1, mode: 'latency', msPerPriceUnit: priceWeight(servers) });
      const unpriced = findRoute(frags, servers, { from: 0, to: 2, tokens: 1, mode: 'latency' });
      expect(priced.estimatedMs).toBeCloseTo(unpriced.estimatedMs, 6);
    });

    it('weighs nothing when no host charges', () => {
      expect(priceWeight([{ ...base, peerId: 'free', secondsPerFlop: 1e-11 }])).toBe(0);
    });
  });
});
