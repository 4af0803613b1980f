/** Typed errors of the fragment store, the blob protocol and the fetcher (each with a stable `code`). */
import { GridpipeError } from '../../errors/base.js';

/** A string is not a blob CID (CIDv1, raw codec, SHA-256). */
export class InvalidCidError extends GridpipeError<'INVALID_CID'> {
  override name = 'InvalidCidError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('INVALID_CID', message, { ...options, badInput: true });
  }
}

/** Bytes do not hash to the CID they were stored or fetched under. */
export class CidMismatchError extends GridpipeError<'CID_MISMATCH'> {
  override name = 'CidMismatchError';
  constructor(readonly expected: string, readonly actual: string, what: string) {
    super('CID_MISMATCH', `${what} hashes to ${actual}, not ${expected}`);
  }
}

/** The remote peer answered a blob request with an Error message (NOT_FOUND, BAD_REQUEST, BUSY...). */
export class BlobRemoteError extends GridpipeError<'REMOTE_ERROR'> {
  override name = 'BlobRemoteError';
  constructor(readonly remoteCode: string, readonly remoteMessage: string, readonly peer: string) {
    super('REMOTE_ERROR', `${peer} answered ${remoteCode}: ${remoteMessage}`);
  }
}

/**
 * The remote peer broke the blob protocol (a frame that does not decode, a chunk at the wrong offset, a
 * size that changes, more bytes than announced). The fetcher treats the peer as bad.
 */
export class BlobProtocolError extends GridpipeError<'PROTOCOL_VIOLATION'> {
  override name = 'BlobProtocolError';
  constructor(message: string, readonly peer: string) {
    super('PROTOCOL_VIOLATION', `${peer} broke the blob protocol: ${message}`);
  }
}

/** The stream ended (or broke) before the last chunk arrived. */
export class BlobTransferError extends GridpipeError<'TRANSFER_FAILED'> {
  override name = 'BlobTransferError';
  constructor(message: string, readonly peer: string, options: { cause?: unknown } = {}) {
    super('TRANSFER_FAILED', `transfer from ${peer} failed: ${message}`, options);
  }
}

/** One provider tried by a fetch, and how it went. */
export interface FetchAttempt {
  peer: string;
  /** Offset the request asked for (bytes already in the partial file). */
  from: number;
  /** Bytes in the partial file when the attempt ended. */
  to: number;
  outcome: 'complete' | 'bad-bytes' | 'mixed-mismatch' | 'failed';
  error?: string;
}

/** A fetch by CID failed: no provider found, or every provider failed. Lists what was tried. */
export class FetchError extends GridpipeError<'NO_PROVIDERS' | 'ALL_PROVIDERS_FAILED' | 'TOO_LARGE'> {
  override name = 'FetchError';
  constructor(code: 'NO_PROVIDERS' | 'ALL_PROVIDERS_FAILED' | 'TOO_LARGE', message: string, readonly cid: string, readonly attempts: FetchAttempt[] = []) {
    super(code, message);
  }
}

/** Events (`StreamCloseEvent`...) and other non-Errors that libp2p rejects with, as Errors. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === 'object' && value !== null) {
    const inner = (value as { error?: unknown }).error;
    if (inner instanceof Error) return inner;
    const type = (value as { type?: unknown }).type;
    if (typeof type === 'string') return new Error(`stream ${type}`);
  }
  return new Error(String(value));
}
