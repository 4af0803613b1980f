/**
 * A fault-tolerant pipeline session (after Petals' inference session, Algorithm 1 of arXiv 2312.08361):
 * a route of servers, each running a span of fragments and keeping that span's KV cache; the client
 * relays tensors between them (a star) and keeps, per step, every tensor it has seen. When a server dies,
 * stalls past its deadline or returns an error, the client bans it, routes a replacement for that span
 * only (possibly split differently), replays the history into it in one call (chunk by chunk, as first
 * sent, so results stay identical) and goes on. A step fails only when a fragment has no live server.
 *
 * Routes, estimates and bans belong to the process's swarm view (scheduler/swarm-view.ts): the session asks
 * it for a route and reports every reply and failure to it; it keeps only its own state (the route's open
 * sessions, every step's tensors and positions) and the replay.
 */
import type { Logger } from 'pino';
import { dialTargetOf } from './dial-target.js';
import { peerIdFromString } from '@libp2p/peer-id';
import { positionsAtCostDims, type Manifest } from '../fragments/manifest.js';
import type { GridHost } from '../net/host.js';
import { ExecClient, type RemoteSession, type TensorMap } from '../net/exec/client.js';
import type { WireHop, WireSampling, WireVoucher } from '../net/exec/codec.js';
import { ortToWire } from '../net/exec/tensors.js';
import { prefersChain, type RouteMode } from '../policy/route-mode.js';
import { ExecError } from '../net/exec/errors.js';
import { isGarbageReply } from '../net/exec/garbage-reply.js';
import type { FragmentCost, RouteCall } from '../policy/routing.js';
import type { PriceLimits } from '../policy/price-limits.js';
import type { ModelDiscovery, HostedSpan } from './discovery.js';
import type { RoutePlan, SwarmView } from './swarm-view.js';
import { isPaidSpan, PaymentNeededError, type StepPayer } from './payment.js';
import { parseBaseUnits, stepCharge } from '../policy/pricing.js';
import { GridpipeError } from '../errors/base.js';
import { ExpertRouter, type ExpertFallback, type ExpertHop } from './expert-router.js';
import type { StepObserver } from './step-observer.js';
import { sessionWireEncoding, WIRE_ENCODING_CODES, wireEncodingName, type WireEncodingPreference } from './wire-choice.js';
import type { WireEncodingName } from '../policy/wire-encoding.js';
import { epochMs, stepTraceWriter } from '../net/step-trace.js';

/** A span of the route with its open session. */
interface Link extends RouteCall {
  session: RemoteSession;
  /** The supplier's record of the span (address to pay, price). */
  hosted: HostedSpan;
  /** Opened after earlier steps: must be replayed the history before its first step. */
  fresh: boolean;
  predictedMs: number;
  /** Chain mode: the peer this link's session accepts forwarded steps from (the previous link when opened). */
  acceptsFrom?: string;
  /** How this link's float activations travel (what the server accepted; scheduler/wire-choice.ts). */
  wireEncoding: WireEncodingName;
}

/** A hop of the route as reported: peer, span, and the wire encoding its activations travel in. */
export type SessionRouteCall = RouteCall & { wireEncoding: WireEncodingName };

export interface PipelineSessionOptions {
  host: GridHost;
  manifest: Manifest;
  manifestCid: string;
  discovery: ModelDiscovery;
  /** The process's swarm view: routes, estimates and bans, shared with every other session. */
  swarm: SwarmView;
  client?: ExecClient;
  /** Positions the servers' KV caches must hold. */
  maxLength: number;
  /** Smallest step deadline (default 5 s); otherwise 3 × the predicted time. */
  minStepTimeoutMs?: number;
  /** Re-route attempts for one span within a step before giving up (default 8). */
  maxRepairs?: number;
  logger?: Logger;
  /** Pays suppliers that charge (a voucher per step and link); without it only free suppliers are usable. */
  payer?: StepPayer;
  /** Prices this session accepts (default DEFAULT_PRICE_LIMITS): hosts above them are never routed to. */
  priceLimits?: PriceLimits;
  /** Mixture-of-experts layers cut apart: fail a step whose token chose an expert with no live server (default: fall back). */
  strictExperts?: boolean;
  /** Call every expert of a cut MoE layer for every token: the dense baseline benchmarks compare against. */
  activateAllExperts?: boolean;
  /** Shown every successful hop and the close (the gateway's verifier: scheduler/step-observer.ts). */
  observer?: StepObserver;
  /**
   * Star (the client relays every tensor), chain (each server forwards its outputs to the next, the last one
   * answers the client) or auto (chain where the measured round trips say it saves time; policy/route-mode).
   * Default star.
   */
  routeMode?: RouteMode;
  /**
   * How activations travel on each link (net/exec/wire-compression.ts): exact (default), fp16, int8, or auto (compress
   * where the client's measured link makes transfer dominate; policy/wire-encoding.ts). `exact` overrides it.
   */
  wireEncoding?: WireEncodingPreference;
  /** The request asks for exact outputs: never compress. */
  exact?: boolean;
  /** Ask every server never to batch this session's steps with other sessions' (OpenSession.solo). */
  solo?: boolean;
}

