/**
 * Routing (policy/routing.ts) and what feeds it (policy/estimates.ts) at their exact edges, written so that a
 * changed line is seen (issue 21, mutation testing): a route's cost worked by hand in both modes with batches,
 * load and queues; which servers are usable; the price left out of a multi-hop route's time; the medians of
 * priceWeight; every estimate's first value, clamp and moving average; bans' back-off and condemnations' ends.
 * test/policy/routing.test.ts checks the optimum against exhaustive search; this file pins the numbers.
 */
import { describe, expect, it } from 'vitest';
import { findRoute, NoRouteError, priceWeight, type FragmentCost, type ServerEstimate } from '../../policy/routing.js';
import { Estimates } from '../../policy/estimates.js';

const server = (peerId: string, over: Partial<ServerEstimate> = {}): ServerEstimate => ({
  peerId, start: 0, end: 1, secondsPerFlop: 1e-12, rttMs: 10, bandwidthBytesPerS: 1e6, queueMs: 7, inflight: 3, capacity: 2, ...over,
});
const one: FragmentCost[] = [{ flopsPerToken: 1e9, inputBytesPerToken: 1000, outputBytesPerToken: 2000 }];

describe('findRoute, cost by hand', () => {
  // units = 4 tokens × batch 2 = 8: ms per byte 8e3 / 1e6 = 0.008; compute 1e9 · 8 · 1e-12 · 1e3 = 8 ms
  it('latency: half round trip out, bytes in, compute, half round trip back, bytes out; no load, no queue', () => {
    const r = findRoute(one, [server('a')], { from: 0, to: 1, tokens: 4, batch: 2, mode: 'latency' });
    expect(r.estimatedMs).toBeCloseTo(5 + 8 + 8 + 5 + 16, 9);
    expect(r.stages).toEqual([{ calls: [{ peerId: 'a', start: 0, end: 1 }] }]);
    expect(findRoute(one, [server('a')], { from: 0, to: 1, tokens: 4, mode: 'latency' }).estimatedMs).toBeCloseTo(5 + 4 + 4 + 5 + 8, 9);
  });

  it('throughput: compute inflated by 1 + inflight / capacity (capacity at least 1), plus the queue', () => {
    const req = { from: 0, to: 1, tokens: 4, batch: 2, mode: 'throughput' as const };
    expect(findRoute(one, [server('a')], req).estimatedMs).toBeCloseTo(5 + 8 + 7 + 8 * 2.5 + 5 + 16, 9);
    expect(findRoute(one, [server('a', { capacity: 0 })], req).estimatedMs).toBeCloseTo(5 + 8 + 7 + 8 * 4 + 5 + 16, 9);
    expect(findRoute(one, [server('a', { capacity: 0.5 })], req).estimatedMs).toBeCloseTo(5 + 8 + 7 + 8 * 4 + 5 + 16, 9);
  });

  it('a two-hop route pays each hop; the price steers but stays out of the time', () => {
    const two: FragmentCost[] = [one[0], { flopsPerToken: 2e9, inputBytesPerToken: 500, outputBytesPerToken: 100 }];
    const a = server('a', { queueMs: 0, inflight: 0, pricePerGflop: 3 });
    const b = server('b', { start: 1, end: 2, queueMs: 0, inflight: 0, pricePerGflop: 5 });
    const req = { from: 0, to: 2, tokens: 1, mode: 'latency' as const };
    // a: 5 + 1 + 1 + 5 + 2 = 14; b: 5 + 0.5 + 2 + 5 + 0.1 = 12.6
    const plain = findRoute(two, [a, b], req);
    expect(plain.estimatedMs).toBeCloseTo(26.6, 9);
    expect(plain.stages.map((s) => s.calls[0])).toEqual([{ peerId: 'a', start: 0, end: 1 }, { peerId: 'b', start: 1, end: 2 }]);
    const priced = findRoute(two, [a, b], { ...req, msPerPriceUnit: 1 });
    expect(priced.estimatedMs).toBeCloseTo(26.6, 9);
    // a dearer twin of a is not taken, a cheaper twin is
    const dear = server('dear', { queueMs: 0, inflight: 0, pricePerGflop: 4, secondsPerFlop: 0.99e-12 });
    expect(findRoute(two, [dear, a, b], { ...req, msPerPriceUnit: 1 }).stages[0].calls[0].peerId).toBe('a');
    expect(findRoute(two, [dear, a, b], req).stages[0].calls[0].peerId).toBe('dear');
    expect(findRoute(two, [dear, a, b], { ...req, msPerPriceUnit: -1 }).stages[0].calls[0].peerId).toBe('dear');
  });

  it('a span wider than the request is clipped to it, and the route leaves at the request\'s end', () => {
    const three: FragmentCost[] = [one[0], one[0], one[0]];
    const wide = server('wide', { start: 0, end: 3, queueMs: 0, inflight: 0 });
    const r = findRoute(three, [wide], { from: 1, to: 2, tokens: 1, mode: 'latency' });
    expect(r.stages).toEqual([{ calls: [{ peerId: 'wide', start: 1, end: 2 }] }]);
    expect(r.estimatedMs).toBeCloseTo(5 + 1 + 1 + 5 + 2, 9);
  });
});

