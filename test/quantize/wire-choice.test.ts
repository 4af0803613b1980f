/**
 * The client's wire encoding choice (policy/wire-encoding.ts): compress when transfer time dominates, fp16 when
 * halving is enough, exact when asked, before the link is measured, on fast links and for one decode token.
 */
import { describe, expect, it } from 'vitest';
import { chooseWireEncoding, type WireChoiceInput } from '../../policy/wire-encoding.js';

/** A 100 Mbit/s link with 20 ms round trip, measured, and a server doing 10 GFLOP/s. */
const WAN = { rttMs: 20, secondsPerByte: 8 / 100e6, secondsPerFlop: 1e-10, bandwidthSamples: 5 };
const LOOPBACK = { rttMs: 0.2, secondsPerByte: 1 / 2e9, secondsPerFlop: 1e-10, bandwidthSamples: 5 };
/** Prefill of 512 positions of a d-1024 hidden state: 2 MiB of float32, 100 MFLOP. */
const PREFILL: Omit<WireChoiceInput, 'estimate'> = { exact: false, floatBytes: 512 * 1024 * 4, otherBytes: 512 * 16, flops: 1e8 };

describe('choosing the wire encoding', () => {
  it('compresses a prefill over a slow link, int8 when fp16 still dominates', () => {
    const c = chooseWireEncoding({ ...PREFILL, estimate: WAN });
    expect(c.transferMs.exact).toBeGreaterThan(c.otherMs);
    expect(c.encoding).toBe('int8');
    expect(chooseWireEncoding({ ...PREFILL, estimate: WAN, offered: ['exact', 'fp16'] }).encoding).toBe('fp16');
    expect(chooseWireEncoding({ ...PREFILL, estimate: WAN, offered: ['exact'] }).encoding).toBe('exact');
  });

  it('picks fp16 when halving the bytes is enough', () => {
    const c = chooseWireEncoding({ exact: false, floatBytes: 300_000, flops: 1e8, estimate: WAN });
    expect(c.transferMs.exact).toBeGreaterThan(0.5 * c.otherMs);
    expect(c.transferMs.fp16).toBeLessThanOrEqual(0.5 * c.otherMs);
    expect(c.encoding).toBe('fp16');
  });

  it('stays exact when asked, before the bandwidth is measured, on a fast link, and for one decode token', () => {
    expect(chooseWireEncoding({ ...PREFILL, exact: true, estimate: WAN })).toMatchObject({ encoding: 'exact', reason: 'the request asks for exact outputs' });
    expect(chooseWireEncoding({ ...PREFILL, estimate: { ...WAN, bandwidthSamples: 0 } }).encoding).toBe('exact');
    expect(chooseWireEncoding({ ...PREFILL, estimate: LOOPBACK }).encoding).toBe('exact');
    // Decode: one position, 4 KiB: the round trip, not the bytes, bounds it.
    expect(chooseWireEncoding({ exact: false, floatBytes: 4096, flops: 2e5, estimate: WAN })).toMatchObject({ encoding: 'exact', reason: 'transfer does not dominate' });
  });
});
