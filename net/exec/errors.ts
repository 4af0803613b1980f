/**
 * Typed errors of the exec protocol. Wire codes mirror `ErrorCode` in proto/grid.proto (checked by a test);
 * `TIMEOUT` and `CLOSED` exist only on the client side (a step deadline passed, the stream ended).
 */
import { GridpipeError } from '../../errors/base.js';
export const ErrorCode = {
  ERROR_UNSPECIFIED: 0,
  BAD_REQUEST: 1,
  TOO_LARGE: 2,
  NOT_FOUND: 3,
  BUSY: 4,
  SESSION_EVICTED: 5,
  EXECUTION_FAILED: 6,
  UNPAID: 7,
  INTERNAL: 8,
  PAYMENT_REQUIRED: 9,
} as const;

export type WireErrorCode = keyof typeof ErrorCode;
export type ExecErrorCode = WireErrorCode | 'TIMEOUT' | 'CLOSED';

const NAMES = new Map<number, WireErrorCode>(Object.entries(ErrorCode).map(([k, v]) => [v, k as WireErrorCode]));

/** The name of a wire error code (unknown numbers read as INTERNAL). */
export function errorCodeName(code: number): WireErrorCode {
  return NAMES.get(code) ?? 'INTERNAL';
}

/** An exec failure with its code: thrown by the server's internals and by the client. */
export class ExecError extends GridpipeError<ExecErrorCode> {
  override readonly name = 'ExecError';

  constructor(code: ExecErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }

  /** The numeric wire code (client-only codes travel as INTERNAL). */
  get wireCode(): number {
    return this.code === 'TIMEOUT' || this.code === 'CLOSED' ? ErrorCode.INTERNAL : ErrorCode[this.code];
  }
}

/** Wraps anything thrown into an ExecError, keeping an ExecError as it is. */
export function toExecError(err: unknown, fallback: ExecErrorCode = 'INTERNAL'): ExecError {
  if (err instanceof ExecError) return err;
  if (err instanceof Error) return new ExecError(fallback, err.message, { cause: err });
  // libp2p rejects some waits with an Event (StreamCloseEvent), not an Error.
  const evt = err as { type?: string; error?: unknown } | undefined;
  if (evt && typeof evt === 'object' && typeof evt.type === 'string') {
    return evt.error instanceof Error ? new ExecError(fallback, evt.error.message, { cause: evt.error }) : new ExecError('CLOSED', `stream ${evt.type}`);
  }
  return new ExecError(fallback, String(err));
}
