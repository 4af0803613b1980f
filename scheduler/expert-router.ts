/**
 * Selective activation on the grid (hivemind's DMoE client, over gridpipe's fragments): for one step of a
 * cut mixture-of-experts layer, take the router's outputs (the pipeline session runs the router fragment with
 * the dense span before it; called here on its own only when they are missing), then each needed expert fragment on
 * one of its hosts, in parallel, one call per expert fragment for all the tokens that chose it, and combine
 * (fragments/moe/run-layer.ts does the arithmetic). Experts are stateless, so a failed host is simply replaced
 * by another host of the same fragment, with nothing to replay; an expert with no live host left is replaced by
 * the token's next-ranked expert (weights renormalised), counted and reported, or, in strict mode, the step
 * fails naming the expert. Sessions to expert hosts stay open for the pipeline session's life.
 */
import type { Logger } from 'pino';
import { positionsAtCostDims, type ExpertGroup, type Manifest } from '../fragments/manifest.js';
import { runExpertGroup, type ExpertCall, type Tensors } from '../fragments/moe/run-layer.js';
import type { GridHost } from '../net/host.js';
import type { ExecClient, RemoteSession, TensorMap } from '../net/exec/client.js';
import { ExecError } from '../net/exec/errors.js';
import { GridpipeError } from '../errors/base.js';
import type { HostedSpan, ModelDiscovery } from './discovery.js';
import type { SwarmView } from './swarm-view.js';
import { dialTargetOf } from './dial-target.js';
import type { StepPayer } from './payment.js';
import { expertListPrice, expertOpenVoucher, payExpertCall } from './expert-payment.js';
import { admissibleSpans, DEFAULT_PRICE_LIMITS, type PriceLimits } from '../policy/price-limits.js';

/**
 * Raised in strict mode when a chosen expert has no live host, and always when the router has none. `refused`:
 * set when live servers host it but the request's price limits refused every one (why, naming one of them).
 */
export class ExpertUnavailableError extends GridpipeError<'EXPERT_UNAVAILABLE'> {
  constructor(readonly layer: number, readonly expert: number | 'router', readonly fragment: number, readonly refused?: string) {
    const what = expert === 'router' ? `the router of mixture-of-experts layer ${layer} (fragment ${fragment})` : `expert ${expert} of mixture-of-experts layer ${layer} (fragment ${fragment})`;
    super('EXPERT_UNAVAILABLE', refused
      ? `${what} has no acceptable server: ${refused}`
      : expert === 'router' ? `no live server hosts ${what}` : `${what} has no live server`);
    this.name = 'ExpertUnavailableError';
  }
}

/**
 * One call of a layer step: to whom, for which experts (empty: the router), how many tokens. `charge`: what its
 * voucher paid (paid suppliers only); `cost`: the charge, or the host's advertised price for the work.
 */
export interface ExpertHop extends ExpertCall {
  layer: number; peerId: string; wallMs: number; bytesSent: number; cost: bigint; charge?: bigint;
  /** What the host reported: time queued behind other runs, and onnxruntime time (the rest of wallMs is transport). */
  queueMs?: number; computeMs?: number;
}

/** A chosen expert that had no live server, and the expert that stood in (undefined when none was left). */
export interface ExpertFallback { layer: number; expert: number; by: number | undefined; tokens: number }

export interface ExpertLayerOutcome { output: Tensors[string]; hops: ExpertHop[]; fallbacks: ExpertFallback[] }

export interface ExpertRouterOptions {
  host: GridHost;
  manifest: Manifest;
  manifestCid: string;
  discovery: ModelDiscovery;
  swarm: SwarmView;
  client: ExecClient;
  /** Fail a step whose token chose an expert with no live server, instead of falling back (default false). */
  strict?: boolean;
  /** Call every expert for every token (the dense baseline of the `selective` bench; the output is the same). */
  activateAll?: boolean;
  /** Deadline of one expert call (default 5 s). */
  timeoutMs?: number;
  /** Pays router and expert hosts that charge, per call (scheduler/expert-payment.ts); without it only free ones serve. */
  payer?: StepPayer;
  /** Per-host price ceilings, as span routing applies them: a refused host is no candidate (default DEFAULT_PRICE_LIMITS). */
  priceLimits?: PriceLimits;
  logger?: Logger;
}

export class ExpertRouter {
  private readonly sessions = new Map<string, Promise<RemoteSession>>();
  private closed = false;
  private admittedOf?: { current: readonly HostedSpan[]; spans: HostedSpan[]; refused: Map<number, string> };

