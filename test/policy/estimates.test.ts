/**
 * Per-peer round trip and bandwidth learnt from replies (policy/estimates.ts), and what routing makes of them:
 * a reply's network time is `rtt + bytes / bandwidth`; small and large calls over one link pull the two apart,
 * and a route then prefers the short round trip for decode and the wide link for a long prefill.
 */
import { describe, expect, it } from 'vitest';
import { Estimates } from '../../policy/estimates.js';
import { findRoute, type FragmentCost, type ServerEstimate } from '../../policy/routing.js';
import { seededRandom } from '../../fragments/seeded-random.js';

/** A reply over a link of `rttMs` and `bytesPerS`, with server time on top and ±5 % noise on the network part. */
function reply(e: Estimates, peer: string, link: { rttMs: number; bytesPerS: number }, bytes: number, r: () => number): void {
  const networkMs = (link.rttMs + (bytes / link.bytesPerS) * 1000) * (0.95 + 0.1 * r());
  const queueMs = 2 * r();
  const computeMs = 3 + 2 * r();
  e.recordReply(peer, networkMs + queueMs + computeMs, queueMs, computeMs, 1e6, bytes);
}

describe('round trip and bandwidth per peer', () => {
  it('separates a 40 ms / 10 MB/s link from mixed small and large replies', () => {
    const e = new Estimates();
    const r = seededRandom(7);
    const link = { rttMs: 40, bytesPerS: 10e6 };
    for (let i = 0; i < 200; i++) reply(e, 'wan', link, i % 3 === 0 ? 4 * 1024 * 1024 : 2048, r);
    const est = e.get('wan');
    expect(est.rttMs).toBeGreaterThan(36);
    expect(est.rttMs).toBeLessThan(44);
    expect(1 / est.secondsPerByte).toBeGreaterThan(9e6);
    expect(1 / est.secondsPerByte).toBeLessThan(11e6);
  });

  it('keeps the default bandwidth until a reply moves enough bytes, and the round trip from small replies', () => {
    const e = new Estimates({ defaultBandwidthBytesPerS: 1e9 });
    const r = seededRandom(3);
    for (let i = 0; i < 50; i++) reply(e, 'lan', { rttMs: 0.5, bytesPerS: 1e8 }, 1024, r);
    expect(e.get('lan').secondsPerByte).toBe(1 / 1e9);
    expect(e.get('lan').rttMs).toBeGreaterThan(0.4);
    expect(e.get('lan').rttMs).toBeLessThan(0.6);
    expect(e.get('lan').bandwidthSamples).toBe(0);
  });

  it('routing uses them: the short round trip for one decode token, the wide link for a long prefill', () => {
    const e = new Estimates();
    const r = seededRandom(11);
    const near = { rttMs: 5, bytesPerS: 2e6 }; // close but thin (a home uplink)
    const wide = { rttMs: 60, bytesPerS: 1e9 }; // far but wide (a datacentre)
    for (let i = 0; i < 100; i++) {
      const bytes = i % 2 ? 1024 : 2 * 1024 * 1024;
      reply(e, 'near', near, bytes, r);
      reply(e, 'wide', wide, bytes, r);
    }
    const fragments: FragmentCost[] = [{ flopsPerToken: 1e6, inputBytesPerToken: 16384, outputBytesPerToken: 16384 }];
    const servers: ServerEstimate[] = ['near', 'wide'].map((peerId) => {
      const est = e.get(peerId);
      return { peerId, start: 0, end: 1, secondsPerFlop: 1e-12, rttMs: est.rttMs, bandwidthBytesPerS: 1 / est.secondsPerByte, queueMs: 0, inflight: 0, capacity: 4 };
    });
    const via = (tokens: number): string => findRoute(fragments, servers, { from: 0, to: 1, tokens, mode: 'latency' }).stages[0].calls[0].peerId;
    expect(via(1)).toBe('near');
    expect(via(512)).toBe('wide');
  });
});
