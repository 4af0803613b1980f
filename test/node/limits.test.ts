/**
 * Share limits (node/limits.ts): hour windows (across midnight too), clear refusals of malformed or nonsensical
 * limits, and sessions admitted only inside the limits.
 */
import { describe, expect, it } from 'vitest';
import { parseHours, ShareLimits, withinHours } from '../../node/limits.js';

const at = (h: number, m = 0): Date => new Date(2026, 10, 24, h, m);
const machine = { memoryBytes: 8 * 2 ** 30, cores: 4 };

describe('share limits', () => {
  it('reads hour windows, also across midnight', () => {
    const night = parseHours('22:00-08:00');
    expect([at(23), at(2), at(7, 59)].map((d) => withinHours(night, d))).toEqual([true, true, true]);
    expect([at(8), at(12), at(21, 59)].map((d) => withinHours(night, d))).toEqual([false, false, false]);
    const day = parseHours('9:30-17:00');
    expect([at(9, 29), at(9, 30), at(16, 59), at(17)].map((d) => withinHours(day, d))).toEqual([false, true, true, false]);
  });

  it('rejects malformed windows with a message naming the problem', () => {
    expect(() => parseHours('10pm-8am')).toThrow(/--hours must look like 22:00-08:00/);
    expect(() => parseHours('25:00-08:00')).toThrow(/invalid time/);
    expect(() => parseHours('08:00-08:00')).toThrow(/empty/);
  });

  it('admits sessions only within the limits, the hours and while not paused', () => {
    const limits = new ShareLimits({ maxSessions: 2, hours: '22:00-08:00' }, machine);
    expect(limits.maxMemoryBytes).toBe(2 * 2 ** 30);
    expect(limits.threads).toBe(4);
    expect(limits.admit(0, at(23))).toEqual({ ok: true });
    expect(limits.admit(2, at(23))).toMatchObject({ ok: false, reason: expect.stringMatching(/limit of 2 sessions/) });
    expect(limits.admit(0, at(12))).toMatchObject({ ok: false, reason: expect.stringMatching(/only during 22:00-08:00/) });
    limits.pause();
    expect(limits.admit(0, at(23))).toMatchObject({ ok: false, reason: expect.stringMatching(/paused/) });
    limits.resume();
    expect(limits.admit(1, at(1))).toEqual({ ok: true });
  });

  it('refuses nonsensical limits', () => {
    expect(() => new ShareLimits({ gpuShare: 1.5 }, machine)).toThrow(/--gpu-share/);
    expect(() => new ShareLimits({ maxSessions: 0 }, machine)).toThrow(/--max-sessions/);
    expect(() => new ShareLimits({ maxMemoryBytes: -1 }, machine)).toThrow(/--max-memory/);
  });
});
