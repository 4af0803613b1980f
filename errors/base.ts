/**
 * The one base error of the project (modelled on viem's BaseError): a stable `code` a program can branch
 * on, a short message a person can read alone, and the `cause` kept for logs. `badInput` marks what the
 * caller got wrong (a flag, a file, a request) as opposed to a failure at run time; the CLI exits 2 for the
 * first and 1 for the second, and prints neither with a stack trace.
 */

export interface GridpipeErrorOptions {
  /** The error this one explains (kept for logs and `GRIDPIPE_DEBUG`, never printed by default). */
  cause?: unknown;
  /** True when the error is the caller's bad input rather than a failure at run time. */
  badInput?: boolean;
}

/** What every gridpipe error extends. */
export class GridpipeError<Code extends string = string> extends Error {
  readonly code: Code;
  readonly badInput: boolean;

  constructor(code: Code, message: string, options: GridpipeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.badInput = options.badInput ?? false;
  }
}

/** Whether `err` is a gridpipe error (also across copies of this module, e.g. a worker's). */
export function isGridpipeError(err: unknown): err is GridpipeError {
  return err instanceof GridpipeError || (err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && typeof (err as { badInput?: unknown }).badInput === 'boolean');
}
