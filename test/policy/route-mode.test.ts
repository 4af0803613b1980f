/**
 * policy/route-mode: star or chain per route from the servers' round trips to the client (issue 19).
 */
import { describe, expect, it } from 'vitest';
import { chainTransitMs, prefersChain, starTransitMs } from '../../policy/route-mode.js';

describe('route mode', () => {
  it('a star costs each server\'s round trip; a chain half the ends plus half the smaller side of each junction', () => {
    expect(starTransitMs([50, 50, 50, 50])).toBe(200);
    // 4 servers 50 ms away: 25 out, 3 junctions of 25, 25 back = 5 one-way trips
    expect(chainTransitMs([50, 50, 50, 50])).toBe(125);
    expect(chainTransitMs([10, 80])).toBe(5 + 40 + 5);
    expect(chainTransitMs([])).toBe(0);
  });

  it('star never chains, chain always does from two servers on, auto only where the estimate saves enough', () => {
    expect(prefersChain('star', [50, 50])).toBe(false);
    expect(prefersChain('chain', [50])).toBe(false);
    expect(prefersChain('chain', [0.01, 0.01])).toBe(true);
    expect(prefersChain('auto', [50, 50, 50])).toBe(true);
    expect(prefersChain('auto', [0.05, 0.05])).toBe(false); // saves 0.025 ms: below what forwarding costs
    expect(prefersChain('auto', [0.05, 0.05], 0.01)).toBe(true);
  });
});
