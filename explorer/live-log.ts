/**
 * What the Live view shows, kept from the gateway's public feed: the last requests with their routes and
 * per-hop timings, the traffic between hops for the pipeline graph, and tokens per second with p50/p95
 * latency per time bucket over the last minutes. The explorer sits on the gateway's floor and does not
 * import it: `FeedSource` is the shape of the gateway's EventFeed (subscribe + history of its public events,
 * which carry no key, prompt or completion), wired by the CLI.
 */
import type { HopView, RequestView, StatsBucket, TrafficEdge } from './types.js';

/** The public feed events the explorer reads (gateway/feed.ts PublicFeedEvent, structurally). */
export type FeedEventLike =
  | { event: 'request.started'; requestId: string; at: number; endpoint: string; model: string }
  | {
    event: 'request.finished'; requestId: string; at: number; endpoint: string; model: string; status: number;
    route: { peerId: string; fragments: [number, number] }[];
    hops: { peerId: string; fragments: [number, number]; steps: number; wallMs: number; computeMs: number; queueMs: number; paymentMs: number; replayed: number; cost: string }[];
    failovers: number; steps: number; cost: string; latencyMs: number; firstTokenMs?: number;
    usage?: { promptTokens: number; completionTokens: number };
  }
  | { event: 'request.failed'; requestId: string; at: number; endpoint: string; model?: string; status: number; error: string; failovers?: number };

/** Other events of the same feed (issue 21: verification verdicts, filed disputes): not requests, skipped here. */
export type OtherFeedEvent = { event: 'verify.verdict' | 'dispute.filed'; at: number };

/** Where live requests come from: the gateway's EventFeed has this shape. */
export interface FeedSource {
  subscribe(listener: (event: FeedEventLike | OtherFeedEvent) => void): () => void;
  history(): (FeedEventLike | OtherFeedEvent)[];
}

export interface LiveLogOptions {
  /** Requests kept for the page (default 200). */
  keepRequests?: number;
  /** Width of a stats bucket (default 10 s). */
  bucketMs?: number;
  /** Buckets kept (default 60: ten minutes). */
  keepBuckets?: number;
  now?: () => number;
}

interface Bucket { at: number; tokens: number; latencies: number[] }

/** The p-quantile (0..1) of sorted values, nearest rank. */
export function quantile(sorted: number[], p: number): number | undefined {
  if (!sorted.length) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** A request view from a feed event (merged into what a `request.started` left). */
export function requestView(event: FeedEventLike, before?: RequestView): RequestView {
  const base: RequestView = before ?? { requestId: event.requestId, state: 'running', at: event.at, endpoint: event.endpoint, model: event.model, route: [], hops: [], failovers: 0, failedOver: false, steps: 0 };
  if (event.event === 'request.started') return base;
  if (event.event === 'request.failed') {
    const failovers = event.failovers ?? base.failovers;
    return { ...base, state: 'failed', model: event.model ?? base.model, status: event.status, error: event.error, failovers, failedOver: failovers > 0 };
  }
  const inRoute = new Set(event.route.map((r) => r.peerId));
  const hops: HopView[] = event.hops.map((h) => ({
    peerId: h.peerId, fragments: h.fragments, steps: h.steps, wallMs: h.wallMs, computeMs: h.computeMs, queueMs: h.queueMs,
    paymentMs: h.paymentMs, replayed: h.replayed, cost: h.cost, replaced: !inRoute.has(h.peerId),
  }));
  return {
    ...base, state: 'finished', model: event.model, route: event.route, hops, failovers: event.failovers,
    failedOver: event.failovers > 0 || hops.some((h) => h.replaced), steps: event.steps,
    tokens: event.usage?.completionTokens, latencyMs: event.latencyMs, firstTokenMs: event.firstTokenMs, cost: event.cost, status: event.status,
  };
}

export class LiveLog {
  private readonly requests = new Map<string, RequestView>();
  private readonly buckets: Bucket[] = [];
  private readonly edges = new Map<string, TrafficEdge>();
  private readonly listeners = new Set<(request: RequestView) => void>();
  readonly bucketMs: number;
  private readonly keepRequests: number;
  private readonly keepBuckets: number;
  private readonly now: () => number;
  private unsubscribe?: () => void;

  constructor(options: LiveLogOptions = {}) {
    this.bucketMs = options.bucketMs ?? 10_000;
    this.keepRequests = options.keepRequests ?? 200;
    this.keepBuckets = options.keepBuckets ?? 60;
    this.now = options.now ?? Date.now;
  }

  /** Reads a feed: its history first, then every new event. */
  follow(feed: FeedSource): void {
    for (const e of feed.history()) this.add(e);
    this.unsubscribe = feed.subscribe((e) => this.add(e));
  }

  /** Adds one feed event; tells the listeners. */
  add(event: FeedEventLike | OtherFeedEvent): void {
    if (!('requestId' in event)) return;
    const view = requestView(event, this.requests.get(event.requestId));
    this.requests.delete(event.requestId);
    this.requests.set(event.requestId, view);
    while (this.requests.size > this.keepRequests) this.requests.delete(this.requests.keys().next().value!);
    if (event.event === 'request.finished') {
      this.count(event.at, event.usage?.completionTokens ?? 0, event.latencyMs);
      const chain = ['gateway', ...event.route.map((r) => r.peerId), 'gateway'];
      for (let i = 0; i + 1 < chain.length; i++) {
        const key = `${chain[i]}>${chain[i + 1]}`;
        const edge = this.edges.get(key) ?? { from: chain[i], to: chain[i + 1], requests: 0, steps: 0 };
        edge.requests++;
        edge.steps += event.steps;
        this.edges.set(key, edge);
      }
    }
    for (const listener of this.listeners) listener(view);
  }

  /** Calls `listener` with each request as it changes; returns the unsubscribe. */
  subscribe(listener: (request: RequestView) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** The kept requests, newest first. */
  recent(): RequestView[] { return [...this.requests.values()].reverse(); }

  /** A request by id. */
  request(id: string): RequestView | undefined { return this.requests.get(id); }

  /** The pipeline graph's edges (who passed activations to whom, how many requests and steps). */
  traffic(): TrafficEdge[] { return [...this.edges.values()]; }

  /** The buckets of the last minutes, oldest first, with empty ones filled in up to now. */
  stats(): StatsBucket[] {
    const last = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    const first = last - (this.keepBuckets - 1) * this.bucketMs;
    const byAt = new Map(this.buckets.map((b) => [b.at, b]));
    const out: StatsBucket[] = [];
    for (let at = first; at <= last; at += this.bucketMs) {
      const b = byAt.get(at);
      const sorted = b ? [...b.latencies].sort((x, y) => x - y) : [];
      out.push({ at, tokensPerSecond: (b?.tokens ?? 0) / (this.bucketMs / 1000), requests: sorted.length, p50Ms: quantile(sorted, 0.5), p95Ms: quantile(sorted, 0.95) });
    }
    return out;
  }

  close(): void {
    this.unsubscribe?.();
    this.listeners.clear();
  }

  private count(at: number, tokens: number, latencyMs: number): void {
    const bucketAt = Math.floor(at / this.bucketMs) * this.bucketMs;
    let bucket = this.buckets.find((b) => b.at === bucketAt);
    if (!bucket) {
      bucket = { at: bucketAt, tokens: 0, latencies: [] };
      this.buckets.push(bucket);
      this.buckets.sort((a, b) => a.at - b.at);
      while (this.buckets.length > this.keepBuckets) this.buckets.shift();
    }
    bucket.tokens += tokens;
    bucket.latencies.push(latencyMs);
  }
}
