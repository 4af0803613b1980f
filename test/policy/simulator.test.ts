/**
 * The swarm simulator (policy/simulator/): its event queue's order, the random-routing baseline, and results that
 * depend only on the seed.
 */
import { describe, expect, it } from 'vitest';
import { EventQueue, llama70bClass, randomRoute, simulate, Simulation, type SimOptions, type SimResult } from '../../policy/simulator/index.js';
import { seededRandom } from '../../fragments/seeded-random.js';

/** Everything but the wall-clock figures. */
function deterministicPart(r: SimResult): Omit<SimResult, 'timing'> {
  const { timing: _timing, ...rest } = r;
  return rest;
}

const noChurn: SimOptions['churn'] = { meanLifetimeS: Number.POSITIVE_INFINITY };
/** The 70B-class model in 48 fragments keeps placement checks cheap enough for a unit test. */
const model = llama70bClass(48);

describe('event queue', () => {
  it('runs events in time order, same-time events in the order scheduled', () => {
    const q = new EventQueue();
    const seen: string[] = [];
    q.at(5, () => seen.push('b'));
    q.at(1, () => seen.push('a'));
    q.at(5, () => seen.push('c'));
    q.at(5, () => q.after(0, () => seen.push('e')));
    q.at(5, () => seen.push('d'));
    q.at(9, () => seen.push('late'));
    q.runUntil(6);
    expect(seen).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(q.now).toBe(6);
    q.runUntil(10);
    expect(seen.at(-1)).toBe('late');
  });
});

describe('random routing baseline', () => {
  it('covers the range contiguously with servers that host each fragment, and names an uncovered one', () => {
    const servers = [
      { peerId: 'a', start: 0, end: 4 }, { peerId: 'b', start: 2, end: 8 }, { peerId: 'c', start: 6, end: 10 },
    ].map((s) => ({ ...s, secondsPerFlop: 1e-12, rttMs: 10, bandwidthBytesPerS: 1e7, queueMs: 0, inflight: 0, capacity: 1 }));
    const r = seededRandom(3);
    for (let i = 0; i < 20; i++) {
      const route = randomRoute(servers, 1, 9, r);
      let j = 1;
      for (const { calls: [c] } of route.stages) {
        const s = servers.find((x) => x.peerId === c.peerId)!;
        expect(c.start).toBe(j);
        expect(s.start <= c.start && c.end <= s.end).toBe(true);
        j = c.end;
      }
      expect(j).toBe(9);
    }
    expect(() => randomRoute(servers, 0, 10, r, new Set(['b']))).toThrow(/fragment 4/);
  });
});

