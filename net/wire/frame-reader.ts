/**
 * Varint-length-prefixed frames on libp2p v3 streams: the one reader of every gridpipe protocol (blob,
 * exec), the frame writer, and the length prefix. Varints themselves come from fragments/onnx/wire.ts.
 *
 * Why not `lpStream` from @libp2p/utils (7.4.1):
 * - it reads the length prefix one byte per awaited read and only checks `maxLengthLength` after a varint
 *   decodes, so an endless varint (0xff 0xff ...) makes it wait forever instead of failing;
 * - it cannot skip an oversized frame: its byte buffer aborts the whole stream once `maxBufferSize` is
 *   passed, so no error reply reaches the peer and the session dies;
 * - its buffer grows with whatever arrives (yamux grants window on receipt, not on consumption) with no
 *   bound other than that abort.
 *
 * FrameReader parses frames as the stream's 'message' events arrive. Its options choose:
 * - what an oversized frame does: fail the reader (`FrameTooLargeError`), or be discarded as it arrives
 *   (nothing of it is buffered) and reported as `{ kind: 'oversized' }`, so a server can answer TOO_LARGE
 *   and keep the session;
 * - receiver back-pressure: above `highWaterMark` buffered bytes the stream is paused (yamux then stops
 *   granting window) and resumed once the reader has caught up;
 * - a hard cap on unread bytes (`maxBufferBytes`), beyond which the reader fails (and, with
 *   `abortOnViolation`, aborts the stream);
 * - a budget of unread bytes shared with other readers, e.g. of one peer (`budget`, see budget.ts):
 *   the reader whose bytes pass it fails as above and gives its bytes back.
 * Attach it before the first `await` of a handler: bytes arriving with no listener are lost to it.
 */
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { varintLength, writeVarint } from '../../fragments/onnx/wire.js';
import type { ByteBudget } from './budget.js';
import { GridpipeError } from '../../errors/base.js';

export type FrameErrorCode = 'FRAME_TOO_LARGE' | 'BAD_LENGTH_PREFIX' | 'BUFFER_FULL' | 'TRUNCATED_FRAME' | 'SEND_FAILED';