/** What the caller needs of a step's outputs, so servers can send less. */
export interface StepHints {
  /** Model outputs of which only the last row (the newest position) is needed, e.g. a decoder's logits. */
  lastRowOnly?: readonly string[];
  /**
   * With lastRowOnly: only that row's k largest entries are needed; they come back as NAME.top_values and
   * NAME.top_indices ([..., 1, k], ties: lower index first) instead of NAME. Greedy decoding needs k = 1.
   */
  topK?: number;
  /** With lastRowOnly: the server draws the next token from that row (NAME.sampled) with these settings. */
  sample?: WireSampling;
}

/**
 * A hop of a step: who ran which fragments, how long it took, and what it cost in base units: `charge` when it
 * was paid with a voucher; `cost` always (the charge, or the supplier's advertised price for the work, priced
 * with policy/pricing like a charge, so budgets count the same with or without payments). Timing: `wallMs`
 * from asking the payer for the voucher to the reply; `payerMs` the part spent getting the voucher (the
 * gateway's own signing and ledger write, 0 for a re-sent one); `paymentMs` the supplier's payment gate (not
 * in its `queueMs`).
 */
export interface HopTiming {
  peerId: string; start: number; end: number; wallMs: number; queueMs: number; computeMs: number; paymentMs: number; payerMs: number;
  replayed: number; cost: bigint; charge?: bigint;
}
export interface StepOutcome {
  outputs: TensorMap; hops: HopTiming[]; failovers: number;
  /** Calls to router and expert hosts of cut mixture-of-experts layers, and experts replaced for want of a live server. */
  experts?: { hops: ExpertHop[]; fallbacks: ExpertFallback[] };
}

/** Raised when a server refuses a step's inputs as malformed: the request is at fault, not the server. */
export class PipelineRequestError extends GridpipeError<'REQUEST_REFUSED'> {
  constructor(message: string, cause?: unknown) {
    super('REQUEST_REFUSED', `the servers refused the request: ${message}`, { cause: cause || undefined, badInput: true });
    this.name = 'PipelineRequestError';
  }
}

/** Raised when some fragment has no live server left. */
export class PipelineUnavailableError extends GridpipeError<'NO_LIVE_HOST'> {
  /** `refused`: set when live servers host the fragment but every one was refused for its price. */
  constructor(readonly fragment: number, cause?: unknown, readonly refused?: string) {
    super('NO_LIVE_HOST', refused ? `no acceptable server hosts fragment ${fragment} of the model: ${refused}` : `no live server hosts fragment ${fragment} of the model`, { cause: cause || undefined });
    this.name = 'PipelineUnavailableError';
  }
}

// Raised when the route (or an expert call) reaches a supplier that charges and the session has no payer.
export { PaymentNeededError } from './payment.js';

