/**
 * Placement (policy/): spans fitted to memory, a model covered as suppliers join, gaps closed without flapping, and
 * never the last host of a fragment moved away.
 */
import { describe, expect, it } from 'vitest';
import { chooseSpan, coverage, shouldMove, spanLengthAt, type PlacedServer } from '../../policy/placement.js';

const model = { fragmentBytes: [4, 4, 4, 4, 4, 4, 4, 4] }; // 8 fragments of 4 units
type Server = PlacedServer & { memoryBytes: number };

/** Suppliers join one at a time, each choosing by the current coverage. */
function join(swarm: Server[], id: string, memoryBytes: number, throughput: number): Server {
  const span = chooseSpan(coverage(swarm, 8), model, memoryBytes)!;
  const s = { peerId: id, ...span, throughput, memoryBytes };
  swarm.push(s);
  return s;
}

describe('placement', () => {
  it('fits spans to memory, fragment by fragment', () => {
    const uneven = { fragmentBytes: [10, 1, 1, 1, 10] };
    expect(spanLengthAt(uneven, 0, 12)).toBe(3);
    expect(spanLengthAt(uneven, 1, 12)).toBe(3);
    expect(spanLengthAt(uneven, 4, 9)).toBe(0);
  });

  it('covers a model from scratch as suppliers join', () => {
    const swarm: Server[] = [];
    join(swarm, 'a', 12, 10); // 3 fragments each
    expect(Math.min(...coverage(swarm, 8))).toBe(0);
    join(swarm, 'b', 12, 10);
    join(swarm, 'c', 12, 10);
    const tau = coverage(swarm, 8);
    expect(Math.min(...tau), `coverage ${Array.from(tau)}`).toBeGreaterThan(0);
    // Then newcomers reinforce the weakest fragments.
    join(swarm, 'd', 12, 10);
    join(swarm, 'e', 12, 10);
    join(swarm, 'f', 12, 10);
    const after = coverage(swarm, 8);
    expect(Math.min(...after)).toBeGreaterThanOrEqual(10);
  });

  it('moves a supplier to close a gap after another leaves, and does not flap when balanced', () => {
    const swarm: Server[] = [
      { peerId: 'a', start: 0, end: 4, throughput: 10, memoryBytes: 16 },
      { peerId: 'b', start: 4, end: 8, throughput: 10, memoryBytes: 16 },
      { peerId: 'c', start: 0, end: 4, throughput: 10, memoryBytes: 16 },
      { peerId: 'd', start: 4, end: 8, throughput: 10, memoryBytes: 16 },
    ];
    for (const s of swarm) expect(shouldMove(s, swarm, model).move).toBe(false);
    // b and d leave: fragments 4..7 lose all hosts; a (or c) should move there.
    const left = swarm.filter((s) => s.peerId === 'a' || s.peerId === 'c');
    const check = shouldMove(left[0], left, model);
    expect(check.move).toBe(true);
    expect(check.target).toEqual({ start: 4, end: 8 });
    expect(check.before).toBe(0);
    expect(check.after).toBeCloseTo(10, 9);
  });

  it('never moves the last host of a fragment away', () => {
    const swarm: Server[] = [
      { peerId: 'a', start: 0, end: 4, throughput: 10, memoryBytes: 16 },
      { peerId: 'b', start: 4, end: 8, throughput: 1, memoryBytes: 16 },
      { peerId: 'c', start: 4, end: 8, throughput: 1, memoryBytes: 16 },
    ];
    expect(shouldMove(swarm[0], swarm, model).move).toBe(false);
  });
});
