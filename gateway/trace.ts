/**
 * What one request did on the grid: the route, per-hop timings (summed per supplier and span over the
 * request's steps), failovers and cost. It becomes the response's `gridpipe` field, its `x-gridpipe-route`
 * header and the feed's `request.finished` event.
 */
import type { HopTiming, StepOutcome } from '../scheduler/session.js';
import type { RouteCall } from '../policy/routing.js';

/** One supplier's share of a request: a span of fragments (inclusive) and its summed timings. */
export interface HopSummary {
  peerId: string;
  /** First and last fragment index it ran. */
  fragments: [number, number];
  steps: number;
  wallMs: number;
  computeMs: number;
  /** Time waiting in the supplier's queue (its payment gate excluded: paymentMs). */
  queueMs: number;
  /** Time the supplier's payment gate took (voucher check, durable write, receipt). */
  paymentMs: number;
  /** Time the gateway spent getting this hop's vouchers (signing and ledger write; 0 for a re-sent one); part of wallMs. */
  payerMs: number;
  /** Steps replayed into it after a failover. */
  replayed: number;
  /** Base units, a decimal string. */
  cost: string;
  /** Steps paid with a signed voucher (the hop reported its own charge). */
  paidSteps: number;
}

/** The metadata every grid-served response carries. */
export interface RouteMetadata {
  requestId: string;
  model: string;
  manifestCid: string;
  synthetic: boolean;
  /** The route at the end of the request: who ran which fragments, in pipeline order, and how activations travelled on each link. */
  route: { peerId: string; fragments: [number, number]; wireEncoding?: string }[];
  hops: HopSummary[];
  failovers: number;
  steps: number;
  /** Cost in the payment token's base units (decimal string). */
  cost: string;
  latencyMs: number;
  firstTokenMs?: number;
  /**
   * Mixture-of-experts models cut for selective activation: router and expert calls, what they cost (base units,
   * part of `cost`: each host is paid for the tokens routed to it), and experts that had no live server (per layer
   * and expert: who stood in, for how many tokens).
   */
  experts?: { calls: number; cost: string; fallbacks: { layer: number; expert: number; by?: number; tokens: number }[] };
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** Accumulates a request's steps. */
export class RequestTrace {
  private readonly hops = new Map<string, HopSummary & { costUnits: bigint }>();
  private readonly started = performance.now();
  private firstTokenAt?: number;
  failovers = 0;
  steps = 0;
  cost = 0n;
  private experts?: { calls: number; cost: bigint; fallbacks: Map<string, { layer: number; expert: number; by?: number; tokens: number }> };
  /** Called with each step's hops (for per-peer metrics). */
  onHop?: (hop: HopTiming) => void;

  constructor(readonly requestId: string, private readonly model: { name: string; manifestCid: string; synthetic: boolean }) {}

  /** Adds one step's outcome. Returns the step's cost. */
  addStep(outcome: StepOutcome): bigint {
    this.steps++;
    this.failovers += outcome.failovers;
    let stepCost = 0n;
    for (const hop of outcome.hops) {
      const { cost } = hop;
      stepCost += cost;
      const key = `${hop.peerId}/${hop.start}/${hop.end}`;
      let h = this.hops.get(key);
      if (!h) {
        h = { peerId: hop.peerId, fragments: [hop.start, hop.end - 1], steps: 0, wallMs: 0, computeMs: 0, queueMs: 0, paymentMs: 0, payerMs: 0, replayed: 0, cost: '0', paidSteps: 0, costUnits: 0n };
        this.hops.set(key, h);
      }
      h.steps++;
      h.wallMs += hop.wallMs;
      h.computeMs += hop.computeMs;
      h.queueMs += hop.queueMs;
      h.paymentMs += hop.paymentMs;
      h.payerMs += hop.payerMs;
      h.replayed += hop.replayed;
      h.costUnits += cost;
      if (typeof hop.charge === 'bigint') h.paidSteps++;
      this.onHop?.(hop);
    }
    if (outcome.experts) {
      this.experts ??= { calls: 0, cost: 0n, fallbacks: new Map() };
      this.experts.calls += outcome.experts.hops.length;
      for (const hop of outcome.experts.hops) {
        stepCost += hop.cost;
        this.experts.cost += hop.cost;
      }
      for (const f of outcome.experts.fallbacks) {
        const key = `${f.layer}/${f.expert}/${f.by}`;
        const seen = this.experts.fallbacks.get(key);
        if (seen) seen.tokens += f.tokens;
        else this.experts.fallbacks.set(key, { layer: f.layer, expert: f.expert, ...(f.by !== undefined ? { by: f.by } : {}), tokens: f.tokens });
      }
    }
    this.cost += stepCost;
    return stepCost;
  }

  /** Marks the first token out. */
  firstToken(): void { this.firstTokenAt ??= performance.now(); }

  get firstTokenMs(): number | undefined { return this.firstTokenAt === undefined ? undefined : this.firstTokenAt - this.started; }

  /** The metadata, with the session's route. */
  metadata(route: RouteCall[]): RouteMetadata {
    return {
      requestId: this.requestId, model: this.model.name, manifestCid: this.model.manifestCid, synthetic: this.model.synthetic,
      route: route.map((r) => ({ peerId: r.peerId, fragments: [r.start, r.end - 1] as [number, number], ...('wireEncoding' in r ? { wireEncoding: String(r.wireEncoding) } : {}) })),
      hops: [...this.hops.values()].map(({ costUnits, ...h }) => ({
        ...h, cost: costUnits.toString(), wallMs: round(h.wallMs), computeMs: round(h.computeMs), queueMs: round(h.queueMs), paymentMs: round(h.paymentMs), payerMs: round(h.payerMs),
      })),
      failovers: this.failovers, steps: this.steps, cost: this.cost.toString(),
      latencyMs: round(performance.now() - this.started),
      ...(this.firstTokenAt !== undefined ? { firstTokenMs: round(this.firstTokenAt - this.started) } : {}),
      ...(this.experts ? { experts: { calls: this.experts.calls, cost: this.experts.cost.toString(), fallbacks: [...this.experts.fallbacks.values()] } } : {}),
    };
  }
}

/** The `x-gridpipe-route` header: compact JSON of the route, per-hop wall times and failovers. */
export function routeHeader(m: RouteMetadata): string {
  return JSON.stringify({
    route: m.route.map((r) => [r.peerId, r.fragments[0], r.fragments[1]]),
    hops: m.hops.map((h) => [h.peerId, h.fragments[0], h.fragments[1], h.steps, Math.round(h.wallMs * 10) / 10]),
    failovers: m.failovers, cost: m.cost, synthetic: m.synthetic,
  });
}
