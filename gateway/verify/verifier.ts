/**
 * The gateway's verifier (issue 21): re-runs a share of each supplier's work on a different host of the same
 * span and compares the outputs' digests (policy/verification.ts), so a supplier that returns perturbed,
 * truncated or made-up activations is caught and excluded from routing.
 *
 * How: every pipeline session the gateway opens is observed (scheduler/step-observer.ts). When a session
 * first uses a (supplier, span) link, the link is sampled for checking with probability `rate`; a sampled
 * link keeps the chunks the supplier ran (its inputs from step 0, as a fresh host is replayed them, and the
 * outputs it returned). When the session closes, off the request's path, a checker (another host of the span,
 * not banned) is replayed every chunk in one call, prefill-style, and each chunk's digest is compared with the
 * supplier's. On a mismatch a third host (the referee) runs the same chunks: whoever it disagrees with is in
 * the minority and is condemned at once for every session of this process (policy/estimates.ts `condemn`),
 * counted in metrics, logged, and handed to `onVerdict` (the dispute filer takes it from there).
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { GridHost } from '../../net/host.js';
import { ExecClient, type TensorMap } from '../../net/exec/client.js';
import type { OpenModel } from '../../scheduler/client.js';
import type { HostedSpan } from '../../scheduler/discovery.js';
import { isPaidSpan, type StepPayer } from '../../scheduler/payment.js';
import { admissibleSpans, DEFAULT_PRICE_LIMITS, type PriceLimits } from '../../policy/price-limits.js';
import type { HopRecord, StepObserver } from '../../scheduler/step-observer.js';
import type { SwarmView } from '../../scheduler/swarm-view.js';
import {
  DEFAULT_DIGEST_TOLERANCE, DEFAULT_VERIFY_RATE, firstMismatch, majorityVerdict, type DigestMismatch, type DigestTolerance,
} from '../../policy/verification.js';
import { comparableDigest, rerunCall } from './rerun.js';

export { DEFAULT_VERIFY_RATE };

export interface VerifierOptions {
  host: GridHost;
  swarm: SwarmView;
  /** Share of links checked, 0..1 (default DEFAULT_VERIFY_RATE). */
  rate?: number;
  tolerance?: DigestTolerance;
  /** Draws in [0, 1) for sampling (default Math.random). */
  random?: () => number;
  exec?: ExecClient;
  logger?: Logger;
  /** Registry for the verifier's counters (gateway/metrics' registry). */
  registry?: Registry;
  /** Deadline of one check call (default 60 s). */
  timeoutMs?: number;
  /** Told every verdict that condemned someone, with the link and the re-runs' outputs (the dispute filer's evidence). */
  onVerdict?: (verdict: Verdict, evidence: VerdictEvidence) => void;
  /** Told every check's verdict, whatever it found. */
  onCheck?: (verdict: Verdict) => void;
  /**
   * Pays the hosts that check and referee when they charge (the gateway's payer), with vouchers priced like a
   * session's step; without it hosts that charge are never asked.
   */
  payer?: StepPayer;
  /**
   * Prices a paid check may cost (the gateway's, default policy/price-limits' DEFAULT_PRICE_LIMITS): a host the
   * gateway would not route a request to is not asked to check either, so a rogue price earns nothing here.
   */
  priceLimits?: PriceLimits;
}

/** The chunks a supplier ran in a session, in order from step 0, with what it returned. */
export interface CheckedLink {
  supplier: HostedSpan;
  start: number;
  end: number;
  model: OpenModel;
  maxLength: number;
  chunks: { position: number; inputs: TensorMap; outputs: TensorMap; tokens: number }[];
  /** The link's calls in order: how many chunks each carried and the receipt its reply signed, if any. */
  calls: { chunks: number; receipt?: Uint8Array }[];
  want: string[];
  reduction: HopRecord['reduction'];
}

/** What a condemning verdict rests on: the link as the supplier ran it and the checker's and referee's re-runs. */
export interface VerdictEvidence {
  link: CheckedLink;
  /** Outputs of each chunk as the checker and the referee returned them. */
  checker: TensorMap[];
  referee: TensorMap[];
  /** The checker's host, and the receipt it signed for its re-run (a paid host's own evidence against it). */
  checkerHost?: HostedSpan;
  checkerReceipt?: Uint8Array;
}

/** A check's outcome. */
export interface Verdict {
  result: 'agree' | 'supplier-condemned' | 'checker-condemned' | 'undecided' | 'unchecked';
  supplier: string;
  span: [number, number];
  checker?: string;
  referee?: string;
  /** Steps compared. */
  steps: number;
  /** The first step (chunk index) that differed, and how. */
  mismatch?: { step: number; detail: DigestMismatch };
  /** Why no check ran ('unchecked'). */
  reason?: string;
}