  constructor(private readonly options: ExpertRouterOptions) {}

  /** Runs the cut MoE layer `group` (an index into manifest.expertGroups) on the tensors known so far. */
  async runLayer(groupIndex: number, known: TensorMap): Promise<ExpertLayerOutcome> {
    const group = this.options.manifest.expertGroups[groupIndex];
    const hops: ExpertHop[] = [];
    const deadFragments = new Set<number>();
    const fragmentOf = (expert: number): number => group.experts[expert].fragments[0];
    const isLive = (expert: number): boolean => !deadFragments.has(fragmentOf(expert)) && this.hostsOf(fragmentOf(expert)).length > 0;
    // The pipeline session walks the router with the dense span before it: its outputs are known then.
    let routerOutputs: Tensors | undefined = known[group.gates!] && known[group.router] ? { [group.gates!]: known[group.gates!], [group.router]: known[group.router] } : undefined;
    for (let attempt = 0; ; attempt++) {
      let fallbacks: ExpertFallback[] = [];
      try {
        const run = await runExpertGroup(this.options.manifest, group, known, {
          isLive,
          ...(this.options.activateAll ? { topK: group.experts.length } : {}),
          onRouted: (routes) => {
            fallbacks = summariseFallbacks(group, routes);
            const strictMiss = fallbacks[0];
            if (this.options.strict && strictMiss) {
              const fragment = fragmentOf(strictMiss.expert);
              throw new ExpertUnavailableError(group.layer, strictMiss.expert, fragment, deadFragments.has(fragment) ? undefined : this.refusedFor(fragment));
            }
          },
          run: async (fragment, feeds, experts) => {
            if (fragment === group.routerFragment && routerOutputs) return routerOutputs;
            const result = await this.call(group, fragment, feeds, experts ?? [], hops);
            if (fragment === group.routerFragment) routerOutputs = result;
            return result;
          },
        });
        for (const f of fallbacks) this.options.logger?.warn({ layer: f.layer, expert: f.expert, by: f.by, tokens: f.tokens }, 'expert has no live server; fell back to the next-ranked expert');
        return { output: run.output, hops, fallbacks };
      } catch (err) {
        // Every host of an expert fragment failed during the step: its experts are dead now; route the tokens again.
        if (err instanceof NoLiveHost && err.fragment !== group.routerFragment && attempt < group.experts.length) {
          deadFragments.add(err.fragment);
          continue;
        }
        if (err instanceof NoLiveHost) {
          const expert = group.experts.find((e) => e.fragments[0] === err.fragment)?.index;
          throw new ExpertUnavailableError(group.layer, expert ?? 'router', err.fragment, err.refused);
        }
        throw err;
      }
    }
  }

  /** Closes every session to an expert or router host. */
  async close(): Promise<void> {
    this.closed = true;
    const open = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(open.map((s) => s.then((x) => x.close(), () => undefined)));
  }

  /** The model's hosts whose prices the request's limits admit, and, per fragment none of them hosts, why. */
  private admitted(): { spans: HostedSpan[]; refused: Map<number, string> } {
    // Asked per token and expert while routing: worked out again only when discovery's list is a new one.
    const current = this.options.discovery.current;
    if (this.admittedOf?.current !== current) {
      this.admittedOf = { current, ...admissibleSpans(current, this.options.priceLimits ?? DEFAULT_PRICE_LIMITS, this.options.manifest.fragments.length) };
    }
    return this.admittedOf;
  }

  /** Why `fragment` has no candidate host when live hosts of it were all refused for their price; otherwise undefined. */
  private refusedFor(fragment: number): string | undefined {
    return this.admitted().refused.get(fragment);
  }

  /**
   * Live, unpaused hosts of one fragment whose price the limits admit, fastest estimate first. For an expert
   * fragment, a host whose record names the experts it computes must name this fragment's (records from before
   * the field count by index).
   */
  private hostsOf(fragment: number): HostedSpan[] {
    const moe = this.options.manifest.fragments[fragment].moe;
    const computesItsExperts = (s: HostedSpan): boolean => {
      const listed = s.experts?.find((e) => e.fragment === fragment);
      return !listed || !moe?.experts || (listed.group === moe.group && moe.experts.every((e) => listed.experts.includes(e)));
    };
    return this.admitted().spans
      .filter((s) => s.start <= fragment && fragment < s.end && !s.paused && !this.options.swarm.isBanned(s.peerId) && computesItsExperts(s))
      .map((s) => ({ s, e: this.options.swarm.estimateOf(s.peerId, s.gflops) }))
      .sort((a, b) => (a.e.rttMs + a.e.queueMs) * (1 + a.e.inflight) - (b.e.rttMs + b.e.queueMs) * (1 + b.e.inflight) || a.s.peerId.localeCompare(b.s.peerId))
      .map(({ s }) => s);
  }

