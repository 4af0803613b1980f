/**
 * The arithmetic of selective activation (fragments/moe/routing.ts): top-k per token in ONNX TopK's order, the
 * model's own gates when every chosen expert is live, the next-ranked live expert with renormalised weights
 * when one is not (what a softmax top-k router computes with that expert masked out), tokens grouped per expert.
 */
import { describe, expect, it } from 'vitest';
import { combineExperts, routeTokens, tokensPerExpert } from '../../fragments/moe/routing.js';

const softmax = (v: number[]): number[] => { const m = Math.max(...v); const e = v.map((x) => Math.exp(x - m)); const s = e.reduce((a, b) => a + b, 0); return e.map((x) => x / s); };

describe('routeTokens', () => {
  // Two tokens, four experts; logits scores. Token 0 ranks 1 > 2 > 0 > 3; token 1 ranks 3 > 0 > 1 = 2.
  const scores = Float32Array.from([1, 3, 2, 0, 2, 1, 1, 4]);
  const gates = Float32Array.from([0, 0.7, 0.3, 0, 0.2, 0, 0, 0.8]);

  it('with every expert live: the top-k by score, weighted by the model\'s gates', () => {
    const routes = routeTokens(scores, gates, 4, 2, 'logits');
    expect(routes.map((r) => r.experts)).toEqual([[1, 2], [3, 0]]);
    expect(routes[0].weights[0]).toBeCloseTo(0.7);
    expect(routes[1].weights[1]).toBeCloseTo(0.2);
    expect(routes.every((r) => r.replaced.length === 0)).toBe(true);
  });

  it('a dead expert: the next-ranked live one stands in, weights renormalised (softmax of logits, or probabilities over their sum)', () => {
    const routes = routeTokens(scores, gates, 4, 2, 'logits', (e) => e !== 1);
    expect(routes[0].experts).toEqual([2, 0]);
    expect(routes[0].replaced).toEqual([{ expert: 1, by: 0 }]);
    const expected = softmax([2, 1]);
    routes[0].weights.forEach((w, i) => expect(w).toBeCloseTo(expected[i], 6));
    // Token 1 never chose expert 1: untouched.
    expect(routes[1]).toMatchObject({ experts: [3, 0], replaced: [] });

    const probs = Float32Array.from([0.1, 0.5, 0.3, 0.1]);
    const [p] = routeTokens(probs, Float32Array.from([0, 0.625, 0.375, 0]), 4, 2, 'probabilities', (e) => e !== 2);
    expect(p.experts).toEqual([1, 0]);
    expect(p.weights[0]).toBeCloseTo(0.5 / 0.6, 6);
    expect(p.weights[1]).toBeCloseTo(0.1 / 0.6, 6);
  });

  it('ties go to the lower index, as ONNX TopK orders them', () => {
    const [r] = routeTokens(Float32Array.from([1, 2, 2, 2]), Float32Array.from([0, 0.5, 0.5, 0]), 4, 2, 'logits');
    expect(r.experts).toEqual([1, 2]);
  });
});

it('tokens are grouped per expert (one call each) and the weighted sum follows the routes', () => {
  const routes = [
    { experts: [1, 0], weights: [0.75, 0.25], replaced: [] },
    { experts: [1, 2], weights: [0.5, 0.5], replaced: [] },
  ];
  expect([...tokensPerExpert(routes).entries()]).toEqual([[0, [0]], [1, [0, 1]], [2, [1]]]);
  const out = combineExperts(routes, 2, new Map([
    [0, { rows: [0], data: Float32Array.from([4, 8]) }],
    [1, { rows: [0, 1], data: Float32Array.from([1, 1, 2, 2]) }],
    [2, { rows: [1], data: Float32Array.from([10, 20]) }],
  ]));
  expect([...out]).toEqual([1.75, 2.75, 6, 11]);
});
