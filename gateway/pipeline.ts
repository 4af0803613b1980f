/**
 * Opening pipeline sessions for a request, and turning grid failures into API errors. A payer (gateway/payer,
 * when the gateway runs with --chain-config and --wallet) is handed to the session so each paid hop carries a
 * signed voucher and reports its `charge`.
 */
import type { GridClient, OpenModel } from '../scheduler/client.js';
import type { StepPayer } from '../scheduler/payment.js';
import { PaymentNeededError, PipelineRequestError, PipelineUnavailableError, type PipelineSession } from '../scheduler/session.js';
import { PayerError } from './payer/index.js';
import { ExpertUnavailableError } from '../scheduler/expert-router.js';
import { BudgetError } from './budget.js';
import type { PriceLimits } from '../policy/price-limits.js';
import type { Verifier } from './verify/verifier.js';
import { ApiError, badRequest, overBudget, unavailable } from './errors.js';

/**
 * Opens a session on `model` holding `maxLength` positions, paid by `payer` when given, at prices `priceLimits`
 * admits, observed by the gateway's `verifier` when it runs one (gateway/verify/). The request's `strictExperts`: a
 * token whose chosen mixture-of-experts expert has no live server fails the step instead of falling back; `exact`:
 * activations are never compressed on the wire.
 */
export function openPipeline(client: GridClient, model: OpenModel, maxLength: number, payer?: StepPayer, priceLimits?: PriceLimits, verifier?: Verifier, request: { strictExperts?: boolean; exact?: boolean } = {}): PipelineSession {
  return client.session(model, maxLength, { payer, priceLimits, observer: verifier?.observe(model, maxLength), ...(request.strictExperts ? { strictExperts: true } : {}), ...(request.exact ? { exact: true } : {}) });
}

/**
 * An API error for a failure on the grid: 503 (no live host, a chosen expert with no live host in strict mode,
 * every host refused for its price, payments off), 402
 * (payer cannot pay, or the budget refused the first step), else 502.
 */
export function gridError(err: unknown, modelId: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof BudgetError) return overBudget(`no output: ${err.message}`);
  if (err instanceof PipelineUnavailableError) {
    if (err.refused) return unavailable(`model "${modelId}" cannot be served right now: every live supplier of fragment ${err.fragment} is refused (${err.refused})`, 'no_acceptable_host');
    return unavailable(`model "${modelId}" cannot be served right now: no live supplier hosts fragment ${err.fragment}`, 'no_live_host');
  }
  if (err instanceof ExpertUnavailableError) {
    // Strict experts (or a router with no host): the message names the layer, the expert and its fragment.
    return unavailable(`model "${modelId}" cannot be served right now: ${err.message}`, 'expert_unavailable');
  }
  if (err instanceof PaymentNeededError) {
    return unavailable(`model "${modelId}" is served by suppliers that charge, and this gateway has no payer for your key (start it with --chain-config and --wallet)`, 'payment_not_configured');
  }
  if (err instanceof PayerError) return overBudget(`the payer account of your key cannot pay: ${err.message}`);
  if (err instanceof PipelineRequestError) return badRequest(err.message, null, 'invalid_value');
  return new ApiError(502, `the grid failed to serve model "${modelId}": ${(err as Error)?.message ?? String(err)}`, 'upstream_error', 'grid_error');
}