describe('findRoute, usable servers', () => {
  const four: FragmentCost[] = Array.from({ length: 4 }, () => ({ flopsPerToken: 1e9, inputBytesPerToken: 0, outputBytesPerToken: 0 }));
  const slow = (peerId: string, start: number, end: number): ServerEstimate => server(peerId, { start, end, secondsPerFlop: 1e-9, queueMs: 0, inflight: 0 });
  const fast = (peerId: string, start: number, end: number): ServerEstimate => server(peerId, { start, end, secondsPerFlop: 1e-15, rttMs: 0, queueMs: 0, inflight: 0 });

  it('ignores spans that end where the request starts, start where it ends, or are empty, however fast', () => {
    const honest = slow('honest', 0, 4);
    const req = { from: 1, to: 3, tokens: 1, mode: 'latency' as const };
    for (const bogus of [fast('before', 0, 1), fast('after', 3, 4), fast('empty', 2, 2), fast('inverted', 3, 1)]) {
      expect(findRoute(four, [bogus, honest], req).stages.map((s) => s.calls[0].peerId)).toEqual(['honest']);
    }
    expect(findRoute(four, [fast('inside', 1, 3), honest], req).stages.map((s) => s.calls[0].peerId)).toEqual(['inside']);
    expect(findRoute(four, [fast('x', 1, 3), honest], { ...req, exclude: new Set(['x']) }).stages.map((s) => s.calls[0].peerId)).toEqual(['honest']);
  });

  it('cannot leave a span in its middle, but may enter one there: a fast middle hop, then back into the long span', () => {
    const r = findRoute(four, [slow('all', 0, 4), fast('mid', 1, 3)], { from: 0, to: 4, tokens: 1, mode: 'latency' });
    expect(r.stages.map((s) => s.calls[0])).toEqual([{ peerId: 'all', start: 0, end: 4 }]);
    const r2 = findRoute(four, [slow('a', 0, 1), fast('mid', 1, 3), slow('all', 0, 4)], { from: 0, to: 4, tokens: 1, mode: 'latency' });
    expect(r2.stages.map((s) => s.calls[0])).toEqual([{ peerId: 'a', start: 0, end: 1 }, { peerId: 'mid', start: 1, end: 3 }, { peerId: 'all', start: 3, end: 4 }]);
  });

  it('rejects a bad fragment range with a RangeError, and accepts the whole model', () => {
    for (const [from, to] of [[-1, 2], [0, 5], [2, 2], [3, 1]]) {
      expect(() => findRoute(four, [slow('all', 0, 4)], { from, to, tokens: 1, mode: 'latency' })).toThrow(RangeError);
    }
    expect(findRoute(four, [slow('all', 0, 4)], { from: 0, to: 4, tokens: 1, mode: 'latency' }).stages).toHaveLength(1);
    expect(findRoute(four, [slow('all', 0, 4)], { from: 3, to: 4, tokens: 1, mode: 'latency' }).stages[0].calls[0]).toEqual({ peerId: 'all', start: 3, end: 4 });
  });

  it('no route: the uncovered fragment by its own error, and a route no finite cost reaches', () => {
    const err = (() => { try { findRoute(four, [slow('a', 0, 2)], { from: 0, to: 4, tokens: 1, mode: 'latency' }); } catch (e) { return e as NoRouteError; } })();
    expect(err).toBeInstanceOf(NoRouteError);
    expect(err).toMatchObject({ code: 'NO_ROUTE', name: 'NoRouteError', fragment: 2, message: 'no live server hosts fragment 2' });
    const unreachable = (() => { try { findRoute(four, [server('nan', { start: 0, end: 4, rttMs: Number.NaN })], { from: 1, to: 3, tokens: 1, mode: 'latency' }); } catch (e) { return e as NoRouteError; } })();
    expect(unreachable).toBeInstanceOf(NoRouteError);
    expect(unreachable).toMatchObject({ fragment: 1, message: 'no route from fragment 1 to 3' });
  });
});

