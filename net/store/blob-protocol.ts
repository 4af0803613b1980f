/**
 * /gridpipe/blob/1.0.0: one BlobRequest{cid, offset, max_chunk} in, BlobResponse frames out: chunks of the
 * blob from `offset` (each at most min(max_chunk, 1 MiB) bytes, the last one flagged), or one Error
 * (NOT_FOUND, BAD_REQUEST, BUSY, INTERNAL). The server only serves blobs the store has verified, waits for
 * the stream's 'drain' event whenever `send` says the muxer is full, and never throws out of its handler.
 * The client appends to a partial file, so a broken transfer resumes from the file's length.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Connection, Libp2p, PeerId, Stream, StreamHandler } from '@libp2p/interface';
import type { Logger } from 'pino';
import { FrameReader, FrameTooLargeError, TruncatedFrameError, writeFrame } from '../wire/frame-reader.js';
import {
  BLOB_PROTOCOL, MAX_CHUNK_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MIN_CHUNK_BYTES,
  MalformedMessageError, decodeBlobRequest, decodeBlobResponse, encodeBlobRequest, encodeChunkFrame, encodeErrorResponse, frame,
  type BlobRequest, type ErrorCodeName,
} from './blob-codec.js';
import { BlobProtocolError, BlobRemoteError, BlobTransferError, InvalidCidError, toError } from './errors.js';
import { parseBlobCid, type FragmentStore } from './fragment-store.js';
import type { StoreMetrics } from './metrics.js';
import { GridpipeError } from '../../errors/base.js';
import type { PeerGuard } from '../peer-guard.js';

export interface BlobServerOptions {
  logger?: Logger;
  /** Most requests served at once by this node; more get BUSY (default 64). */
  maxConcurrent?: number;
  /** Upload cap in bytes per second, shared by all requests (default: none). */
  maxBytesPerSecond?: number;
  /** A stream that sends no complete request in this time is dropped (default 10 s). */
  requestTimeoutMs?: number;
  /** A reader that takes no bytes for this long is dropped (default 30 s). */
  stallTimeoutMs?: number;
  /** Told of every stream and malformed request; a peer that floods or sends garbage is hung up on and refused (net/peer-guard.ts). */
  guard?: PeerGuard;
}

/** Spreads sends over time so that all of a server's streams together stay under a byte rate. */
class Pacer {
  private next = 0;
  constructor(private readonly bytesPerSecond: number) {}
  async take(bytes: number): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.next);
    this.next = start + (bytes * 1000) / this.bytesPerSecond;
    if (start > now) await new Promise((resolve) => setTimeout(resolve, start - now));
  }
}

/** Reads exactly `length` bytes at `position` (a blob that shrank underneath is an error). */
async function readExactly(handle: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw new Error(`blob ended at ${position + got}, expected ${position + length}`);
    got += bytesRead;
  }
  return buf;
}

