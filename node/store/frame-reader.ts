/**
 * Reads varint-length-prefixed frames from a libp2p v3 stream, with hard limits and receiver
 * back-pressure. Used instead of `lpStream` because:
 * - lpStream reads the length prefix one byte at a time and only checks `maxLengthLength` after a
 *   varint decodes, so an endless varint (0xff 0xff ...) makes it wait forever instead of failing;
 * - its buffer grows with whatever arrives (yamux grants window on receipt, not on consumption) and the
 *   stream is aborted at `maxBufferSize`, whereas this reader pauses the stream (yamux then stops
 *   granting window) above a high-water mark and resumes it once the reader has caught up.
 */
import type { Stream } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { toError } from './errors.js';

/** A frame (or its length prefix) over the reader's limit. */
export class FrameTooLargeError extends Error {
  override name = 'FrameTooLargeError';
  readonly code = 'FRAME_TOO_LARGE';
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends Error {
  override name = 'TruncatedFrameError';
  readonly code = 'TRUNCATED_FRAME';
}

export interface FrameReaderOptions {
  /** Largest frame payload accepted. */
  maxFrameBytes: number;
  /** Buffered bytes above which the stream is paused (default: 8 × maxFrameBytes, at least 1 MiB). */
  highWaterMark?: number;
}

function varintBytes(value: number): number {
  let n = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 0x80)) n++;
  return n;
}

export class FrameReader {
  private readonly buffer = new Uint8ArrayList();
  private readonly maxFrameBytes: number;
  private readonly maxPrefixBytes: number;
  private readonly highWaterMark: number;
  private wake?: () => void;
  private remoteEnded = false;
  private failure?: Error;
  private paused = false;
  private attached = true;

  constructor(private readonly stream: Stream, options: FrameReaderOptions) {
    this.maxFrameBytes = options.maxFrameBytes;
    this.maxPrefixBytes = varintBytes(options.maxFrameBytes);
    this.highWaterMark = options.highWaterMark ?? Math.max(1 << 20, 8 * options.maxFrameBytes);
    stream.addEventListener('message', this.onMessage);
    stream.addEventListener('remoteCloseWrite', this.onRemoteCloseWrite);
    stream.addEventListener('close', this.onClose);
    if (stream.remoteWriteStatus !== 'writable') this.onRemoteCloseWrite();
  }

  private readonly onMessage = (evt: { data: Uint8Array | Uint8ArrayList }): void => {
    this.buffer.append(evt.data);
    if (this.buffer.byteLength > this.highWaterMark && !this.paused && this.stream.readStatus === 'readable') {
      this.paused = true;
      this.stream.pause();
    }
    this.wake?.();
  };

  private readonly onRemoteCloseWrite = (): void => {
    // yamux flags FIN before it hands over the data of the same frame: look once that has been dispatched.
    setTimeout(() => {
      this.remoteEnded = true;
      this.wake?.();
    }, 0);
  };

  private readonly onClose = (evt: Event): void => {
    const error = (evt as Event & { error?: Error }).error;
    if (error) this.failure = toError(error);
    this.remoteEnded = true;
    this.wake?.();
  };

  /** Buffered bytes not yet returned. */
  get bufferedBytes(): number {
    return this.buffer.byteLength;
  }

  /** Parses the next frame out of the buffer, or returns undefined when it is not all there yet. */
  private take(): Uint8ArrayList | undefined {
    let length = 0;
    let i = 0;
    for (;; i++) {
      if (i >= this.buffer.byteLength) return undefined;
      if (i >= this.maxPrefixBytes) throw new FrameTooLargeError(`length prefix longer than ${this.maxPrefixBytes} bytes: frames here are at most ${this.maxFrameBytes} bytes`);
      const b = this.buffer.get(i);
      length += (b & 0x7f) * 2 ** (7 * i);
      if (b < 0x80) break;
    }
    if (length > this.maxFrameBytes) throw new FrameTooLargeError(`frame of ${length} bytes, over the limit of ${this.maxFrameBytes}`);
    const start = i + 1;
    if (this.buffer.byteLength < start + length) return undefined;
    const frame = this.buffer.sublist(start, start + length);
    this.buffer.consume(start + length);
    return frame;
  }

  /**
   * The next frame's payload; null when the stream ended cleanly between frames. Throws
   * FrameTooLargeError, TruncatedFrameError, the stream's error (reset, abort), or the signal's reason.
   */
  async read(signal?: AbortSignal): Promise<Uint8ArrayList | null> {
    for (;;) {
      signal?.throwIfAborted();
      const frame = this.take();
      if (frame) {
        if (this.paused && this.buffer.byteLength < this.highWaterMark / 2) this.resume();
        return frame;
      }
      if (this.failure) throw this.failure;
      if (this.paused) this.resume();
      if (this.remoteEnded && this.stream.readBufferLength === 0) {
        if (this.buffer.byteLength === 0) return null;
        throw new TruncatedFrameError(`stream ended inside a frame (${this.buffer.byteLength} bytes of it arrived)`);
      }
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { this.wake = undefined; reject(signal?.reason ?? new Error('aborted')); };
        this.wake = () => {
          this.wake = undefined;
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  private resume(): void {
    this.paused = false;
    if (this.stream.readStatus === 'paused') this.stream.resume();
  }

  /** Stops listening to the stream (bytes that arrive later are not buffered here). */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.stream.removeEventListener('message', this.onMessage);
    this.stream.removeEventListener('remoteCloseWrite', this.onRemoteCloseWrite);
    this.stream.removeEventListener('close', this.onClose);
    if (this.paused) this.resume();
  }
}