  /** Calls `fragment` on its best live host, moving to the next host when one fails. */
  private async call(group: ExpertGroup, fragment: number, feeds: Tensors, experts: number[], hops: ExpertHop[]): Promise<Tensors> {
    const want = fragment === group.routerFragment ? [group.gates!, group.router] : experts.map((e) => group.experts[e].output!);
    const tokens = Math.max(1, ...Object.values(feeds).map((t) => (t.dims.length >= 2 ? t.dims.at(-2)! : 1)));
    for (;;) {
      const host = this.hostsOf(fragment)[0];
      if (!host) throw new NoLiveHost(fragment, this.refusedFor(fragment));
      // Outside the try: a payer that refuses to pay is not the host's fault.
      const payment = await payExpertCall(this.options.manifest, this.options.payer, host, fragment, tokens);
      const started = performance.now();
      try {
        const session = await this.sessionTo(host, fragment);
        const estimate = this.options.swarm.estimateOf(host.peerId, host.gflops);
        estimate.inflight++;
        const res = await session.step(feeds, { position: 0, want, timeoutMs: this.options.timeoutMs ?? 5000, ...payment?.options }).finally(() => { estimate.inflight--; });
        const wallMs = performance.now() - started;
        const bytesSent = Object.values(feeds).reduce((n, t) => n + (t.data as { byteLength: number }).byteLength, 0);
        const flops = (this.options.manifest.fragments[fragment].flops / positionsAtCostDims(this.options.manifest)) * tokens;
        this.options.swarm.reportReply(host.peerId, wallMs, res.queueMs, res.computeMs, flops, bytesSent);
        if (payment && res.charge !== payment.charge) {
          this.options.logger?.warn({ peer: host.peerId, paid: payment.charge.toString(), charged: res.charge.toString() }, 'expert host charged another amount than the voucher paid for');
        }
        const cost = payment?.charge ?? expertListPrice(this.options.manifest, host, fragment, tokens);
        hops.push({ layer: group.layer, fragment, experts, tokens, peerId: host.peerId, wallMs, bytesSent, cost, queueMs: res.queueMs, computeMs: res.computeMs, ...(payment ? { charge: payment.charge } : {}) });
        return res.outputs;
      } catch (err) {
        // Our own close ended the call, or the request itself was bad: not the host's fault.
        if (this.closed || (err instanceof ExecError && err.code === 'BAD_REQUEST')) throw err;
        this.options.logger?.warn({ peer: host.peerId, fragment, err: (err as Error).message }, 'expert host failed; trying another');
        this.options.swarm.reportFailure(host.peerId);
        const key = `${host.peerId}/${fragment}`;
        const stale = this.sessions.get(key);
        this.sessions.delete(key);
        stale?.then((s) => s.abort(), () => undefined);
      }
    }
  }

  private sessionTo(host: HostedSpan, fragment: number): Promise<RemoteSession> {
    const key = `${host.peerId}/${fragment}`;
    let session = this.sessions.get(key);
    if (!session) {
      const f = this.options.manifest.fragments[fragment];
      session = expertOpenVoucher(this.options.payer, host).then((voucher) => this.options.client.openSession(this.options.host.node, dialTargetOf(host), {
        fragments: [{ cid: f.cid, manifestCid: this.options.manifestCid, index: fragment }],
        ...(voucher ? { voucher } : {}),
      }));
      this.sessions.set(key, session);
      session.catch(() => { if (this.sessions.get(key) === session) this.sessions.delete(key); });
    }
    return session;
  }
}

/** Every fragment host of one fragment failed within a step. */
class NoLiveHost extends Error {
  constructor(readonly fragment: number, readonly refused?: string) { super(`no live host for fragment ${fragment}`); }
}

/** The replaced experts of a step's routes, per expert, with the tokens that lost it. */
function summariseFallbacks(group: ExpertGroup, routes: { replaced: { expert: number; by: number | undefined }[] }[]): ExpertFallback[] {
  const byExpert = new Map<number, ExpertFallback>();
  for (const r of routes) {
    for (const { expert, by } of r.replaced) {
      const f = byExpert.get(expert) ?? { layer: group.layer, expert, by, tokens: 0 };
      f.tokens++;
      byExpert.set(expert, f);
    }
  }
  return [...byExpert.values()].sort((a, b) => a.expert - b.expert);
}