/** The stream handler of /gridpipe/blob/1.0.0 serving `store`. */
export function createBlobHandler(store: FragmentStore, options: BlobServerOptions = {}): StreamHandler {
  const logger = options.logger ?? store.logger;
  const maxConcurrent = options.maxConcurrent ?? 64;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const stallMs = options.stallTimeoutMs ?? 30_000;
  const pacer = options.maxBytesPerSecond ? new Pacer(options.maxBytesPerSecond) : undefined;
  const metrics = store.metrics;
  let active = 0;

  return async (stream: Stream, connection: Connection): Promise<void> => {
    if (options.guard && !options.guard.admitStream(connection.remotePeer)) {
      stream.abort(new Error('this peer is refused for a while: it flooded this node or sent it garbage'));
      return;
    }
    // Attach the reader before any await, or the request can be missed.
    const reader = new FrameReader(stream, { maxFrameBytes: MAX_REQUEST_BYTES });
    const peer = connection.remotePeer.toString();
    let result = 'error';
    active++;
    const refuse = async (code: ErrorCodeName, message: string, label: string): Promise<void> => {
      result = label;
      logger?.debug({ peer, code, message }, 'blob request refused');
      await writeFrame(stream, frame(encodeErrorResponse(code, message)), { stallTimeoutMs: stallMs });
      await stream.close({ signal: AbortSignal.timeout(stallMs) });
    };
    try {
      if (active > maxConcurrent) {
        reader.detach();
        await stream.closeRead();
        await refuse('BUSY', `serving ${maxConcurrent} blob requests already; try another provider or later`, 'busy');
        return;
      }
      let request: BlobRequest;
      try {
        const bytes = await reader.read(AbortSignal.timeout(requestTimeoutMs));
        // One request per stream: anything the peer sends after it is dropped unread.
        reader.detach();
        await stream.closeRead();
        if (bytes === null) {
          result = 'aborted';
          await stream.close({ signal: AbortSignal.timeout(stallMs) });
          return;
        }
        request = decodeBlobRequest(bytes);
      } catch (err) {
        reader.detach();
        if (err instanceof FrameTooLargeError) {
          options.guard?.garbage(peer, 'an oversized blob request');
          await stream.closeRead();
          await refuse('BAD_REQUEST', `request too large: ${err.message} (a BlobRequest is at most ${MAX_REQUEST_BYTES} bytes)`, 'bad_request');
        } else if (err instanceof MalformedMessageError || err instanceof TruncatedFrameError) {
          options.guard?.garbage(peer, 'a malformed blob request');
          await stream.closeRead();
          await refuse('BAD_REQUEST', `malformed BlobRequest: ${err.message}`, 'bad_request');
        } else {
          // The peer went away or never sent a request: nobody to answer.
          result = 'aborted';
          stream.abort(toError(err));
        }
        return;
      }
      await serve(request);
    } catch (err) {
      const e = toError(err);
      if (result === 'error') result = stream.status === 'open' ? 'error' : 'aborted';
      logger?.debug({ peer, err: e.message }, 'blob stream ended early');
      stream.abort(e);
    } finally {
      active--;
      metrics.requests.inc({ result });
    }

    async function serve(request: BlobRequest): Promise<void> {
      let cid: string;
      try {
        cid = parseBlobCid(request.cid);
      } catch (err) {
        if (err instanceof InvalidCidError) return refuse('BAD_REQUEST', err.message, 'bad_request');
        throw err;
      }
      if (request.maxChunk !== 0 && request.maxChunk < MIN_CHUNK_BYTES) {
        return refuse('BAD_REQUEST', `max_chunk ${request.maxChunk} is below the minimum of ${MIN_CHUNK_BYTES} bytes (0 means the default)`, 'bad_request');
      }
      const maxChunk = request.maxChunk === 0 ? MAX_CHUNK_BYTES : Math.min(request.maxChunk, MAX_CHUNK_BYTES);
      const blob = await store.openVerified(cid);
      if (!blob) return refuse('NOT_FOUND', `no blob ${cid} here`, 'not_found');
      try {
        if (request.offset > blob.size) {
          return await refuse('BAD_REQUEST', `offset ${request.offset} is past the end of ${cid} (${blob.size} bytes)`, 'bad_request');
        }
        let offset = request.offset;
        do {
          const n = Math.min(maxChunk, blob.size - offset);
          const data = await readExactly(blob.handle, n, offset);
          if (pacer) await pacer.take(n);
          const last = offset + n === blob.size;
          await writeFrame(stream, encodeChunkFrame({ cid, offset, data, totalSize: blob.size, last }), { stallTimeoutMs: stallMs });
          metrics.bytesServed.inc(n);
          offset += n;
        } while (offset < blob.size);
        await stream.close({ signal: AbortSignal.timeout(stallMs) });
        result = 'ok';
        logger?.debug({ peer, cid, from: request.offset, bytes: blob.size - request.offset }, 'blob served');
      } finally {
        await blob.handle.close();
      }
    }
  };
}

/** Registers the blob handler on `node`; returns a function that unregisters it. */
export async function handleBlobProtocol(node: Pick<Libp2p, 'handle' | 'unhandle'>, store: FragmentStore, options: BlobServerOptions = {}): Promise<() => Promise<void>> {
  // runOnLimitedConnection: a host behind NAT serves fragments through its relay too (docs/nat.md)
  await node.handle(BLOB_PROTOCOL, createBlobHandler(store, options), { maxInboundStreams: 64, runOnLimitedConnection: true });
  return async () => node.unhandle(BLOB_PROTOCOL);
}

export interface FetchBlobOptions {
  /** Bytes in the partial file so far (resumed prefix included) and the blob's size, after every chunk. */
  onProgress?: (bytes: number, total: number) => void;
  signal?: AbortSignal;
  /** Largest chunk to ask for (default 1 MiB). */
  maxChunk?: number;
  /** The size the blob must have (from a manifest); a provider announcing another size fails the attempt. */
  expectedSize?: number;
  /** Refuse blobs larger than this. */
  maxBytes?: number;
  /** Fail when no frame arrives for this long (default 30 s). */
  stallTimeoutMs?: number;
  /** Counts received bytes into `bytesFetched`. */
  metrics?: StoreMetrics;
}

export interface FetchBlobResult {
  /** The blob's size as the provider announced it (= the partial file's length now). */
  total: number;
  /** The offset this transfer resumed from. */
  from: number;
}

/** The provider announced a size that cannot be the blob's (other than the manifest's, or over the limit). */
export class BlobSizeError extends GridpipeError<'SIZE_REFUSED'> {
  override name = 'BlobSizeError';
  constructor(message: string, readonly peer: string) {
    super('SIZE_REFUSED', `${peer}: ${message}`);
  }
}