describe('priceWeight', () => {
  it('the upper median of speed over the lower median of the finite, positive prices', () => {
    const s = (secondsPerFlop: number, pricePerGflop?: number): ServerEstimate => server('x', { secondsPerFlop, pricePerGflop });
    // ms per GFLOP 4, 1, 3, 2 → sorted 1 2 3 4 → upper median 3; prices 40 10 30 20 → lower median 20
    expect(priceWeight([s(4e-12, 40), s(1e-12, 10), s(3e-12, 30), s(2e-12, 20)])).toBeCloseTo(3 / 20, 12);
    // free, infinite and negative prices do not count; speed counts every server
    expect(priceWeight([s(9e-12, 0), s(1e-12, Number.POSITIVE_INFINITY), s(2e-12, -5), s(5e-12, 50), s(3e-12)])).toBeCloseTo(3 / 50, 12);
    expect(priceWeight([s(1e-12), s(2e-12, 0)])).toBe(0);
    // sorted as numbers, not as text (as text: 100 20 3 4)
    expect(priceWeight([s(1e-12, 100), s(1e-12, 20), s(1e-12, 3), s(1e-12, 4)])).toBeCloseTo(1 / 4, 12);
    expect(priceWeight([s(100e-12, 1), s(20e-12, 1), s(3e-12, 1), s(4e-12, 1)])).toBeCloseTo(20, 9);
  });
});

describe('Estimates: first sight', () => {
  it('seeds from the advertised speed, capped, floored, and 10 GFLOP/s when not finite', () => {
    const e = new Estimates();
    expect(e.get('p', 2)).toEqual({ rttMs: 5, secondsPerByte: 1e-9, secondsPerFlop: 1 / 2e9, queueMs: 0, inflight: 0, bannedUntil: 0, failures: 0, samples: 0, bandwidthSamples: 0, pingSamples: 0 });
    expect(e.get('p', 1000).secondsPerFlop).toBe(1 / 2e9); // the first sight stays
    expect(e.get('huge', 1000).secondsPerFlop).toBe(1 / 10e9);
    expect(e.get('tiny', 1e-6).secondsPerFlop).toBe(1 / (0.01 * 1e9));
    expect(e.get('nan', Number.NaN).secondsPerFlop).toBe(1 / 10e9);
    expect(e.get('default').secondsPerFlop).toBe(1 / 10e9);
    expect(new Estimates({ maxAdvertisedGflops: 50 }).get('q', 1000).secondsPerFlop).toBe(1 / 50e9);
    expect(new Estimates({ maxAdvertisedGflops: 50 }).get('q', Number.POSITIVE_INFINITY).secondsPerFlop).toBe(1 / 10e9);
    expect(new Estimates({ defaultRttMs: 40, defaultBandwidthBytesPerS: 1e6 }).get('q')).toMatchObject({ rttMs: 40, secondsPerByte: 1e-6 });
  });
});

