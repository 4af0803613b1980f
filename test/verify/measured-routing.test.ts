/**
 * Routing learns from what the client measured, never from what a supplier says of itself (issue 21,
 * policy/estimates.ts): an advertised speed cannot seed an estimate above the cap, reported times are clamped
 * to the wall time, and once the client has pinged a peer, a supplier that reports computeMs = 0.01 gets the
 * compute estimate its wall times show, so it wins neither decode nor prefill over a faster honest peer.
 */
import { describe, expect, it } from 'vitest';
import { Estimates } from '../../policy/estimates.js';
import { findRoute, type FragmentCost, type ServerEstimate } from '../../policy/routing.js';

const FLOPS_PER_TOKEN = 2e8;

/** A call of `tokens` positions to a server that takes `msPerToken` each over a link of `rttMs`; it reports `reportedComputeMs`. */
function call(e: Estimates, peer: string, rttMs: number, msPerToken: number, tokens: number, reportedComputeMs?: number): void {
  const computeMs = msPerToken * tokens;
  e.recordReply(peer, rttMs + computeMs, 0, reportedComputeMs ?? computeMs, FLOPS_PER_TOKEN * tokens, 0);
}

function route(e: Estimates, tokens: number): string {
  const fragments: FragmentCost[] = [{ flopsPerToken: FLOPS_PER_TOKEN, inputBytesPerToken: 0, outputBytesPerToken: 0 }];
  const servers: ServerEstimate[] = ['liar', 'honest'].map((peerId) => {
    const est = e.get(peerId);
    return { peerId, start: 0, end: 1, secondsPerFlop: est.secondsPerFlop, rttMs: est.rttMs, bandwidthBytesPerS: 1 / est.secondsPerByte, queueMs: est.queueMs, inflight: 0, capacity: 4 };
  });
  return findRoute(fragments, servers, { from: 0, to: 1, tokens, mode: 'latency' }).stages[0].calls[0].peerId;
}

describe('routing from client measurements', () => {
  it('an advertised speed seeds at most the cap; a lower one is kept', () => {
    const e = new Estimates({ maxAdvertisedGflops: 10 });
    expect(e.get('liar', 1e6).secondsPerFlop).toBe(1 / 10e9);
    expect(e.get('modest', 2).secondsPerFlop).toBe(1 / 2e9);
  });

  it('a reported compute time larger than the wall time is clamped to it', () => {
    const e = new Estimates();
    e.recordReply('p', 10, 0, 1e9, 1e9, 0);
    expect(e.get('p').secondsPerFlop).toBeCloseTo(10 / 1000 / 1e9, 18);
    expect(e.get('p').rttMs).toBe(0);
  });

  it('with pinged round trips, a supplier reporting computeMs = 0.01 while twice as slow loses decode and prefill to the honest one', () => {
    const e = new Estimates();
    e.get('liar', 1e6);
    e.get('honest', 1);
    for (let i = 0; i < 20; i++) {
      e.recordRoundTrip('liar', 2);
      e.recordRoundTrip('honest', 2);
      for (const tokens of [1, 1, 1, 64]) {
        call(e, 'liar', 2, 2, tokens, 0.01);
        call(e, 'honest', 2, 1, tokens);
      }
    }
    expect(e.get('liar').secondsPerFlop / e.get('honest').secondsPerFlop).toBeCloseTo(2, 1);
    expect(route(e, 1)).toBe('honest');
    expect(route(e, 512)).toBe('honest');
  });

  it('without pings the lie would move the liar\'s time into its round trip and win it the prefill: why the session pings', () => {
    const e = new Estimates();
    for (let i = 0; i < 20; i++) {
      for (const tokens of [1, 1, 1, 64]) {
        call(e, 'liar', 2, 2, tokens, 0.01);
        call(e, 'honest', 2, 1, tokens);
      }
    }
    expect(route(e, 512)).toBe('liar');
  });
});