export class PipelineSession {
  private chain: Link[] = [];
  private readonly history: { position: number; known: TensorMap; tokens: number }[] = [];
  private readonly swarm: SwarmView;
  private readonly client: ExecClient;
  private readonly costs: FragmentCost[];
  private readonly k: number;
  private closed = false;
  /** Failovers over the session's life. */
  failovers = 0;
  /** Calls the cut mixture-of-experts layers' routers and experts (scheduler/expert-router.ts), when the model has any. */
  private readonly experts?: ExpertRouter;
  /** Steps (or parts of steps) that ran as a chain of two or more servers, over the session's life. */
  chainedSteps = 0;
  /** Junctions `from>to` where a server could not reach the next one: the client relays there (star). */
  private readonly unreachable = new Set<string>();
  /** GRIDPIPE_STEP_TRACE: each chain step's timeline, for the pipeline bench's --trace. */
  private readonly trace = stepTraceWriter('client');

  constructor(private readonly options: PipelineSessionOptions) {
    this.swarm = options.swarm;
    this.client = options.client ?? new ExecClient();
    this.k = options.manifest.fragments.length;
    this.costs = fragmentCosts(options.manifest);
    if (options.manifest.fragments.some((f) => f.moe)) {
      this.experts = new ExpertRouter({
        host: options.host, manifest: options.manifest, manifestCid: options.manifestCid, discovery: options.discovery, swarm: options.swarm,
        client: this.client, strict: options.strictExperts, priceLimits: options.priceLimits, activateAll: options.activateAllExperts, logger: options.logger, timeoutMs: options.minStepTimeoutMs,
        payer: options.payer,
      });
    }
  }

  /** The current route (after close: the last one): peer and span per hop. */
  get route(): SessionRouteCall[] { return this.closed ? this.lastRoute : this.chain.map(({ peerId, start, end, wireEncoding }) => ({ peerId, start, end, wireEncoding })); }

  private lastRoute: SessionRouteCall[] = [];

