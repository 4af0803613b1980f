/**
 * The arbiter's re-runs on the grid (issue 21): opens the dispute's model by its manifest CID, picks live hosts
 * of the span whose staking address is not the accused's, at prices the arbiter's limits admit, and runs the
 * evidence's chunks on each in one call (rerun.ts), as the verifier does. A host that charges is paid with the
 * arbiter's own payer (its account and escrow), priced like a session's step from the positions each chunk
 * adds; a re-run whose charge is above `maxRerunCharge` is not asked for, so a rogue price or a challenger's
 * oversized evidence cannot drain the arbiter's escrow. Without a payer only free hosts are asked.
 */
import type { Logger } from 'pino';
import { ExecClient, type TensorMap } from '../../net/exec/client.js';
import type { GridClient, OpenModel } from '../../scheduler/client.js';
import type { HostedSpan } from '../../scheduler/discovery.js';
import { isPaidSpan, type StepPayer } from '../../scheduler/payment.js';
import { admissibleSpans, DEFAULT_PRICE_LIMITS, priceOf, type PriceLimits } from '../../policy/price-limits.js';
import { stepCharge } from '../../policy/pricing.js';
import type { DisputeContext } from './dispute-evidence.js';
import type { DisputeRerunner } from './arbiter.js';
import { rerunOnHost } from './rerun.js';

/** The most one paid re-run may cost by default: 0.01 GRID (10^16 base units), the suppliers' default credit window. */
export const DEFAULT_MAX_RERUN_CHARGE = 10_000_000_000_000_000n;

export interface GridRerunnerOptions {
  timeoutMs?: number;
  logger?: Logger;
  exec?: ExecClient;
  /** Pays hosts that charge (the arbiter's own VoucherPayer); without it only free hosts re-run. */
  payer?: StepPayer;
  /** Prices the arbiter accepts (default DEFAULT_PRICE_LIMITS, the gateway's defaults). */
  priceLimits?: PriceLimits;
  /** The most one host's re-run of one dispute may cost, base units (default DEFAULT_MAX_RERUN_CHARGE). */
  maxRerunCharge?: bigint;
}

/** A re-run the arbiter paid for. */
export interface RerunPayment {
  peerId: string;
  payee: string;
  charge: bigint;
}

/** The positions each chunk adds: the context's `tokens`, else the gap to the next chunk (undefined when unknown). */
export function chunkTokensOf(context: DisputeContext): number[] | undefined {
  const tokens = context.chunks.map((c, i) => c.tokens ?? (i + 1 < context.chunks.length ? context.chunks[i + 1].position - c.position : undefined));
  return tokens.every((t): t is number => t !== undefined && Number.isSafeInteger(t) && t > 0) ? tokens : undefined;
}

export class GridRerunner implements DisputeRerunner {
  private readonly models = new Map<string, Promise<OpenModel>>();
  private readonly exec: ExecClient;
  /** Every paid re-run that answered, in order. */
  readonly payments: RerunPayment[] = [];

  constructor(private readonly client: GridClient, private readonly options: GridRerunnerOptions = {}) {
    this.exec = options.exec ?? new ExecClient();
  }

  private model(manifestCid: string): Promise<OpenModel> {
    let m = this.models.get(manifestCid);
    if (!m) {
      m = this.client.openModel(manifestCid);
      m.catch(() => this.models.delete(manifestCid));
      this.models.set(manifestCid, m);
    }
    return m;
  }

  async spanCids(context: DisputeContext): Promise<string[]> {
    const { manifest } = await this.model(context.manifestCid);
    if (context.end > manifest.fragments.length) throw new RangeError(`the span ${context.start}..${context.end} is outside the model's ${manifest.fragments.length} fragments`);
    return manifest.fragments.slice(context.start, context.end).map((f) => f.cid);
  }

  /** What re-running `context` on `host` costs (0n when it is free), or undefined when it cannot be priced. */
  private chargeOf(model: OpenModel, context: DisputeContext, host: HostedSpan): bigint | undefined {
    const price = priceOf(host);
    if (!isPaidSpan(host) || price === 0n) return 0n;
    const chunkTokens = chunkTokensOf(context);
    if (price === undefined || !chunkTokens) return undefined;
    try {
      return stepCharge(model.manifest, price, { start: context.start, end: context.end, chunkTokens });
    } catch {
      return undefined;
    }
  }

  async rerun(context: DisputeContext, chunks: { position: number; inputs: TensorMap }[], accused: string, hosts: number): Promise<TensorMap[][]> {
    const model = await this.model(context.manifestCid);
    const live = await model.discovery.refresh();
    const admitted = new Set(admissibleSpans(live, this.options.priceLimits ?? DEFAULT_PRICE_LIMITS).spans);
    const maxCharge = this.options.maxRerunCharge ?? DEFAULT_MAX_RERUN_CHARGE;
    const tokens = chunkTokensOf(context);
    const priced = chunks.map((c, i) => ({ ...c, ...(tokens ? { tokens: tokens[i] } : {}) }));
    const out: TensorMap[][] = [];
    const reduction = { ...(context.reduction.lastRowOnly ? { lastRowOnly: context.reduction.lastRowOnly } : {}), ...(context.reduction.topK ? { topK: context.reduction.topK } : {}), ...(context.reduction.sampled ? { sample: { temperature: 1, seed: 0, position: 0 } } : {}) }; // a sampled call is re-run as top-1 (rerun.ts)
    for (const host of live) {
      if (out.length >= hosts) break;
      if (!(host.start <= context.start && context.end <= host.end) || host.stakingAddress.toLowerCase() === accused.toLowerCase() || !admitted.has(host)) continue;
      const charge = this.chargeOf(model, context, host);
      if (charge === undefined || (charge > 0n && (!this.options.payer || charge > maxCharge))) {
        this.options.logger?.debug({ peer: host.peerId, charge: charge?.toString() }, 'arbiter: host not asked (it charges and no payer, more than the limit, or the chunks\' positions are unknown)');
        continue;
      }
      try {
        out.push(await rerunOnHost(this.exec, this.client.host.node, host, {
          model, start: context.start, end: context.end, maxLength: context.maxLength, chunks: priced, want: context.want, reduction, timeoutMs: this.options.timeoutMs ?? 60_000,
          ...(charge > 0n ? { payer: this.options.payer } : {}),
        }));
        if (charge > 0n) this.payments.push({ peerId: host.peerId, payee: host.stakingAddress, charge });
      } catch (err) {
        this.options.logger?.debug({ peer: host.peerId, err: (err as Error).message }, 'arbiter re-run failed; trying another host');
      }
    }
    return out;
  }
}
