/**
 * policy/peer-penalties.ts: offences counted per peer and kind in a window, the one too many refuses the peer,
 * the refusal doubles per repeat and is forgotten after good behaviour, and the map of peers stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_GARBAGE_RULE, DEFAULT_STREAM_RULE, PeerPenalties } from '../../policy/peer-penalties.js';

describe('peer penalties', () => {
  it('the limit-th offence within the window refuses the peer; fewer, or spread over windows, do not', () => {
    let now = 0;
    const p = new PeerPenalties({ garbage: { limit: 3, windowMs: 1000 }, refuseMs: 500, now: () => now });
    expect(p.record('a', 'garbage')).toBeUndefined();
    expect(p.record('a', 'garbage')).toBeUndefined();
    now = 999;
    expect(p.record('a', 'garbage')).toEqual({ peerId: 'a', kind: 'garbage', count: 3, until: 1499, repeat: 1 });
    expect(p.isRefused('a')).toBe(true);
    expect(p.refusedUntil('a')).toBe(1499);
    expect(p.refused()).toEqual(['a']);
    // another peer is untouched, and offences while refused are not counted
    expect(p.isRefused('b')).toBe(false);
    expect(p.record('a', 'garbage')).toBeUndefined();
    now = 1499;
    expect(p.isRefused('a')).toBe(false);
    expect(p.refusedUntil('a')).toBe(0);
    // a window that ran out starts again
    const q = new PeerPenalties({ garbage: { limit: 2, windowMs: 1000 }, now: () => now });
    now = 0;
    expect(q.record('c', 'garbage')).toBeUndefined();
    now = 1000;
    expect(q.record('c', 'garbage')).toBeUndefined();
    expect(q.record('c', 'garbage')?.count).toBe(2);
  });

  it('counts each kind against its own rule', () => {
    const now = 0;
    const p = new PeerPenalties({ garbage: { limit: 2, windowMs: 1000 }, streams: { limit: 3, windowMs: 1000 }, now: () => now });
    expect(p.record('a', 'streams')).toBeUndefined();
    expect(p.record('a', 'garbage')).toBeUndefined();
    expect(p.record('a', 'streams')).toBeUndefined();
    expect(p.record('a', 'streams')?.kind).toBe('streams');
    expect(DEFAULT_GARBAGE_RULE).toEqual({ limit: 16, windowMs: 60_000 });
    expect(DEFAULT_STREAM_RULE).toEqual({ limit: 600, windowMs: 10_000 });
  });

  it('doubles the refusal per repeat offence up to the cap, and forgets the repeats after good behaviour', () => {
    let now = 0;
    const p = new PeerPenalties({ garbage: { limit: 1, windowMs: 1000 }, refuseMs: 100, maxRefuseMs: 300, forgetMs: 10_000, now: () => now });
    const lengths: number[] = [];
    for (let i = 0; i < 4; i++) {
      const penalty = p.record('a', 'garbage')!;
      lengths.push(penalty.until - now);
      now = penalty.until;
    }
    expect(lengths).toEqual([100, 200, 300, 300]);
    now += 10_000;
    expect(p.record('a', 'garbage')).toMatchObject({ repeat: 1, until: now + 100 });
  });

  it('keeps at most maxTracked idle peers: a flood of fresh peer ids does not grow the map', () => {
    let now = 0;
    const p = new PeerPenalties({ garbage: { limit: 5, windowMs: 10 }, maxTracked: 100, now: () => now });
    for (let i = 0; i < 10_000; i++) {
      p.record(`peer-${i}`, 'garbage');
      now++;
    }
    expect(p.tracked).toBeLessThanOrEqual(111);
  });
});