/** A framing failure, `code` says which; protocols turn it into their own errors with `mapError`. */
export class FrameError extends GridpipeError<FrameErrorCode> {
  override name = 'FrameError';
  constructor(code: FrameErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** A frame (or its length prefix) over the reader's limit. */
export class FrameTooLargeError extends FrameError {
  override name = 'FrameTooLargeError';
  constructor(message: string) {
    super('FRAME_TOO_LARGE', message);
  }
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends FrameError {
  override name = 'TruncatedFrameError';
  constructor(message: string) {
    super('TRUNCATED_FRAME', message);
  }
}

export type FrameEvent =
  | { kind: 'frame'; bytes: Uint8Array }
  /** A frame over the size limit: its bytes are being discarded; the stream stays usable. */
  | { kind: 'oversized'; length: number }
  /** A frame `inspect` refused from its first bytes: the rest is being discarded; the stream stays usable. */
  | { kind: 'rejected'; length: number; error: Error };

export interface FrameReaderOptions {
  /** Largest frame payload accepted. */
  maxFrameBytes: number;
  /**
   * An oversized frame: 'fail' (default) fails the reader with FrameTooLargeError (as does a length prefix
   * longer than the limit's); 'skip' discards its bytes as they arrive and reports it as `oversized`.
   */
  oversized?: 'fail' | 'skip';
  /** Buffered bytes above which the stream is paused (default: 8 × maxFrameBytes, at least 1 MiB; Infinity: never). */
  highWaterMark?: number;
  /** Most bytes held unread (frames not yet taken plus a partial frame); beyond it the reader fails (default: no cap). */
  maxBufferBytes?: number;
  /**
   * Abort the stream, once the current event dispatch is over (as lpStream does), when the peer breaks the
   * framing or passes `maxBufferBytes` (default: only report it).
   */
  abortOnViolation?: boolean;
  /** Turns the reader's FrameErrors into the protocol's own (what `next`/`read` throw and the abort reason). */
  mapError?: (err: FrameError) => Error;
  /** Unread bytes shared with other readers (of a peer, a connection); passing its limit fails this reader (BUFFER_FULL). */
  budget?: ByteBudget;
  /**
   * A look at a big frame's first bytes while the rest is still arriving: once `afterBytes` of a longer
   * frame are buffered, `check(prefix)` runs once; an Error it returns rejects the frame (reported as
   * `rejected`, its bytes discarded as they arrive), so a frame that already breaks a limit is not buffered.
   */
  inspect?: { afterBytes: number; check: (prefix: Uint8Array) => Error | undefined };
}

/** Longest length prefix accepted when oversized frames are skipped: 2^56 covers any sane frame. */
const MAX_SKIPPED_PREFIX_BYTES = 8;

export class FrameReader {
  private readonly buffer = new Uint8ArrayList();
  private readonly ready: FrameEvent[] = [];
  private readyBytes = 0;
  /** Bytes of an oversized frame still to discard. */
  private skipping = 0;
  private readonly maxFrameBytes: number;
  private readonly maxPrefixBytes: number;
  private readonly skipOversized: boolean;
  private readonly highWaterMark: number;
  private readonly maxBufferBytes: number;
  private readonly abortOnViolation: boolean;
  private readonly mapError: (err: FrameError) => Error;
  private waiter?: () => void;
  private remoteEnded = false;
  private failure?: Error;
  private paused = false;
  private attached = true;
  private readonly budget?: ByteBudget;
  /** Bytes this reader has counted in `budget`. */
  private counted = 0;
  /** Whether the frame being buffered has been inspected. */
  private inspected = false;
  private readonly inspect?: FrameReaderOptions['inspect'];

  constructor(private readonly stream: Stream, options: FrameReaderOptions) {
    this.maxFrameBytes = options.maxFrameBytes;
    this.skipOversized = options.oversized === 'skip';
    // Failing on oversized frames, a prefix longer than the limit's can only announce one.
    this.maxPrefixBytes = this.skipOversized ? MAX_SKIPPED_PREFIX_BYTES : varintLength(options.maxFrameBytes);
    this.highWaterMark = options.highWaterMark ?? Math.max(1 << 20, 8 * options.maxFrameBytes);
    this.maxBufferBytes = options.maxBufferBytes ?? Infinity;
    this.abortOnViolation = options.abortOnViolation ?? false;
    this.mapError = options.mapError ?? ((err) => err);
    this.budget = options.budget;
    this.inspect = options.inspect;
    this.budget?.acquire();
    stream.addEventListener('message', this.onMessage);
    stream.addEventListener('remoteCloseWrite', this.onRemoteCloseWrite);
    stream.addEventListener('close', this.onClose);
    if (stream.remoteWriteStatus !== 'writable') this.onRemoteCloseWrite();
  }

  /** Bytes received and not yet taken (an oversized frame being skipped is not held). */
  get bufferedBytes(): number {
    return this.buffer.byteLength + this.readyBytes;
  }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    if (this.failure) return;
    let data = evt.data;
    if (this.skipping > 0) {
      const drop = Math.min(this.skipping, data.byteLength);
      this.skipping -= drop;
      if (drop === data.byteLength) return;
      data = data.subarray(drop);
    }
    this.buffer.append(data);
    this.parse();
    const withinBudget = this.account();
    if (this.failure) {
      // the framing broke in parse(): nothing more is taken
    } else if (this.bufferedBytes > this.maxBufferBytes) {
      this.violation(new FrameError('BUFFER_FULL', `more than ${this.maxBufferBytes} bytes arrived ahead of the reader`));
    } else if (!withinBudget) {
      this.violation(new FrameError('BUFFER_FULL', `unread bytes over this peer's cap of ${this.budget!.limit} or over the node's total`));
    } else if (this.bufferedBytes > this.highWaterMark && !this.paused && this.stream.readStatus === 'readable') {
      this.paused = true;
      this.stream.pause();
    }
    this.wake();
  };

  /** Moves every complete frame from the buffer to `ready`, skipping or failing on oversized ones. */
  private parse(): void {
    while (this.buffer.byteLength > 0 && !this.failure) {
      if (this.skipping > 0) {
        const drop = Math.min(this.skipping, this.buffer.byteLength);
        this.buffer.consume(drop);
        this.skipping -= drop;
        continue;
      }
      let length = 0;
      let i = 0;
      for (;; i++) {
        if (i >= this.maxPrefixBytes) {
          this.violation(this.skipOversized
            ? new FrameError('BAD_LENGTH_PREFIX', `invalid frame length prefix (longer than ${this.maxPrefixBytes} bytes)`)
            : new FrameTooLargeError(`length prefix longer than ${this.maxPrefixBytes} bytes: frames here are at most ${this.maxFrameBytes} bytes`));
          return;
        }
        if (i >= this.buffer.byteLength) return;
        const b = this.buffer.get(i);
        length += (b & 0x7f) * 2 ** (7 * i);
        if (b < 0x80) break;
      }
      const header = i + 1;
      if (length > this.maxFrameBytes) {
        if (!this.skipOversized) {
          this.violation(new FrameTooLargeError(`frame of ${length} bytes, over the limit of ${this.maxFrameBytes}`));
          return;
        }
        this.buffer.consume(header);
        this.skipping = length;
        this.ready.push({ kind: 'oversized', length });
        continue;
      }
      if (this.buffer.byteLength < header + length) {
        if (this.inspect && !this.inspected && this.buffer.byteLength - header >= this.inspect.afterBytes) {
          this.inspected = true;
          const error = this.inspect.check(this.buffer.subarray(header));
          if (error) {
            const have = this.buffer.byteLength;
            this.buffer.consume(have);
            this.skipping = header + length - have;
            this.inspected = false;
            this.ready.push({ kind: 'rejected', length, error });
          }
        }
        return;
      }
      this.inspected = false;
      const bytes = this.buffer.subarray(header, header + length);
      this.buffer.consume(header + length);
      this.ready.push({ kind: 'frame', bytes });
      this.readyBytes += length;
    }
  }

  /** Brings the shared budget up to date with this reader's unread bytes; false when it is over its limit. */
  private account(): boolean {
    if (!this.budget) return true;
    const now = this.failure || !this.attached ? 0 : this.bufferedBytes;
    const delta = now - this.counted;
    this.counted = now;
    return this.budget.change(delta) || delta <= 0;
  }

  /** The peer broke the framing or the limits: the reader fails (frames before it are still returned). */
  private violation(err: FrameError): void {
    const failure = this.mapError(err);
    this.failure = failure;
    // a failed reader holds nothing for the connection: drop what it buffered and give the bytes back
    this.buffer.consume(this.buffer.byteLength);
    this.account();
    if (this.abortOnViolation) queueMicrotask(() => this.stream.abort(failure));
  }

  private readonly onRemoteCloseWrite = (): void => {
    // yamux flags FIN before it hands over the data of the same frame: look once that has been dispatched.
    setTimeout(() => {
      this.remoteEnded = true;
      this.wake();
    }, 0);
  };

  private readonly onClose = (evt: StreamCloseEvent): void => {
    if (evt.error) this.failure ??= evt.error;
    this.remoteEnded = true;
    this.wake();
  };

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  /**
   * The next frame, or an oversized one being skipped; null when the stream ended cleanly between frames.
   * Throws (through `mapError`) FrameTooLargeError, TruncatedFrameError, a framing violation, the stream's
   * error (reset, abort), or the signal's reason.
   */
  async next(signal?: AbortSignal): Promise<FrameEvent | null> {
    for (;;) {
      signal?.throwIfAborted();
      const event = this.ready.shift();
      if (event) {
        if (event.kind === 'frame') this.readyBytes -= event.bytes.byteLength;
        this.account();
        if (this.paused && this.bufferedBytes < this.highWaterMark / 2) this.resume();
        return event;
      }
      if (this.failure) throw this.failure;
      if (this.paused) this.resume();
      if (!this.attached || (this.remoteEnded && this.stream.readBufferLength === 0)) {
        if (this.buffer.byteLength === 0 && this.skipping === 0) return null;
        throw this.mapError(new TruncatedFrameError(`stream ended inside a frame${this.buffer.byteLength ? ` (${this.buffer.byteLength} bytes of it arrived)` : ''}`));
      }
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { this.waiter = undefined; reject(signal?.reason ?? new Error('aborted')); };
        this.waiter = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  /** The next frame's payload; null at a clean end. Throws as `next` does, and FrameTooLargeError for an oversized frame. */
  async read(signal?: AbortSignal): Promise<Uint8Array | null> {
    const event = await this.next(signal);
    if (event?.kind === 'oversized') throw this.mapError(new FrameTooLargeError(`frame of ${event.length} bytes, over the limit of ${this.maxFrameBytes}`));
    if (event?.kind === 'rejected') throw event.error;
    return event ? event.bytes : null;
  }

  private resume(): void {
    this.paused = false;
    if (this.stream.readStatus === 'paused') this.stream.resume();
  }

  /** Stops listening to the stream (bytes that arrive later are not buffered here); a pending `next` ends. */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.stream.removeEventListener('message', this.onMessage);
    this.stream.removeEventListener('remoteCloseWrite', this.onRemoteCloseWrite);
    this.stream.removeEventListener('close', this.onClose);
    if (this.paused) this.resume();
    this.account();
    this.budget?.release();
    this.wake();
  }
}

/** One buffer: the varint length prefix, then `body`. */
export function lengthPrefixed(body: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(varintLength(body.byteLength) + body.byteLength);
  out.set(body, writeVarint(out, 0, body.byteLength));
  return out;
}

export interface WriteFrameOptions {
  /** Fail when the stream takes no bytes (no 'drain') for this long (default: wait while it is open). */
  stallTimeoutMs?: number;
  /** Turns the FrameError (SEND_FAILED) of a failed send into the protocol's own. */
  mapError?: (err: FrameError) => Error;
}

/**
 * Sends one frame (one buffer, a list, or chunks) with back-pressure: when the stream's buffer is full,
 * waits for its next 'drain' event (not `onDrain()`, which stops applying back-pressure after the first
 * drain in @libp2p/utils 7.4.1); rejects when the stream closes first or stalls past `stallTimeoutMs`.
 */
export async function writeFrame(stream: Stream, data: Uint8Array | Uint8ArrayList | Uint8Array[], options: WriteFrameOptions = {}): Promise<void> {
  const payload = Array.isArray(data) ? (data.length === 1 ? data[0] : new Uint8ArrayList(...data)) : data;
  if (stream.send(payload)) return;
  await new Promise<void>((resolve, reject) => {
    const fail = (message: string, cause?: Error): void => {
      const err = new FrameError('SEND_FAILED', message, { cause });
      reject(options.mapError ? options.mapError(err) : err);
    };
    if (stream.status !== 'open' || stream.writeStatus !== 'writable') {
      fail(`stream is ${stream.status}, write ${stream.writeStatus}`);
      return;
    }
    const cleanup = (): void => {
      clearTimeout(timer);
      stream.removeEventListener('drain', onDrain);
      stream.removeEventListener('close', onClose);
    };
    const onDrain = (): void => { cleanup(); resolve(); };
    const onClose = (evt: StreamCloseEvent): void => {
      cleanup();
      fail(`stream closed while sending${evt.error ? `: ${evt.error.message}` : ''}`, evt.error);
    };
    const ms = options.stallTimeoutMs;
    const timer = ms === undefined ? undefined : setTimeout(() => { cleanup(); fail(`reader took no bytes for ${ms} ms`); }, ms);
    stream.addEventListener('drain', onDrain);
    stream.addEventListener('close', onClose);
  });
}
