/**
 * How the CLI fails: every expected failure is one line on stderr (`gridpipe: error: ...`) and an exit code
 * (2: the user's input was wrong; 1: something failed at run time). Only a truly unexpected error prints a
 * stack, and `GRIDPIPE_DEBUG=1` prints the stack of any error. Kept apart from main.ts so that the mapping
 * loads nothing heavy and can be read (and tested) alone.
 */
import { CommanderError } from 'commander';
import { GridpipeError, isGridpipeError } from '../errors/base.js';

/** The user gave a bad flag combination or value: one line on stderr, exit code 2. */
export class UsageError extends GridpipeError<'USAGE'> {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('USAGE', message, { ...options, badInput: true });
    this.name = 'UsageError';
  }
}

/** Node's errors about a path the user named (a file or folder that is missing, unreadable, or of the wrong kind). */
const PATH_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR']);
/** Node system errors that are run-time failures a person can act on from one line (a full disk, a taken port...). */
const SYSTEM_ERRORS = new Set(['ENOSPC', 'EADDRINUSE', 'EADDRNOTAVAIL', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EMFILE', 'EROFS']);
/** Commander's codes that are not failures. */
const COMMANDER_OK = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);
/** The longest cause text appended to a message. */
const CAUSE_LIMIT = 200;

type SystemError = Error & { code: string; syscall?: string; path?: string };

function isSystemError(err: unknown): err is SystemError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && typeof (err as { syscall?: unknown }).syscall === 'string';
}

/** The first line of `text`, shortened to `limit` characters. */
function brief(text: string, limit = CAUSE_LIMIT): string {
  const line = text.split('\n', 1)[0].trim();
  return line.length > limit ? `${line.slice(0, limit - 1)}…` : line;
}

/** `text` on one line (a message that spans lines keeps all it says). */
function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, ' ');
}

/**
 * The cause worth appending to `err`'s message: one of our own errors or a Node system error other than a
 * missing path (both short and readable alone), when the message does not already say it. Library errors (ethers, libp2p) are left to
 * GRIDPIPE_DEBUG: their messages are long and the wrapping message says what failed.
 */
function causeSuffix(err: GridpipeError): string {
  const cause = err.cause;
  if (!(cause instanceof Error) || !(isGridpipeError(cause) || (isSystemError(cause) && !PATH_ERRORS.has(cause.code)))) return '';
  const text = brief(cause.message);
  return text && !err.message.includes(text) ? ` (${text})` : '';
}

/** The stack of `err` and of each error in its cause chain. */
function stacks(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 8; depth++) {
    parts.push(depth === 0 ? (e instanceof Error ? e.stack ?? String(e) : String(e)) : `caused by: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join('\n');
}

/**
 * Reports a failed command on stderr and returns its exit code: 0 for help and version, 2 for bad input
 * (commander's usage errors, which commander has printed already; a GridpipeError with `badInput`; a path
 * the user named that is missing or unreadable), 1 for any other failure. `debug` adds the stack.
 */
export function reportFailure(err: unknown, write: (text: string) => void = (t) => { process.stderr.write(t); }, debug = !!process.env.GRIDPIPE_DEBUG): number {
  if (err instanceof CommanderError) return COMMANDER_OK.has(err.code) ? 0 : 2;
  const trace = debug ? `${stacks(err)}\n` : '';
  if (isGridpipeError(err)) {
    write(`gridpipe: error: ${oneLine(err.message)}${causeSuffix(err)}\n${trace}`);
    return err.badInput ? 2 : 1;
  }
  if (isSystemError(err) && (PATH_ERRORS.has(err.code) || SYSTEM_ERRORS.has(err.code))) {
    write(`gridpipe: error: ${oneLine(err.message)}\n${trace}`);
    return PATH_ERRORS.has(err.code) ? 2 : 1;
  }
  write(`gridpipe: internal error: ${stacks(err)}\n`);
  return 1;
}