describe('Estimates: replies', () => {
  it('the first reply sets each average, later ones move it by alpha', () => {
    const e = new Estimates();
    e.recordReply('p', 100, 10, 30, 1e9);
    expect(e.get('p')).toMatchObject({ rttMs: 60, secondsPerFlop: expect.closeTo(3e-11, 20), queueMs: 10, samples: 1, bandwidthSamples: 0 });
    e.recordReply('p', 50, 0, 20, 1e9);
    const p = e.get('p');
    expect(p.rttMs).toBeCloseTo(0.8 * 60 + 0.2 * 30, 9);
    expect(p.secondsPerFlop).toBeCloseTo(0.8 * 3e-11 + 0.2 * 2e-11, 20);
    expect(p.queueMs).toBeCloseTo(8, 9);
    expect(p.samples).toBe(2);
    const slow = new Estimates({ alpha: 0.5 });
    slow.recordReply('p', 100, 0, 0, 0);
    slow.recordReply('p', 50, 0, 0, 0);
    expect(slow.get('p').rttMs).toBeCloseTo(75, 9);
  });

  it('clamps the server\'s own times into the wall time: negative or missing to 0, queue first, then compute', () => {
    const e = new Estimates();
    e.recordReply('neg', 100, -50, Number.NaN, 1e9);
    expect(e.get('neg')).toMatchObject({ rttMs: 100, queueMs: 0, secondsPerFlop: 1e-10 }); // compute 0: speed untouched
    e.recordReply('q', 100, 150, 30, 1e9);
    expect(e.get('q')).toMatchObject({ rttMs: 0, queueMs: 100, secondsPerFlop: 1e-10 });
    e.recordReply('c', 100, 40, 80, 1e9);
    expect(e.get('c')).toMatchObject({ rttMs: 0, queueMs: 40, secondsPerFlop: expect.closeTo(6e-11, 20) });
    e.recordReply('noflops', 100, 0, 30, 0);
    expect(e.get('noflops').secondsPerFlop).toBe(1e-10);
  });

  it('a reply of at least the minimum bytes, slower than the round trip, is a bandwidth sample', () => {
    const e = new Estimates();
    e.recordReply('bw', 105, 0, 0, 0, 64 * 1024);
    const bw = e.get('bw');
    expect(bw.bandwidthSamples).toBe(1);
    expect(bw.secondsPerByte).toBeCloseTo(100 / 1000 / 65536, 18);
    expect(bw.rttMs).toBeCloseTo(5, 9); // what the new bandwidth does not explain
    e.recordReply('bw', 205, 0, 0, 0, 64 * 1024);
    expect(e.get('bw').bandwidthSamples).toBe(2);
    expect(e.get('bw').secondsPerByte).toBeCloseTo(0.8 * (100 / 1000 / 65536) + 0.2 * (200 / 1000 / 65536), 18);
    e.recordReply('small', 105, 0, 0, 0, 64 * 1024 - 1);
    expect(e.get('small')).toMatchObject({ bandwidthSamples: 0, secondsPerByte: 1e-9 });
    e.recordReply('atrtt', 5, 0, 0, 0, 1 << 20);
    expect(e.get('atrtt')).toMatchObject({ bandwidthSamples: 0, secondsPerByte: 1e-9 });
    const low = new Estimates({ minBandwidthSampleBytes: 10 });
    low.recordReply('p', 15, 0, 0, 0, 10);
    expect(low.get('p').secondsPerByte).toBeCloseTo(10 / 1000 / 10, 12);
  });

  it('the bytes\' share of a reply is not counted as round trip, and the round trip never goes negative', () => {
    const e = new Estimates({ defaultBandwidthBytesPerS: 1e6 });
    e.recordReply('p', 20, 0, 0, 0, 1000); // 1000 B at 1 MB/s = 1 ms
    expect(e.get('p').rttMs).toBeCloseTo(19, 9);
    e.recordReply('neg', 0.5, 0, 0, 0, 1000);
    expect(e.get('neg').rttMs).toBe(0);
  });

  it('after a ping the round trip comes only from pings and the speed from the wall time, not the reported compute', () => {
    const e = new Estimates({ defaultBandwidthBytesPerS: 1e6 });
    e.recordRoundTrip('p', 10);
    expect(e.get('p')).toMatchObject({ rttMs: 10, pingSamples: 1 });
    e.recordReply('p', 111, 5, 0.01, 1e9, 1000); // server time 111 − 10 − 1 − 5 = 95 ms
    expect(e.get('p').secondsPerFlop).toBeCloseTo(95 / 1000 / 1e9, 20);
    expect(e.get('p').rttMs).toBe(10);
    e.recordReply('p', 1, 0, 0, 1e9); // the wall time below the round trip: no negative speed
    expect(e.get('p').secondsPerFlop).toBeCloseTo(0.8 * 95e-12, 20);
    e.recordReply('p', 50, 0, 0, 0);
    expect(e.get('p').secondsPerFlop).toBeCloseTo(0.8 * 95e-12, 20);
    e.recordRoundTrip('p', 20);
    expect(e.get('p')).toMatchObject({ rttMs: 12, pingSamples: 2 });
    e.recordRoundTrip('p', 0);
    expect(e.get('p').rttMs).toBeCloseTo(9.6, 9);
  });

  it('ignores pings that are negative or not finite, without creating the peer', () => {
    const e = new Estimates();
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) e.recordRoundTrip('p', bad);
    expect(e.get('p', 2)).toMatchObject({ pingSamples: 0, rttMs: 5, secondsPerFlop: 1 / 2e9 });
  });
});

