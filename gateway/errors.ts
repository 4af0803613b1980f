/**
 * Errors in OpenAI's shape: `{error: {message, type, param, code}}` with the HTTP status OpenAI uses for
 * the same situation, so OpenAI clients raise their usual typed errors (BadRequestError, RateLimitError...).
 */
import { GridpipeError } from '../errors/base.js';

export type ErrorType =
  | 'invalid_request_error' | 'authentication_error' | 'insufficient_quota' | 'not_found_error'
  | 'rate_limit_error' | 'service_unavailable' | 'server_error' | 'upstream_error';

export interface OpenAIErrorBody { error: { message: string; type: ErrorType; param: string | null; code: string | null } }

/** An error the gateway answers with: status, OpenAI type and code, the offending parameter, extra headers. */
export class ApiError extends GridpipeError {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    code: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message, { badInput: status >= 400 && status < 500 });
    this.name = 'ApiError';
  }

  /** The JSON body clients read. */
  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request itself is wrong. */
export const badRequest = (message: string, param: string | null = null, code = 'invalid_request'): ApiError =>
  new ApiError(400, message, 'invalid_request_error', code, param);
/** 401: no key or an unknown one. */
export const unauthorized = (message: string, code = 'invalid_api_key'): ApiError => new ApiError(401, message, 'authentication_error', code);
/** 402: the key's budget is spent. */
export const overBudget = (message: string): ApiError => new ApiError(402, message, 'insufficient_quota', 'insufficient_quota');
/** 404: no such model (or route). */
export const notFound = (message: string, param: string | null = 'model', code = 'model_not_found'): ApiError =>
  new ApiError(404, message, 'not_found_error', code, param);
/** 429: the key's rate limit; Retry-After in whole seconds. */
export const rateLimited = (message: string, retryAfterS: number): ApiError =>
  new ApiError(429, message, 'rate_limit_error', 'rate_limit_exceeded', null, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterS))) });
/** 503: the grid cannot serve the model now (a fragment has no live host). */
export const unavailable = (message: string, code = 'no_live_host'): ApiError => new ApiError(503, message, 'service_unavailable', code);