/** Running totals (the bench's figures). */
export interface VerifierStats {
  linksSeen: number;
  linksSampled: number;
  checks: number;
  checkedSteps: number;
  condemned: string[];
  /** Client-measured wall time of the grid's hops, and of the verifier's calls (ms). */
  gridMs: number;
  verifyMs: number;
}

export class Verifier {
  readonly rate: number;
  readonly stats: VerifierStats = { linksSeen: 0, linksSampled: 0, checks: 0, checkedSteps: 0, condemned: [], gridMs: 0, verifyMs: 0 };
  private readonly exec: ExecClient;
  private readonly random: () => number;
  private readonly tolerance: DigestTolerance;
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;
  private readonly counters?: { checks: Counter; steps: Counter; condemned: Counter };

  constructor(private readonly options: VerifierOptions) {
    const rate = options.rate ?? DEFAULT_VERIFY_RATE;
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`the verify rate must be within 0..1, got ${rate}`);
    this.rate = rate;
    this.exec = options.exec ?? new ExecClient();
    this.random = options.random ?? Math.random;
    this.tolerance = options.tolerance ?? DEFAULT_DIGEST_TOLERANCE;
    if (options.registry) {
      const registers = [options.registry];
      this.counters = {
        checks: new Counter({ name: 'gridpipe_verify_checks_total', help: 'Verification checks run, by result.', labelNames: ['result'], registers }),
        steps: new Counter({ name: 'gridpipe_verify_checked_steps_total', help: 'Supplier steps re-run on another host and compared.', registers }),
        condemned: new Counter({ name: 'gridpipe_verify_condemned_total', help: 'Peers excluded from routing because a check found their outputs wrong.', registers }),
      };
    }
  }

  /** An observer for one pipeline session on `model` (pass it as SessionOptions.observer). */
  observe(model: OpenModel, maxLength: number): StepObserver {
    const links = new Map<string, CheckedLink | null>();
    return {
      onHop: (hop) => {
        this.stats.gridMs += hop.wallMs;
        const key = `${hop.peerId}/${hop.start}/${hop.end}`;
        let link = links.get(key);
        if (link === undefined) {
          this.stats.linksSeen++;
          // Only a link met from its first chunk can be replayed whole (a fresh host gets every earlier step).
          const sampled = this.rate > 0 && this.random() < this.rate;
          link = sampled ? { supplier: hop.hosted, start: hop.start, end: hop.end, model, maxLength, chunks: [], calls: [], want: hop.want, reduction: hop.reduction } : null;
          if (link) this.stats.linksSampled++;
          links.set(key, link);
        }
        if (!link) return;
        hop.replay.forEach((r, i) => link!.chunks.push({ position: r.chunk.position, inputs: r.chunk.inputs, outputs: r.outputs, tokens: hop.chunkTokens[i] ?? 0 }));
        link.chunks.push({ position: hop.position, inputs: hop.inputs, outputs: hop.outputs, tokens: hop.chunkTokens[hop.replay.length] ?? 0 });
        link.calls.push({ chunks: hop.replay.length + 1, ...(hop.receipt ? { receipt: hop.receipt } : {}) });
      },
      onClose: () => {
        for (const link of links.values()) if (link?.chunks.length && link.chunks[0].position === 0) this.enqueue(link);
        links.clear();
      },
    };
  }

  /** Resolves when every queued check has finished. */
  async idle(): Promise<void> {
    while (this.pending) await this.queue;
  }

  /** Queues a check of `link` (one at a time, off every request's path). */
  enqueue(link: CheckedLink): void {
    this.pending++;
    this.queue = this.queue.then(() => this.check(link)).catch((err: unknown) => {
      this.options.logger?.warn({ err: (err as Error).message, supplier: link.supplier.peerId }, 'verification check failed');
    }).finally(() => { this.pending--; });
  }

  /** Checks one link now: checker, then on a mismatch the referee; condemns the minority. */
  async check(link: CheckedLink): Promise<Verdict> {
    const supplier = link.supplier.peerId;
    const span: [number, number] = [link.start, link.end];
    if (this.options.swarm.estimates.isCondemned(supplier)) return this.finish({ result: 'unchecked', supplier, span, steps: 0, reason: 'already excluded' });
    const sampled = !!link.reduction.sample;
    const original = link.chunks.map((c) => comparableDigest(c.outputs, sampled));
    const first = await this.firstRerun(link, [supplier]);
    if (!first) return this.finish({ result: 'unchecked', supplier, span, steps: 0, reason: 'no other live, free host of the span answered' });
    const { host: checker, outputs: checkerOutputs, receipt: checkerReceipt } = first;
    const checked = checkerOutputs.map((o) => comparableDigest(o, sampled));
    this.stats.checks++;
    const differs = firstMismatch(original, checked, this.tolerance);
    if (!differs) {
      this.stats.checkedSteps += link.chunks.length;
      return this.finish({ result: 'agree', supplier, span, checker: checker.peerId, steps: link.chunks.length });
    }
    const second = await this.firstRerun(link, [supplier, checker.peerId]);
    if (!second) {
      return this.finish({ result: 'undecided', supplier, span, checker: checker.peerId, steps: link.chunks.length, mismatch: { step: differs.step, detail: differs.mismatch }, reason: 'no third host of the span to referee' });
    }
    const { host: referee, outputs: refereeOutputs } = second;
    const third = refereeOutputs.map((o) => comparableDigest(o, sampled));
    const verdict = majorityVerdict(!firstMismatch(original, third, this.tolerance), !firstMismatch(checked, third, this.tolerance));
    this.stats.checkedSteps += link.chunks.length;
    const condemned = verdict === 'supplier' ? supplier : verdict === 'checker' ? checker.peerId : undefined;
    if (condemned && !this.options.swarm.estimates.isCondemned(condemned)) {
      this.options.swarm.estimates.condemn(condemned);
      this.stats.condemned.push(condemned);
      this.counters?.condemned.inc();
    }
    return this.finish({
      result: verdict === 'supplier' ? 'supplier-condemned' : verdict === 'checker' ? 'checker-condemned' : 'undecided',
      supplier, span, checker: checker.peerId, referee: referee.peerId, steps: link.chunks.length, mismatch: { step: differs.step, detail: differs.mismatch },
    }, { link, checker: checkerOutputs, referee: refereeOutputs, checkerHost: checker, ...(checkerReceipt ? { checkerReceipt } : {}) });
  }

  private finish(v: Verdict, evidence?: VerdictEvidence): Verdict {
    this.counters?.checks.inc({ result: v.result });
    this.options.onCheck?.(v);
    if (v.result !== 'unchecked') this.counters?.steps.inc(v.steps);
    const log = this.options.logger;
    if (v.result === 'supplier-condemned' || v.result === 'checker-condemned') {
      log?.warn({ verdict: v }, `verification: ${v.result === 'supplier-condemned' ? v.supplier : v.checker} returned wrong outputs; excluded from routing`);
      if (evidence) this.options.onVerdict?.(v, evidence);
    } else if (v.result === 'undecided') {
      log?.warn({ verdict: v }, 'verification: outputs differ and no majority decides');
    } else {
      log?.debug({ verdict: v }, 'verification check');
    }
    return v;
  }

  /**
   * Live, unbanned hosts of the link's whole span other than `exclude`, at prices the limits admit, in a random
   * order (drawn with `random`), so a supplier cannot tell which host will check it nor a cheating host when it
   * will be asked to check. Hosts that charge are asked only when the verifier has a payer (docs/verification.md).
   */
  private async otherHosts(link: CheckedLink, exclude: string[]): Promise<HostedSpan[]> {
    const current = link.model.discovery.current.length ? link.model.discovery.current : await link.model.discovery.refresh();
    const admitted = new Set(admissibleSpans(current, this.options.priceLimits ?? DEFAULT_PRICE_LIMITS).spans);
    const hosts = current.filter((s) => admitted.has(s) && s.start <= link.start && link.end <= s.end && !exclude.includes(s.peerId) && !this.options.swarm.isBanned(s.peerId)
      && (this.options.payer !== undefined || !(isPaidSpan(s) && Number(s.pricePerGflop) > 0)));
    for (let i = hosts.length - 1; i > 0; i--) {
      const j = Math.min(i, Math.floor(this.random() * (i + 1)));
      [hosts[i], hosts[j]] = [hosts[j], hosts[i]];
    }
    return hosts;
  }

  /** The re-run of the first other host that answers (one that fails is skipped, not condemned). */
  private async firstRerun(link: CheckedLink, exclude: string[]): Promise<{ host: HostedSpan; outputs: TensorMap[]; receipt?: Uint8Array } | undefined> {
    for (const host of await this.otherHosts(link, exclude)) {
      const started = performance.now();
      try {
        return { host, ...(await rerunCall(this.exec, this.options.host.node, host, { ...link, timeoutMs: this.options.timeoutMs ?? 60_000, payer: this.options.payer })) };
      } catch (err) {
        this.options.logger?.debug({ peer: host.peerId, err: (err as Error).message }, 'verification re-run failed; trying another host');
      } finally {
        this.stats.verifyMs += performance.now() - started;
      }
    }
    return undefined;
  }
}
