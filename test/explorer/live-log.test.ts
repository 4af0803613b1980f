/**
 * The Live view's bookkeeping (explorer/live-log.ts) over the gateway's real EventFeed: a finished request's
 * route and hops, a failed-over hop marked as replaced, the pipeline graph's edges, the stats buckets' tokens/s
 * and p50/p95, and nothing of the caller's key reaching the explorer.
 */
import { describe, expect, it } from 'vitest';
import { EventFeed, type FeedEvent } from '../../gateway/feed.js';
import { LiveLog, quantile } from '../../explorer/live-log.js';

const hop = (peerId: string, fragments: [number, number], wallMs: number, replayed = 0) => ({
  peerId, fragments, steps: 4, wallMs, computeMs: wallMs / 2, queueMs: 1, paymentMs: 0.5, payerMs: 0.2, replayed, cost: '10', paidSteps: 4,
});

function finished(requestId: string, at: number, latencyMs: number, tokens: number, extra: Partial<FeedEvent> = {}): FeedEvent {
  return {
    event: 'request.finished', requestId, at, endpoint: '/v1/completions', model: 'm', manifestCid: 'cid', synthetic: true, key: 'alice', status: 200,
    route: [{ peerId: 'A', fragments: [0, 0] }, { peerId: 'B', fragments: [1, 1] }], hops: [hop('A', [0, 0], 20), hop('B', [1, 1], 30)],
    failovers: 0, steps: 4, cost: '20', latencyMs, usage: { promptTokens: 3, completionTokens: tokens }, ...extra,
  } as FeedEvent;
}

describe('LiveLog', () => {
  it('follows the gateway feed: started then finished, with route, hops and edges; no key', () => {
    const feed = new EventFeed();
    const log = new LiveLog({ now: () => 100_000 });
    feed.publish({ event: 'request.started', requestId: 'r0', at: 90_000, endpoint: '/v1/completions', model: 'm', key: 'alice', stream: false });
    log.follow(feed); // history first
    expect(log.request('r0')?.state).toBe('running');
    const seen: string[] = [];
    log.subscribe((r) => seen.push(`${r.requestId}:${r.state}`));
    feed.publish(finished('r0', 91_000, 50, 4));
    expect(seen).toEqual(['r0:finished']);
    const r = log.request('r0')!;
    expect(r.route.map((h) => h.peerId)).toEqual(['A', 'B']);
    expect(r.hops.map((h) => [h.peerId, h.wallMs, h.replaced])).toEqual([['A', 20, false], ['B', 30, false]]);
    expect(log.traffic()).toEqual([
      { from: 'gateway', to: 'A', requests: 1, steps: 4 }, { from: 'A', to: 'B', requests: 1, steps: 4 }, { from: 'B', to: 'gateway', requests: 1, steps: 4 },
    ]);
    expect(JSON.stringify(log.recent())).not.toContain('alice');
  });

  it('marks a failed-over hop whose peer left the route as replaced, and the failover count', () => {
    const log = new LiveLog();
    log.add(finished('r1', 1000, 80, 2, {
      failovers: 1, route: [{ peerId: 'C', fragments: [0, 0] }, { peerId: 'B', fragments: [1, 1] }],
      hops: [hop('A', [0, 0], 5), hop('C', [0, 0], 25, 3), hop('B', [1, 1], 30)],
    } as Partial<FeedEvent>));
    const r = log.request('r1')!;
    expect(r.failovers).toBe(1);
    expect(r.failedOver).toBe(true);
    expect(r.hops.filter((h) => h.replaced).map((h) => h.peerId)).toEqual(['A']);
    expect(r.hops.find((h) => h.peerId === 'C')?.replayed).toBe(3);
    // A failover whose failed step never reported its count still shows: the hop whose peer left the route.
    log.add(finished('r3', 1000, 80, 2, { failovers: 0, route: [{ peerId: 'C', fragments: [0, 0] }, { peerId: 'B', fragments: [1, 1] }] } as Partial<FeedEvent>));
    expect([log.request('r3')!.failovers, log.request('r3')!.failedOver]).toEqual([0, true]);
    expect(log.request('r3')!.hops.filter((h) => h.replaced).map((h) => h.peerId)).toEqual(['A']);
  });

  it('a failure carries its code, never its text', () => {
    const feed = new EventFeed();
    const log = new LiveLog();
    log.follow(feed);
    feed.publish({ event: 'request.failed', requestId: 'r2', at: 1, endpoint: '/v1/completions', key: 'bob', status: 402, error: 'key bob spent 5 of its budget 5' });
    const r = log.request('r2')!;
    expect([r.state, r.status, r.error]).toEqual(['failed', 402, 'insufficient_quota']);
    expect(JSON.stringify(r)).not.toContain('bob');
  });

  it('buckets tokens per second and p50/p95 latency; empty buckets are filled in up to now', () => {
    const log = new LiveLog({ bucketMs: 10_000, keepBuckets: 3, now: () => 35_000 });
    for (let i = 1; i <= 20; i++) log.add(finished(`a${i}`, 21_000 + i, i * 10, 5));
    log.add(finished('b', 31_000, 7, 10));
    const stats = log.stats();
    expect(stats.map((s) => s.at)).toEqual([10_000, 20_000, 30_000]);
    expect(stats[0]).toMatchObject({ requests: 0, tokensPerSecond: 0 });
    expect(stats[1]).toMatchObject({ requests: 20, tokensPerSecond: 10, p50Ms: 100, p95Ms: 190 });
    expect(stats[2]).toMatchObject({ requests: 1, tokensPerSecond: 1, p50Ms: 7, p95Ms: 7 });
    expect(quantile([], 0.5)).toBeUndefined();
  });

  it('keeps the newest requests only', () => {
    const log = new LiveLog({ keepRequests: 3 });
    for (let i = 0; i < 5; i++) log.add(finished(`r${i}`, i, 1, 1));
    expect(log.recent().map((r) => r.requestId)).toEqual(['r4', 'r3', 'r2']);
  });
});
