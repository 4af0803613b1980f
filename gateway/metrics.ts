/**
 * Prometheus metrics of the gateway, on their own Registry (served at GET /metrics, to loopback clients or
 * with the operator's token). Keys are labelled by a short key id (the first 8 hex digits of the SHA-256 of
 * the secret, as the spending ledger stores it), never by their name.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RequestRecord } from './feed.js';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly tokens: Counter<'model' | 'kind'>;
  readonly requestSeconds: Histogram<'route'>;
  readonly firstTokenSeconds: Histogram<'model'>;
  readonly hopSeconds: Histogram<'peer'>;
  readonly hops: Counter<'peer' | 'model'>;
  readonly failovers: Counter<'model'>;
  readonly expertFallbacks: Counter<'model'>;
  readonly cost: Counter<'model' | 'key'>;
  readonly vouchers: Counter<'peer'>;
  readonly paymentSeconds: Counter<'side'>;
  readonly inflight: Gauge;
  readonly servableModels: Gauge;

  /** `keyLabel`: a key's name (as requests record it) to its metrics label (default: "other"). */
  constructor(private readonly keyLabel: (name: string) => string = () => 'other') {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'gridpipe_gateway_requests_total', help: 'HTTP requests answered, by route and status code.', labelNames: ['route', 'status'], registers });
    this.tokens = new Counter({ name: 'gridpipe_gateway_tokens_total', help: 'Tokens processed, by model and kind (prompt, completion).', labelNames: ['model', 'kind'], registers });
    this.requestSeconds = new Histogram({
      name: 'gridpipe_gateway_request_seconds', help: 'Time to answer a request (to the last byte of a stream), by route.',
      labelNames: ['route'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers,
    });
    this.firstTokenSeconds = new Histogram({
      name: 'gridpipe_gateway_first_token_seconds', help: 'Time from a generation request to its first token, by model.',
      labelNames: ['model'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    });
    this.hopSeconds = new Histogram({
      name: 'gridpipe_gateway_hop_seconds', help: 'Wall time of one pipeline hop (a step on one supplier), by peer.',
      labelNames: ['peer'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5], registers,
    });
    this.hops = new Counter({ name: 'gridpipe_gateway_hops_total', help: 'Pipeline hops run, by peer and model.', labelNames: ['peer', 'model'], registers });
    this.failovers = new Counter({ name: 'gridpipe_gateway_failovers_total', help: 'Failovers (a supplier replaced mid-request), by model.', labelNames: ['model'], registers });
    this.expertFallbacks = new Counter({ name: 'gridpipe_gateway_expert_fallbacks_total', help: 'Tokens whose chosen mixture-of-experts expert had no live server and fell back to the next-ranked one, by model.', labelNames: ['model'], registers });
    this.cost = new Counter({ name: 'gridpipe_gateway_cost_base_units_total', help: 'Cost charged to keys, in payment-token base units.', labelNames: ['model', 'key'], registers });
    this.vouchers = new Counter({ name: 'gridpipe_gateway_vouchers_total', help: 'Hops paid with a signed voucher, by peer.', labelNames: ['peer'], registers });
    this.paymentSeconds = new Counter({
      name: 'gridpipe_gateway_payment_seconds_total', help: 'Time spent on payments in hops: side="gateway" getting vouchers (signing, ledger), side="supplier" the suppliers\' payment gates.',
      labelNames: ['side'], registers,
    });
    this.inflight = new Gauge({ name: 'gridpipe_gateway_requests_inflight', help: 'Requests being served.', registers });
    this.servableModels = new Gauge({ name: 'gridpipe_gateway_servable_models', help: 'Models whose every fragment has a live host.', registers });
  }

  /** Counts a finished grid request's tokens, hops, failovers and cost. */
  recordGridRequest(r: RequestRecord): void {
    if (r.usage) {
      this.tokens.inc({ model: r.model, kind: 'prompt' }, r.usage.promptTokens);
      this.tokens.inc({ model: r.model, kind: 'completion' }, r.usage.completionTokens);
    }
    for (const h of r.hops) {
      this.hops.inc({ peer: h.peerId, model: r.model }, h.steps);
      if (h.paidSteps) this.vouchers.inc({ peer: h.peerId }, h.paidSteps);
      if (h.payerMs) this.paymentSeconds.inc({ side: 'gateway' }, h.payerMs / 1000);
      if (h.paymentMs) this.paymentSeconds.inc({ side: 'supplier' }, h.paymentMs / 1000);
    }
    if (r.failovers) this.failovers.inc({ model: r.model }, r.failovers);
    const fellBack = r.experts?.fallbacks.reduce((n, f) => n + f.tokens, 0) ?? 0;
    if (fellBack) this.expertFallbacks.inc({ model: r.model }, fellBack);
    const cost = BigInt(r.cost);
    if (cost > 0n) this.cost.inc({ model: r.model, key: this.keyLabel(r.key) }, Number(cost));
  }
}