  /**
   * Runs one step: `inputs` are the model's graph inputs for the new tokens, `position` the KV length
   * before them, `tokens` how many new positions (for costing and deadlines). Returns the model's outputs
   * (KV-cache outputs excluded: they stay on the servers).
   */
  async step(inputs: TensorMap, position: number, tokens: number, hints: StepHints = {}): Promise<StepOutcome> {
    if (this.closed) throw new Error('the pipeline session is closed');
    const known: TensorMap = { ...inputs };
    const stepIndex = this.history.length;
    this.history.push({ position, known, tokens });
    const hops: HopTiming[] = [];
    const failoversBefore = this.failovers;
    let i = 0;
    let j = 0;
    let repairs = 0;
    const experts: NonNullable<StepOutcome['experts']> = { hops: [], fallbacks: [] };
    while (j < this.k) {
      const moe = this.options.manifest.fragments[j].moe;
      if (moe?.role === 'experts' && this.experts) {
        // A cut MoE layer's experts: the span before ran its router (in the same call when one host has both); the
        // expert router sends each token to its experts, then on down the pipeline.
        const layer = await this.experts.runLayer(moe.group, known);
        known[this.options.manifest.expertGroups[moe.group].output!] = layer.output;
        experts.hops.push(...layer.hops);
        experts.fallbacks.push(...layer.fallbacks);
        while (j < this.k && this.options.manifest.fragments[j].moe?.role === 'experts') j++;
        continue;
      }
      if (i >= this.chain.length) await this.extend(j, tokens);
      const link = this.chain[i];
      const segment = this.chainSegment(i, known, hints);
      if (segment > 1) {
        const ran = await this.chainStep(i, segment, known, position, tokens, hints, hops);
        if (ran.done) { i += ran.done; j = this.chain[i - 1].end; }
        if (ran.failed) await this.failover(i, ran.failed, tokens, ++repairs);
        continue;
      }
      const needs = this.inputsOf(link.start, link.end);
      const feeds = pick(known, needs, link);
      const replay = link.fresh ? this.history.slice(0, stepIndex).map((h) => ({ position: h.position, inputs: pick(h.known, needs, link) })) : [];
      const timeoutMs = Math.max(this.options.minStepTimeoutMs ?? 5000, 3 * link.predictedMs * (1 + replay.length));
      // Outside the try: a payer that refuses to pay is not the server's fault (no failover).
      const chunkTokens = [...this.history.slice(0, replay.length).map((h) => h.tokens), tokens];
      const payerStarted = performance.now();
      const payment = await this.payment(link, chunkTokens);
      const started = performance.now();
      const payerMs = started - payerStarted;
      const estimate = this.swarm.estimateOf(link.peerId);
      estimate.inflight++;
      try {
        const want = this.wantedFrom(link.start, link.end);
        const reduction = this.reductionFrom(link.end, hints);
        const res = await link.session.step(feeds, { position, replay, want, ...reduction, timeoutMs, ...payment?.options }).finally(() => { estimate.inflight--; });
        const wallMs = performance.now() - started;
        const moved = tensorBytes(feeds) + replay.reduce((n, r) => n + tensorBytes(r.inputs), 0) + tensorBytes(res.outputs) + res.replayOutputs.reduce((n, r) => n + tensorBytes(r.outputs), 0);
        this.swarm.reportReply(link.peerId, wallMs, res.queueMs, res.computeMs, this.spanFlops(link.start, link.end, tokens * (1 + replay.length)), moved);
        // Replayed outputs rebuild what later fresh spans of a different split need for their own replay.
        res.replayOutputs.forEach((r, t) => Object.assign(this.history[t].known, r.outputs));
        Object.assign(known, res.outputs);
        this.options.observer?.onHop({
          step: stepIndex, peerId: link.peerId, hosted: link.hosted, start: link.start, end: link.end, position, chunkTokens, inputs: feeds, outputs: res.outputs,
          replay: replay.map((chunk, t) => ({ chunk, outputs: res.replayOutputs[t]?.outputs ?? {} })), want, reduction, wallMs,
          ...(res.receipt ? { receipt: res.receipt } : {}),
        });
        if (payment && res.charge !== payment.charge) {
          // Both sides price with policy/pricing.ts: a difference means the record's price is stale.
          this.options.logger?.warn({ peer: link.peerId, paid: payment.charge.toString(), charged: res.charge.toString() }, 'supplier charged another amount than the voucher paid for');
        }
        hops.push({
          peerId: link.peerId, start: link.start, end: link.end, wallMs: wallMs + payerMs, queueMs: res.queueMs, computeMs: res.computeMs,
          paymentMs: res.paymentMs, payerMs, replayed: replay.length,
          cost: payment?.charge ?? this.listPrice(link, chunkTokens), ...(payment ? { charge: payment.charge } : {}),
        });
        link.fresh = false;
        j = link.end;
        i++;
      } catch (err) {
        // The server refused the request itself (bad shapes, positions beyond the cache): any other server would
        // too, so it is the caller's error, not the server's, and nobody gets banned for it.
        await this.failover(i, err, tokens, ++repairs);
      }
    }
    const outputs: TensorMap = {};
    const stateful = new Set(this.options.manifest.statefulPairs.map((p) => p.output));
    for (const o of this.options.manifest.model.outputs) {
      if (stateful.has(o.name)) continue;
      if (known[o.name]) outputs[o.name] = known[o.name];
      // Reduced to its top entries by the server (StepHints.topK).
      for (const part of [`${o.name}.top_values`, `${o.name}.top_indices`, `${o.name}.sampled`]) if (known[part]) outputs[part] = known[part];
    }
    return { outputs, hops, failovers: this.failovers - failoversBefore, ...(this.experts ? { experts } : {}) };
  }

  /** Link i failed with `err`: bans its server and routes a replacement (the `repairs`th of this step). */
  private async failover(i: number, err: unknown, tokens: number, repairs: number): Promise<void> {
    const link = this.chain[i];
    if (err instanceof ExecError && err.code === 'BAD_REQUEST') throw new PipelineRequestError(err.message, err);
    this.failovers++;
    this.options.logger?.warn({ peer: link.peerId, span: [link.start, link.end], err: (err as Error).message }, 'server failed; routing around it');
    this.swarm.reportFailure(link.peerId);
    if (isGarbageReply(err)) this.swarm.reportGarbage(link.peerId, err.message);
    link.session.abort();
    if (repairs > (this.options.maxRepairs ?? 8)) throw err;
    await this.repair(i, tokens);
  }

