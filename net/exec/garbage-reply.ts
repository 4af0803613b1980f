/**
 * A reply a server sent that is garbage (malformed structure, not protobuf): not a failure an honest server has, so the client's swarm view counts it against the server (scheduler/swarm-view.ts
 * `reportGarbage`: a server that keeps sending garbage has its capacity records ignored for a while). Still an
 * ExecError INTERNAL, so whoever only knows ExecError handles it as before (the session fails over).
 */
import { ExecError } from './errors.js';

export class GarbageReplyError extends ExecError {
  /** Marks the error for the swarm view (its name stays ExecError's, as callers print it). */
  readonly garbage = true;
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('INTERNAL', message, options);
  }
}

/** Whether an error is a server's garbage reply. */
export function isGarbageReply(err: unknown): err is GarbageReplyError {
  return err instanceof GarbageReplyError;
}

/**
 * The error for a reply the client's scan refused: garbage when its structure is malformed (BAD_REQUEST: wire
 * types, overruns, dims that do not match the data); a plain INTERNAL ExecError when it only breaks a limit
 * (TOO_LARGE), since the limits follow what this client expects and an honest server's answer to an odd request
 * can pass them (the session still fails over, the server is not counted against).
 */
export function refusedReply(message: string, cause: unknown): ExecError {
  return cause instanceof ExecError && cause.code === 'BAD_REQUEST' ? new GarbageReplyError(message, { cause }) : new ExecError('INTERNAL', message, { cause });
}
