/**
 * What the gateway reports of selective activation: a request's route metadata (also the feed's record) sums
 * its steps' expert calls, their cost and fallbacks per layer and expert, and the metrics count the tokens that fell back.
 */
import { expect, it } from 'vitest';
import { RequestTrace } from '../../gateway/trace.js';
import { GatewayMetrics } from '../../gateway/metrics.js';
import type { StepOutcome } from '../../scheduler/session.js';

const hop = (fragment: number, experts: number[], tokens: number) => ({ layer: 0, fragment, experts, tokens, peerId: 'p', wallMs: 1, bytesSent: 4 * tokens, cost: BigInt(10 * tokens) });

it('route metadata sums expert calls and fallbacks; metrics count the fallen-back tokens', () => {
  const trace = new RequestTrace('r1', { name: 'moe', manifestCid: 'cid', synthetic: true });
  const step = (fallbackTokens: number): StepOutcome => ({
    outputs: {}, hops: [], failovers: 0,
    experts: { hops: [hop(1, [], 3), hop(2, [0], 3), hop(3, [1], 3)], fallbacks: fallbackTokens ? [{ layer: 0, expert: 2, by: 1, tokens: fallbackTokens }] : [] },
  });
  trace.addStep(step(2));
  trace.addStep(step(1));
  trace.addStep(step(0));
  const meta = trace.metadata([]);
  expect(meta.experts).toEqual({ calls: 9, cost: '270', fallbacks: [{ layer: 0, expert: 2, by: 1, tokens: 3 }] });
  // expert and router calls are part of the request's cost
  expect(meta.cost).toBe('270');

  const dense = new RequestTrace('r2', { name: 'gpt', manifestCid: 'cid', synthetic: true });
  dense.addStep({ outputs: {}, hops: [], failovers: 0 });
  expect(dense.metadata([]).experts).toBeUndefined();

  const metrics = new GatewayMetrics();
  metrics.recordGridRequest({ ...meta, key: 'k' });
  return metrics.registry.getSingleMetricAsString('gridpipe_gateway_expert_fallbacks_total').then((text) => {
    expect(text).toMatch(/gridpipe_gateway_expert_fallbacks_total\{model="moe"\} 3/);
  });
});