  /**
   * How many links from i on run this step as one chain (1: the star). A chain needs sessions that have seen
   * every earlier step (no replay), each accepting steps from the previous link, junctions known reachable,
   * each link reading from the previous one only (what it reads of earlier spans travels through it), the same
   * output reductions on every link, and the route mode's consent (policy/route-mode.ts).
   */
  private chainSegment(i: number, known: TensorMap, hints: StepHints): number {
    const mode = this.options.routeMode ?? 'star';
    if (mode === 'star') return 1;
    const first = this.chain[i];
    if (!first || first.fresh) return 1;
    const reduction = JSON.stringify(this.reductionFrom(first.end, hints));
    let n = 1;
    for (; i + n < this.chain.length; n++) {
      const prev = this.chain[i + n - 1];
      const next = this.chain[i + n];
      if (next.fresh || next.acceptsFrom !== prev.peerId || this.unreachable.has(`${prev.peerId}>${next.peerId}`)) break;
      if (JSON.stringify(this.reductionFrom(next.end, hints)) !== reduction) break;
      const handed = new Set([...this.inputsOf(prev.start, prev.end), ...this.wantedFrom(prev.start, prev.end)]);
      if (!this.inputsOf(next.start, next.end).every((name) => name in known || handed.has(name))) break;
    }
    if (n < 2) return 1;
    return prefersChain(mode, this.chain.slice(i, i + n).map((l) => this.swarm.estimateOf(l.peerId).rttMs)) ? n : 1;
  }

  /**
   * Runs the step on links i..i+n-1 as a chain: one message to the first server carries the step and every later
   * hop (its session, its own graph inputs, the names it takes from the previous server, its voucher); each
   * server forwards its outputs to the next and answers the client on its own session's stream, so the client
   * still gets every tensor it needs to replay later, off the critical path. Returns how many links answered in
   * order, and the error of the first one that did not (the caller fails it over; the links after it run again).
   * A server that could not reach the next one says so in its reply: from there the client relays (star).
   */
  private async chainStep(i: number, n: number, known: TensorMap, position: number, tokens: number, hints: StepHints, hops: HopTiming[]): Promise<{ done: number; failed?: unknown }> {
    const links = this.chain.slice(i, i + n);
    const stepId = links.reduce((m, l) => (l.session.upcomingStepId > m ? l.session.upcomingStepId : m), 0n);
    const chunkTokens = [tokens];
    const payments: (Awaited<ReturnType<PipelineSession['payment']>>)[] = [];
    const payerMs: number[] = [];
    for (const link of links) {
      const t0 = performance.now();
      payments.push(await this.payment(link, chunkTokens));
      payerMs.push(performance.now() - t0);
    }
    const reduction = this.reductionFrom(links[n - 1].end, hints);
    const clientNames = (l: Link): string[] => this.inputsOf(l.start, l.end).filter((name) => name in known);
    const forward: WireHop[] = links.slice(1).map((l, h) => ({
      peerId: l.peerId, addrs: l.hosted.addrs, sessionId: l.session.sessionId,
      inputs: clientNames(l).map((name) => ortToWire(name, known[name])),
      carry: this.inputsOf(l.start, l.end).filter((name) => !(name in known)),
      want: this.wantedFrom(l.start, l.end),
      voucher: payments[h + 1]?.options.voucher,
    }));
    const timeoutMs = Math.max(this.options.minStepTimeoutMs ?? 5000, 3 * links.reduce((a, l) => a + l.predictedMs, 0));
    const started = performance.now();
    const estimates = links.map((l) => this.swarm.estimateOf(l.peerId));
    for (const e of estimates) e.inflight++;
    const waits = links.slice(1).map((l) => l.session.awaitReply(stepId, timeoutMs));
    const first = links[0].session.step(pick(known, clientNames(links[0]), links[0]), {
      position, stepId, want: this.wantedFrom(links[0].start, links[0].end), ...reduction, timeoutMs, ...payments[0]?.options, forward,
    });
    const replies = [first, ...waits];
    for (const r of replies) r.catch(() => undefined); // each is awaited in order below; a failure ends the rest
    const stopWaiting = (from: number): void => { for (let m = from; m < n; m++) if (m > 0) links[m].session.cancelReply(stepId); };
    this.chainedSteps++;
    const replyAt = this.trace ? [] as number[] : undefined;
    try {
      for (let m = 0; m < n; m++) {
        const link = links[m];
        let res: Awaited<typeof first>;
        try {
          res = await replies[m];
        } catch (err) {
          stopWaiting(m + 1);
          return { done: m, failed: err };
        }
        const wallMs = performance.now() - started;
        replyAt?.push(epochMs());
        const moved = tensorBytes(res.outputs);
        // The first server's reply timed a round trip; later ones add the earlier servers' work and junctions,
        // so they update compute and queue only (their round trips are learnt from star steps).
        if (m === 0) this.swarm.reportReply(link.peerId, wallMs, res.queueMs, res.computeMs, this.spanFlops(link.start, link.end, tokens), moved);
        else this.swarm.reportReply(link.peerId, res.queueMs + res.computeMs + estimates[m].rttMs, res.queueMs, res.computeMs, this.spanFlops(link.start, link.end, tokens), 0);
        Object.assign(known, res.outputs);
        const payment = payments[m];
        if (payment && res.charge !== payment.charge) {
          this.options.logger?.warn({ peer: link.peerId, paid: payment.charge.toString(), charged: res.charge.toString() }, 'supplier charged another amount than the voucher paid for');
        }
        hops.push({
          peerId: link.peerId, start: link.start, end: link.end, wallMs: wallMs + payerMs[m], queueMs: res.queueMs, computeMs: res.computeMs,
          paymentMs: res.paymentMs, payerMs: payerMs[m], replayed: 0,
          cost: payment?.charge ?? this.listPrice(link, chunkTokens), ...(payment ? { charge: payment.charge } : {}),
        });
        if (res.forwardError && m + 1 < n) {
          this.options.logger?.warn({ from: link.peerId, to: links[m + 1].peerId, err: res.forwardError }, 'a server could not reach the next one; the client relays there');
          this.unreachable.add(`${link.peerId}>${links[m + 1].peerId}`);
          stopWaiting(m + 1);
          return { done: m + 1 };
        }
      }
      if (replyAt) this.trace?.({ role: 'client', pid: process.pid, startedAt: epochMs(started), replyAt });
      return { done: n };
    } finally {
      for (const e of estimates) e.inflight--;
    }
  }