describe('Estimates: bans and condemnations', () => {
  it('bans for base × 2^failures up to the maximum, until exactly then; a reply lifts the ban and resets the count', () => {
    let now = 1000;
    const e = new Estimates({ banBaseMs: 100, banMaxMs: 250, now: () => now });
    expect(e.isBanned('p')).toBe(false);
    e.recordFailure('p');
    expect(e.get('p')).toMatchObject({ bannedUntil: 1100, failures: 1 });
    e.recordFailure('p');
    expect(e.get('p').bannedUntil).toBe(1200);
    e.recordFailure('p');
    expect(e.get('p').bannedUntil).toBe(1250);
    now = 1249;
    expect(e.isBanned('p')).toBe(true);
    expect([...e.banned()]).toEqual(['p']);
    now = 1250;
    expect(e.isBanned('p')).toBe(false);
    expect(e.banned().size).toBe(0);
    e.recordFailure('p');
    e.recordReply('p', 10, 0, 1, 1e6);
    expect(e.get('p')).toMatchObject({ bannedUntil: 0, failures: 0 });
    expect(e.isBanned('p')).toBe(false);
    e.recordFailure('p');
    expect(e.get('p').bannedUntil).toBe(1350);
  });

  it('defaults: 15 s first, doubling, at most 10 min', () => {
    const now = 0;
    const e = new Estimates({ now: () => now });
    const until: number[] = [];
    for (let i = 0; i < 7; i++) { e.recordFailure('p'); until.push(e.get('p').bannedUntil); }
    expect(until).toEqual([15_000, 30_000, 60_000, 120_000, 240_000, 480_000, 600_000]);
  });

  it('condemns for good by default or until a time, keeps the later end, and a reply does not lift it', () => {
    let now = 0;
    const e = new Estimates({ now: () => now });
    e.condemn('forever');
    e.condemn('timed', 1000);
    e.condemn('timed', 10);
    e.recordReply('timed', 10, 0, 1, 1e6);
    expect(e.isCondemned('timed')).toBe(true);
    expect(e.isBanned('timed')).toBe(true);
    expect([...e.banned()].sort()).toEqual(['forever', 'timed']);
    now = 999;
    expect(e.isCondemned('timed')).toBe(true);
    now = 1000;
    expect(e.isCondemned('timed')).toBe(false);
    expect(e.isBanned('timed')).toBe(false);
    expect([...e.banned()]).toEqual(['forever']);
    expect(e.isCondemned('never')).toBe(false);
    now = 1e15;
    expect(e.isCondemned('forever')).toBe(true);
    e.condemn('later', 500);
    expect(e.isBanned('later')).toBe(true);
  });
});
