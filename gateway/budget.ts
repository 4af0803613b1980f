/**
 * What one request may spend, enforced before any voucher is signed (issue 13, attacks 1 and 6). A request has
 * a cost ceiling (its positions at the dearest admissible price, policy/price-limits) and draws on its key's
 * budget step by step: each voucher's charge is first reserved on the key (spent + held + charge <= budget,
 * checked and added synchronously, so concurrent requests of one key cannot pass the budget together) and
 * within the request's ceiling; only then is the voucher signed. When the request settles, what it reserved
 * becomes spending (what was signed) and the rest is given back. A failover's replay (a replacement re-running
 * the earlier steps) raises the ceiling by what it costs, at most one ceiling more over the whole request: a
 * failed supplier must not end a request another can serve, and a request never costs more than twice its
 * ceiling (the key's budget still bounds every step).
 */
import type { Manifest } from '../fragments/manifest.js';
import type { HostedSpan } from '../scheduler/discovery.js';
import type { Payee, StepPayer, WireVoucher } from '../scheduler/payment.js';
import { admissibleSpans, costCeiling, dearestPrices, type PriceLimits, type RequestWork } from '../policy/price-limits.js';
import { overBudget, type ApiError } from './errors.js';
import type { ApiKey, KeyRing } from './keys.js';
import { GridpipeError } from '../errors/base.js';

/** A step's voucher would pass the key's budget or the request's ceiling: it is not signed. */
export class BudgetError extends GridpipeError<'KEY_BUDGET' | 'REQUEST_CEILING'> {
  override name = 'BudgetError';
  constructor(code: 'KEY_BUDGET' | 'REQUEST_CEILING', message: string) {
    super(code, message);
  }
}

/** Per fragment, the dearest price among the hosts in `spans` that `limits` accept: what a ceiling is priced at. */
export function ceilingPrices(manifest: Pick<Manifest, 'fragments'>, spans: readonly HostedSpan[], limits: PriceLimits): bigint[] {
  const k = manifest.fragments.length;
  return dearestPrices(admissibleSpans(spans, limits, k).spans, k);
}

/** The ceiling of a request on a model whose hosts are `spans` (priced under `limits`). */
export function requestCeiling(manifest: Pick<Manifest, 'fragments' | 'costDims' | 'statefulPairs'>, spans: readonly HostedSpan[], limits: PriceLimits, work: RequestWork): bigint {
  return costCeiling(manifest, ceilingPrices(manifest, spans, limits), work);
}

/**
 * The most new tokens (1 to `upTo`) whose ceiling fits in `left` after a `prompt`-token prompt: what an unset
 * max_tokens becomes for a key with a budget. 1 when not even one fits (the request is then refused up front).
 */
export function affordableTokens(manifest: Pick<Manifest, 'fragments' | 'costDims' | 'statefulPairs'>, prices: readonly bigint[], prompt: number, upTo: number, left: bigint): number {
  const fits = (n: number): boolean => costCeiling(manifest, prices, { positions: prompt + n, steps: n + 1 }) <= left;
  let lo = 1;
  let hi = upTo;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export class RequestBudget {
  /** Reserved on the key for vouchers this request signed or is signing. */
  private reserved = 0n;
  /** Of which the payer did sign (money a supplier may redeem). */
  signed = 0n;
  private settled = false;
  /** What failovers' replays added to the ceiling so far (at most the ceiling). */
  private replayAllowance = 0n;

  constructor(private readonly keys: KeyRing, readonly key: ApiKey, readonly ceiling: bigint) {}

  /** 402 when the ceiling does not fit in what the key has left; call before any work. */
  admit(what: string): void {
    const left = this.keys.remaining(this.key);
    if (left !== undefined && this.ceiling > left) {
      throw overBudget(`${what} may cost up to ${this.ceiling} base units at the current hosts' prices, and key "${this.key.name}" has ${left} left of its budget of ${this.key.budget}; lower max_tokens or the prompt`);
    }
  }

  /** A payer that reserves each charge on the key, within the ceiling, before `payer` signs it. */
  wrap(payer: StepPayer | undefined): StepPayer | undefined {
    if (!payer) return undefined;
    return {
      voucherFor: async (payee: Payee, charge: bigint, detail?: { replay: bigint }): Promise<WireVoucher> => {
        this.reserve(charge, detail?.replay ?? 0n);
        try {
          const voucher = await payer.voucherFor(payee, charge);
          this.signed += charge;
          return voucher;
        } catch (err) {
          this.reserved -= charge;
          this.keys.release(this.key, charge);
          throw err;
        }
      },
    };
  }

  /**
   * Whether the request may take another step, given `unpaidSoFar`: the list price of its hops that were not paid
   * by voucher (no money moved, but the key's budget counts them). Paid steps are checked before signing.
   */
  fits(unpaidSoFar: bigint): boolean {
    const left = this.keys.remaining(this.key);
    return left === undefined || unpaidSoFar < left;
  }

  private reserve(charge: bigint, replay: bigint): void {
    if (this.settled) throw new BudgetError('REQUEST_CEILING', 'the request has ended');
    const room = this.ceiling - this.replayAllowance;
    const extra = replay < room ? replay : room; // failovers' replays: at most one more ceiling in all
    if (this.reserved + charge > this.ceiling + this.replayAllowance + extra) {
      throw new BudgetError('REQUEST_CEILING', `the next step costs ${charge} base units, which would take the request past its ceiling of ${this.ceiling} (+${this.replayAllowance + extra} for failovers' replays; ${this.reserved} spent)`);
    }
    if (!this.keys.hold(this.key, charge)) {
      throw new BudgetError('KEY_BUDGET', `the next step costs ${charge} base units and key "${this.key.name}" has ${this.keys.remaining(this.key)} left of its budget of ${this.key.budget}`);
    }
    this.reserved += charge;
    this.replayAllowance += extra;
  }

  /**
   * Ends the request: its reservation is given back and the key charged `tokens` and what it cost: what was
   * signed (owed whether or not the step then succeeded) plus `unpaidCost`, the list price of hops not paid
   * by voucher.
   */
  settle(tokens: number, unpaidCost: bigint): bigint {
    if (this.settled) return 0n;
    this.settled = true;
    this.keys.release(this.key, this.reserved);
    const cost = this.signed + unpaidCost;
    this.keys.charge(this.key, tokens, cost);
    return cost;
  }
}

/** The API error for a step the budget refused, when the request produced nothing. */
export function budgetApiError(err: BudgetError): ApiError {
  return overBudget(err.message);
}