  /**
   * The voucher for a step on `link` whose chunks add `chunkTokens` positions each, from the payer, with
   * the charge it covers; undefined for a supplier with no staking address, or a free one when there is no
   * payer. A supplier that charges with no payer is an error (PaymentNeededError).
   */
  private async payment(link: Link, chunkTokens: number[]): Promise<{ charge: bigint; options: { voucher: WireVoucher; chunkTokens: number[] } } | undefined> {
    if (!isPaidSpan(link.hosted)) return undefined;
    const { payer } = this.options;
    const price = parseBaseUnits(link.hosted.pricePerGflop, 'the supplier\'s price per GFLOP');
    if (!payer) {
      // A supplier that names a staking address but asks nothing is served without vouchers.
      if (price === 0n) return undefined;
      throw new PaymentNeededError(link.peerId);
    }
    const charge = stepCharge(this.options.manifest, price, { start: link.start, end: link.end, chunkTokens });
    // after a failover the replacement re-runs the earlier steps (every chunk but the last): work the request pays again
    const replay = chunkTokens.length > 1 ? charge - stepCharge(this.options.manifest, price, { start: link.start, end: link.end, chunkTokens: chunkTokens.slice(-1) }) : 0n;
    const voucher = await payer.voucherFor(link.hosted, charge, replay > 0n ? { replay } : undefined);
    return { charge, options: { voucher, chunkTokens } };
  }

  /** The voucher a paid supplier opens a session with: the payer's current one to it (amount 0 at first contact). */
  private async openVoucher(span: HostedSpan): Promise<WireVoucher | undefined> {
    if (!isPaidSpan(span) || !this.options.payer) return undefined;
    return this.options.payer.voucherFor(span, 0n);
  }

  /** What a step on `link` is worth at the supplier's advertised price (0 when it names none or an unreadable one). */
  private listPrice(link: Link, chunkTokens: number[]): bigint {
    let price: bigint;
    try {
      price = parseBaseUnits(link.hosted.pricePerGflop);
    } catch {
      return 0n;
    }
    return stepCharge(this.options.manifest, price, { start: link.start, end: link.end, chunkTokens });
  }

