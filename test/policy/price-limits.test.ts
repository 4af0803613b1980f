/**
 * The price policy over plain data: which advertised prices a client admits (operator maximum, median cap) and
 * the most a request may cost at the admitted prices.
 */
import { describe, expect, it } from 'vitest';
import { admissibleSpans, costCeiling, dearestPrices, medianPrice, type PricedSpan } from '../../policy/price-limits.js';
import { stepCharge } from '../../policy/pricing.js';

const span = (peerId: string, start: number, end: number, price: string): PricedSpan => ({ peerId, start, end, pricePerGflop: price });
const limits = { maxPricePerGflop: 10n ** 15n, maxOverMedian: 4 };

describe('price policy', () => {
  it('takes the lower median of the priced hosts, one price per peer', () => {
    expect(medianPrice([span('a', 0, 1, '100'), span('rogue', 1, 2, '711660000000000000000')])).toBe(100n);
    expect(medianPrice([span('a', 0, 1, '100'), span('b', 0, 1, '300'), span('b', 1, 2, '300'), span('c', 1, 2, '200'), span('free', 0, 2, '0')])).toBe(200n);
    expect(medianPrice([span('free', 0, 2, '0')])).toBe(0n);
  });

  it('refuses hosts above the maximum, far above the median, or with an unreadable price; names why per fragment', () => {
    const spans = [span('a', 0, 2, '1000'), span('b', 0, 1, '1200'), span('greedy', 1, 2, '5000'), span('rogue', 2, 3, (10n ** 21n).toString()), span('junk', 0, 3, '1e3'), span('free', 0, 1, '0')];
    const { spans: kept, refused } = admissibleSpans(spans, limits, 3);
    expect(kept.map((s) => s.peerId)).toEqual(['a', 'b', 'free']);
    expect([...refused.keys()]).toEqual([2]);
    expect(refused.get(2)).toMatch(/supplier (rogue|junk) is refused/);
    expect(admissibleSpans([span('rogue', 0, 1, (10n ** 21n).toString())], limits, 1).refused.get(0)).toMatch(/above this client's maximum/);
    // Alone, a host is its own median: only the maximum binds.
    expect(admissibleSpans([span('solo', 0, 1, '999999999999999')], limits, 1).spans).toHaveLength(1);
  });

  it('bounds what a request is charged: every step at the dearest admitted prices fits under the ceiling', () => {
    const manifest = {
      fragments: [{ flops: 3_000_000_001 }, { flops: 7_000_000_003 }] as never,
      costDims: { sequence: 16 } as never,
      statefulPairs: [{ input: 'past', output: 'present' }] as never,
    };
    const spans = [span('a', 0, 2, '1000000000007'), span('b', 0, 1, '2000000000011'), span('c', 1, 2, '900000000000')];
    const prices = dearestPrices(admissibleSpans(spans, limits, 2).spans, 2);
    expect(prices).toEqual([2000000000011n, 1000000000007n]);
    const prompt = 5;
    const maxTokens = 9;
    const ceiling = costCeiling(manifest, prices, { positions: prompt + maxTokens, steps: maxTokens + 1 });
    // The dearest route, step by step (prefill then one position a step), each charge rounded up on its own.
    let charged = 0n;
    for (const tokens of [prompt, ...new Array<number>(maxTokens).fill(1)]) {
      charged += stepCharge(manifest, prices[0], { start: 0, end: 1, chunkTokens: [tokens] }) + stepCharge(manifest, prices[1], { start: 1, end: 2, chunkTokens: [tokens] });
    }
    expect(charged).toBeLessThanOrEqual(ceiling);
    expect(ceiling - charged).toBeLessThanOrEqual(2n * BigInt(maxTokens + 1));
    expect(costCeiling(manifest, [0n, 0n], { positions: 14, steps: 10 })).toBe(0n);
  });
});