/**
 * Downloads blob `cid` from `peerId` into `partialPath`, appending from the file's current length (a
 * resume), until the provider's last chunk. Verifies the frames (offsets, sizes) but not the hash: the
 * caller checks the finished file against the CID (`FragmentStore.commitPartial`). On failure the bytes
 * received so far stay in the file. Throws BlobRemoteError (the provider answered an Error),
 * BlobProtocolError (it broke the protocol), BlobSizeError, BlobTransferError (the stream broke), or the
 * signal's reason when aborted.
 */
export async function fetchBlob(node: Pick<Libp2p, 'dialProtocol'>, peerId: PeerId, cid: string, partialPath: string, options: FetchBlobOptions = {}): Promise<FetchBlobResult> {
  const key = parseBlobCid(cid);
  const peer = peerId.toString();
  const maxChunk = Math.max(MIN_CHUNK_BYTES, Math.min(options.maxChunk ?? MAX_CHUNK_BYTES, MAX_CHUNK_BYTES));
  const stallMs = options.stallTimeoutMs ?? 30_000;
  options.signal?.throwIfAborted();

  const file = await open(partialPath, 'a');
  let stream: Stream | undefined;
  const stall = new AbortController();
  let stallTimer: NodeJS.Timeout | undefined;
  const armStall = (): void => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => stall.abort(new Error(`no data for ${stallMs} ms`)), stallMs);
  };
  const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
  try {
    let from = (await file.stat()).size;
    if (options.expectedSize !== undefined && from > options.expectedSize) {
      // Longer than the blob can be: not a prefix of it.
      await file.truncate(0);
      from = 0;
    }
    armStall();
    try {
      stream = await node.dialProtocol(peerId, BLOB_PROTOCOL, { signal, runOnLimitedConnection: true });
    } catch (err) {
      throw new BlobTransferError(`could not open a blob stream: ${toError(err).message}`, peer, { cause: err });
    }
    const reader = new FrameReader(stream, { maxFrameBytes: MAX_RESPONSE_BYTES });
    let offset = from;
    let total: number | undefined;
    try {
      await writeFrame(stream, frame(encodeBlobRequest({ cid: key, offset: from, maxChunk })), { stallTimeoutMs: stallMs });
      await stream.close({ signal });
      while (true) {
        armStall();
        let msg;
        try {
          const bytes = await reader.read(signal);
          if (bytes === null) throw new BlobTransferError(`the stream ended at ${offset} bytes, before the last chunk`, peer);
          msg = decodeBlobResponse(bytes);
        } catch (err) {
          if (err instanceof FrameTooLargeError || err instanceof MalformedMessageError) throw new BlobProtocolError(err.message, peer);
          throw err;
        }
        if (msg.error) throw new BlobRemoteError(msg.error.code, msg.error.message, peer);
        const c = msg.chunk;
        if (c.cid !== key) throw new BlobProtocolError(`sent a chunk of ${c.cid} for ${key}`, peer);
        if (c.offset !== offset) throw new BlobProtocolError(`sent a chunk at offset ${c.offset}, expected ${offset}`, peer);
        if (total === undefined) {
          total = c.totalSize;
          if (options.expectedSize !== undefined && total !== options.expectedSize) throw new BlobSizeError(`announces ${total} bytes for ${key}, the manifest says ${options.expectedSize}`, peer);
          if (options.maxBytes !== undefined && total > options.maxBytes) throw new BlobSizeError(`announces ${total} bytes for ${key}, over the limit of ${options.maxBytes}`, peer);
        } else if (c.totalSize !== total) {
          throw new BlobProtocolError(`changed the size of ${key} from ${total} to ${c.totalSize}`, peer);
        }
        const n = c.data.byteLength;
        if (n > maxChunk) throw new BlobProtocolError(`sent a chunk of ${n} bytes, over the ${maxChunk} asked for`, peer);
        if (offset + n > total) throw new BlobProtocolError(`sent bytes past the end (${offset + n} > ${total})`, peer);
        if (c.last && offset + n !== total) throw new BlobProtocolError(`flagged the chunk ending at ${offset + n} as last, the size is ${total}`, peer);
        if (n > 0) {
          let written = 0;
          while (written < n) written += (await file.write(c.data, written, n - written)).bytesWritten;
          options.metrics?.bytesFetched.inc(n);
        }
        offset += n;
        options.onProgress?.(offset, total);
        if (c.last) break;
      }
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason ?? toError(err);
      if (err instanceof BlobRemoteError || err instanceof BlobProtocolError || err instanceof BlobSizeError || err instanceof BlobTransferError) throw err;
      const e = toError(err);
      throw new BlobTransferError(stall.signal.aborted ? String(toError(stall.signal.reason).message) : e.message, peer, { cause: e });
    }
    await stream.close().catch(() => undefined);
    return { total: total ?? offset, from };
  } catch (err) {
    stream?.abort(toError(err));
    throw err;
  } finally {
    clearTimeout(stallTimer);
    await file.close();
  }
}