describe('swarm simulator', () => {
  it('gives identical results for the same seed, different ones for another', () => {
    const options: SimOptions = { model, seed: 11, peers: 40, horizonS: 240, load: { requestsPerS: 0.5 }, churn: { meanLifetimeS: 600 } };
    const a = simulate(options);
    const b = simulate(options);
    expect(deterministicPart(b)).toEqual(deterministicPart(a));
    expect(a.requests.completed).toBeGreaterThan(0);
    const c = simulate({ ...options, seed: 12 });
    expect(deterministicPart(c)).not.toEqual(deterministicPart(a));
  });

  it('fails no request without churn when capacity is ample', () => {
    const r = simulate({ model, seed: 2, peers: 60, horizonS: 300, churn: noChurn, rebalance: { enabled: false }, load: { requestsPerS: 0.5 } });
    expect(r.requests.failed).toBe(0);
    expect(r.failovers).toBe(0);
    expect(r.timeouts).toBe(0);
    expect(r.requests.completed).toBeGreaterThan(100);
    expect(r.coverage.minReplicasEver).toBeGreaterThan(0);
    // Whatever arrived in the last stretch may still run; nothing else is left behind.
    expect(r.requests.unfinished).toBeLessThan(0.15 * r.requests.arrived);
    // Rebalancing on: servers that move drop their sessions, which fail over and still complete.
    const moving = simulate({ model, seed: 2, peers: 60, horizonS: 300, churn: noChurn, load: { requestsPerS: 0.5 } });
    expect(moving.churn.moves).toBeGreaterThan(0);
    expect(moving.failovers).toBeGreaterThan(0);
    expect(moving.requests.failed).toBe(0);
  });

  it('fails requests naming the fragment when every host of it is gone', () => {
    for (const crash of [false, true]) {
      const sim = new Simulation({ model, seed: 3, peers: 50, horizonS: 400, churn: noChurn, rebalance: { enabled: false }, load: { requestsPerS: 0.5 } });
      let killed: string[] = [];
      sim.at(60, (s) => {
        const hosts = s.hostsOf(40);
        killed = hosts.map((p) => p.peerId);
        s.kill(hosts, { crash });
      });
      const r = sim.run();
      expect(killed.length).toBeGreaterThan(0);
      expect(r.requests.failed, `crash=${crash}`).toBeGreaterThan(0);
      // Each failure names a fragment nobody serves any more, within the spans of the killed hosts (40 among them).
      const lost = new Set<number>();
      for (let j = 0; j < 48; j++) if (sim.hostsOf(j).length === 0) lost.add(j);
      expect(lost.has(40)).toBe(true);
      for (const f of r.failures) expect(lost.has(f.fragment), `failure at ${f.fragment}`).toBe(true);
      // Before the kill nothing failed; a graceful leave withdraws the records, so failures say 'no-route'.
      expect(Math.min(...r.failures.map((f) => f.atS))).toBeGreaterThanOrEqual(60);
      if (!crash) expect(r.failures.some((f) => f.reason === 'no-route')).toBe(true);
      else expect(r.timeouts).toBeGreaterThan(0);
    }
  });

  it('covers the model as suppliers join one after another', () => {
    const r = simulate({ model, seed: 4, peers: 0, horizonS: 150, churn: { meanLifetimeS: Number.POSITIVE_INFINITY, joinRatePerS: 0.4 }, load: { requestsPerS: 0 }, sampleEveryS: 5 });
    const samples = r.coverage.samples;
    expect(samples[0].minReplicas).toBe(0);
    const last = samples.at(-1)!;
    expect(r.churn.joins).toBeGreaterThan(40);
    expect(last.minReplicas).toBeGreaterThanOrEqual(2);
    // Greedy placement fills the weakest fragments first: the least covered is not far below the mean.
    expect(last.min).toBeGreaterThan(0.4 * last.mean);
    const firstCovered = samples.findIndex((s) => s.minReplicas > 0);
    expect(firstCovered).toBeGreaterThan(0);
    for (const s of samples.slice(firstCovered)) expect(s.minReplicas).toBeGreaterThan(0);
  });

  it('routes by estimates with lower decode latency than random choice in a heterogeneous swarm', () => {
    const base: SimOptions = { model, seed: 5, peers: 80, horizonS: 300, warmupS: 30, churn: noChurn, load: { requestsPerS: 0.6 } };
    const est = simulate({ ...base, routing: { policy: 'estimates' } });
    const rnd = simulate({ ...base, routing: { policy: 'random' } });
    expect(est.decodeMsPerToken.count).toBeGreaterThan(50);
    expect(rnd.decodeMsPerToken.count).toBeGreaterThan(50);
    expect(est.decodeMsPerToken.p50).toBeLessThan(0.7 * rnd.decodeMsPerToken.p50);
    expect(est.meanChainLinks).toBeLessThan(rnd.meanChainLinks);
  });

  it('fails over and still completes requests under moderate churn', () => {
    const r = simulate({ model, seed: 6, peers: 80, horizonS: 600, warmupS: 30, churn: { meanLifetimeS: 900, crashFraction: 0.5 }, load: { requestsPerS: 0.6 } });
    expect(r.churn.leaves + r.churn.crashes).toBeGreaterThan(20);
    expect(r.churn.joins).toBeGreaterThan(20);
    expect(r.failovers).toBeGreaterThan(0);
    expect(r.replays).toBeGreaterThan(0);
    expect(r.requests.completed).toBeGreaterThan(200);
    expect(r.requests.failed).toBeLessThanOrEqual(0.02 * r.requests.arrived);
    expect(r.coverage.coveredShare).toBe(1);
  });
});