  /** Closes every server session. */
  async close(): Promise<void> {
    this.lastRoute = this.route;
    if (!this.closed) this.options.observer?.onClose();
    this.closed = true;
    await Promise.all(this.chain.map((l) => l.session.close().catch(() => undefined)));
    await this.experts?.close();
    this.chain = [];
  }

  /** Routes and opens sessions from fragment j to the end of the model. */
  private async extend(from: number, tokens: number): Promise<void> {
    // Up to the next cut MoE layer's experts, which are called per token, not walked as a span. Its router is walked
    // like a dense fragment: with the fragment before it on one host, one call runs both (no round trip of its own).
    let to = from;
    while (to < this.k && this.options.manifest.fragments[to].moe?.role !== 'experts') to++;
    this.chain.push(...(await this.openRoute(from, to, tokens)));
  }

  /** Replaces link i (which failed) by a new route over the same fragments. */
  private async repair(i: number, tokens: number): Promise<void> {
    const failed = this.chain[i];
    const replacement = await this.openRoute(failed.start, failed.end, tokens);
    this.chain.splice(i, 1, ...replacement);
  }

  private async openRoute(from: number, to: number, tokens: number): Promise<Link[]> {
    const failedHere = new Set<string>(); // banned hosts are tried again when all are banned, but once per route (swarm-view.ts)
    for (let attempt = 0; ; attempt++) {
      const plan: RoutePlan = await this.swarm.planRoute(this.options.discovery, { costs: this.costs, from, to, tokens, priceLimits: this.options.priceLimits, lookAgain: attempt > 0, keepBanned: failedHere });
      if (plan.unroutable) {
        if (attempt < 2) { await new Promise((r) => setTimeout(r, 200)); continue; }
        throw new PipelineUnavailableError(plan.unroutable.fragment, plan.unroutable, plan.refused);
      }
      const { calls, estimatedMs } = plan;
      const links: Link[] = [];
      // Chain mode: each session accepts steps forwarded by the server before it (the one ending where it starts).
      const chained = (this.options.routeMode ?? 'star') !== 'star';
      let previous = chained ? this.chain.find((l) => l.end === from)?.peerId : undefined;
      try {
        for (const { hosted, ...call } of calls) {
          const wire = sessionWireEncoding({
            preference: this.options.wireEncoding ?? 'exact', exact: this.options.exact ?? false, manifest: this.options.manifest,
            start: call.start, end: call.end, tokens, estimate: this.swarm.estimateOf(call.peerId),
          });
          const session = await this.client.openSession(this.options.host.node, dialTargetOf(hosted), {
            fragments: Array.from({ length: call.end - call.start }, (_, n) => ({ cid: this.options.manifest.fragments[call.start + n].cid, manifestCid: this.options.manifestCid, index: call.start + n })),
            maxLength: this.options.maxLength,
            voucher: await this.openVoucher(hosted),
            ...(previous ? { forwarders: [previous] } : {}),
            ...(wire.encoding !== 'exact' ? { wireEncoding: WIRE_ENCODING_CODES[wire.encoding] } : {}),
            ...(this.options.solo ? { solo: true } : {}),
          });
          if (wire.encoding !== 'exact') this.options.logger?.debug({ peer: call.peerId, asked: wire.encoding, accepted: wireEncodingName(session.wireEncoding), why: wire.reason }, 'wire encoding');
          links.push({ ...call, session, hosted, fresh: true, predictedMs: estimatedMs / calls.length, wireEncoding: wireEncodingName(session.wireEncoding), ...(previous ? { acceptsFrom: previous } : {}) });
          this.measureRoundTrip(call.peerId);
          if (chained) previous = call.peerId;
        }
        return links;
      } catch (err) {
        // A server that will not even open a session: ban it (for every session of this process) and route again.
        for (const l of links) l.session.abort();
        const bad = calls[links.length];
        if (bad) { this.swarm.reportFailure(bad.peerId); failedHere.add(bad.peerId); }
        if (bad && isGarbageReply(err)) this.swarm.reportGarbage(bad.peerId, err.message);
        this.failovers++;
        this.options.logger?.warn({ peer: bad?.peerId, err: (err as Error).message }, 'could not open a session; routing around it');
        if (attempt >= 8) throw err;
      }
    }
  }

