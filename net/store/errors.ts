/** Typed errors of the fragment store, the blob protocol and the fetcher (each with a stable `code`). */

/** A string is not a blob CID (CIDv1, raw codec, SHA-256). */
export class InvalidCidError extends Error {
  override name = 'InvalidCidError';
  readonly code = 'INVALID_CID';
}

/** Bytes do not hash to the CID they were stored or fetched under. */
export class CidMismatchError extends Error {
  override name = 'CidMismatchError';
  readonly code = 'CID_MISMATCH';
  constructor(readonly expected: string, readonly actual: string, what: string) {
    super(`${what} hashes to ${actual}, not ${expected}`);
  }
}

/** The remote peer answered a blob request with an Error message (NOT_FOUND, BAD_REQUEST, BUSY...). */
export class BlobRemoteError extends Error {
  override name = 'BlobRemoteError';
  readonly code = 'REMOTE_ERROR';
  constructor(readonly remoteCode: string, readonly remoteMessage: string, readonly peer: string) {
    super(`${peer} answered ${remoteCode}: ${remoteMessage}`);
  }
}

/**
 * The remote peer broke the blob protocol (a frame that does not decode, a chunk at the wrong offset, a
 * size that changes, more bytes than announced). The fetcher treats the peer as bad.
 */
export class BlobProtocolError extends Error {
  override name = 'BlobProtocolError';
  readonly code = 'PROTOCOL_VIOLATION';
  constructor(message: string, readonly peer: string) {
    super(`${peer} broke the blob protocol: ${message}`);
  }
}

/** The stream ended (or broke) before the last chunk arrived. */
export class BlobTransferError extends Error {
  override name = 'BlobTransferError';
  readonly code = 'TRANSFER_FAILED';
  constructor(message: string, readonly peer: string, options?: { cause?: unknown }) {
    super(`transfer from ${peer} failed: ${message}`, options);
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
export class FetchError extends Error {
  override name = 'FetchError';
  constructor(readonly code: 'NO_PROVIDERS' | 'ALL_PROVIDERS_FAILED' | 'TOO_LARGE', message: string, readonly cid: string, readonly attempts: FetchAttempt[] = []) {
    super(message);
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