  /**
   * Pings a peer in the background (off the step's path) so routing learns its round trip from what this
   * client measured, not from the compute time the peer reports of itself (policy/estimates.ts).
   */
  private measureRoundTrip(peerId: string): void {
    const estimate = this.swarm.estimateOf(peerId);
    if (estimate.pingSamples > 0 && estimate.samples % 16 !== 0) return;
    const ping = (this.options.host.node.services as { ping?: { ping(peer: ReturnType<typeof peerIdFromString>): Promise<number> } }).ping;
    if (!ping) return;
    void ping.ping(peerIdFromString(peerId)).then((ms) => this.swarm.reportRoundTrip(peerId, ms), () => undefined);
  }

  /** Tensors the span [start, end) reads from outside itself, KV-cache inputs excluded (they stay on the server). */
  private inputsOf(start: number, end: number): string[] {
    const names = new Set<string>();
    for (let f = start; f < end; f++) {
      const fragment = this.options.manifest.fragments[f];
      const stateful = new Set(fragment.stateful.map((p) => p.input));
      for (const input of fragment.inputs) {
        if (stateful.has(input.name)) continue;
        if (input.from === 'graph' || input.from < start) names.add(input.name);
      }
    }
    return [...names];
  }

  /** Of the outputs the caller wants only the last row of, those a span ending at `end` may cut: no later fragment reads them. */
  private reductionFrom(end: number, hints: StepHints): { lastRowOnly?: string[]; topK?: number; sample?: WireSampling } {
    if (!hints.lastRowOnly?.length) return {};
    const readLater = new Set<string>();
    for (let f = end; f < this.k; f++) for (const input of this.options.manifest.fragments[f].inputs) readLater.add(input.name);
    const names = hints.lastRowOnly.filter((n) => !readLater.has(n));
    return names.length ? { lastRowOnly: names, topK: hints.topK, sample: hints.sample } : {};
  }

  /** What the client needs back from the span: model outputs (not KV) and tensors later fragments read. */
  private wantedFrom(start: number, end: number): string[] {
    const names = new Set<string>();
    for (let f = start; f < end; f++) {
      const fragment = this.options.manifest.fragments[f];
      const stateful = new Set(fragment.stateful.map((p) => p.output));
      for (const output of fragment.outputs) {
        if (output.graphOutput && !stateful.has(output.name)) names.add(output.name);
        if (output.to.some((t) => t >= end)) names.add(output.name);
      }
    }
    return [...names];
  }

  private spanFlops(start: number, end: number, tokens: number): number {
    let f = 0;
    for (let j = start; j < end; j++) f += this.costs[j].flopsPerToken * tokens;
    return f;
  }
}

/** Bytes of the tensors' data (what a call moves on the wire, framing aside). */
function tensorBytes(tensors: TensorMap): number {
  let n = 0;
  for (const t of Object.values(tensors)) n += (t.data as { byteLength?: number }).byteLength ?? 0;
  return n;
}

function pick(known: TensorMap, names: string[], link: RouteCall): TensorMap {
  const out: TensorMap = {};
  for (const n of names) {
    const t = known[n];
    if (!t) throw new Error(`internal: no tensor "${n}" for fragments ${link.start}..${link.end - 1}`);
    out[n] = t;
  }
  return out;
}

/** Per-token costs of each fragment from the manifest (its FLOPs were costed at `costDims`). */
export function fragmentCosts(manifest: Manifest): FragmentCost[] {
  const perToken = positionsAtCostDims(manifest);
  const bytesPerToken = (t: { dtype: string; shape?: (number | string | null)[] }): number => {
    const elem = /64/.test(t.dtype) ? 8 : /16/.test(t.dtype) ? 2 : /8|bool/.test(t.dtype) ? 1 : 4;
    return elem * (t.shape ?? []).reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
  };
  return manifest.fragments.map((f) => ({
    flopsPerToken: f.flops / perToken,
    inputBytesPerToken: f.inputs.filter((i) => i.from !== 'graph').reduce((s, i) => s + bytesPerToken(i), 0),
    outputBytesPerToken: f.outputs.reduce((s, o) => s + bytesPerToken(o), 0),
  }));
}
