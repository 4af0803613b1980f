/**
 * Wire messages of /gridpipe/blob/1.0.0 (proto/blob.proto) and their limits. Chunk frames are built by
 * hand around the payload so a chunk's bytes are never copied into an encoder buffer.
 */
import { Uint8ArrayList } from 'uint8arraylist';
import { encodeVarint, lengthDelimitedPrefix } from '../../fragments/onnx/wire.js';
import { PROTOCOLS, wire, type gridpipe } from '../../proto/wire.js';
import { lengthPrefixed } from '../wire/frame-reader.js';
import { GridpipeError } from '../../errors/base.js';

export const BLOB_PROTOCOL = PROTOCOLS.blob;
/** Largest chunk payload a server sends (and the default when a request's max_chunk is 0). */
export const MAX_CHUNK_BYTES = 1 << 20;
/** Smallest max_chunk a request may ask for (smaller would mean a frame header per few bytes). */
export const MIN_CHUNK_BYTES = 1024;
/** Largest BlobRequest frame: a CID and two numbers fit in far less. */
export const MAX_REQUEST_BYTES = 4096;
/** Largest BlobResponse frame: one full chunk plus its header. */
export const MAX_RESPONSE_BYTES = MAX_CHUNK_BYTES + 4096;

const RequestType = wire.BlobRequest;
const ChunkType = wire.BlobChunk;
const ResponseType = wire.BlobResponse;

export type ErrorCodeName = 'BAD_REQUEST' | 'TOO_LARGE' | 'NOT_FOUND' | 'BUSY' | 'INTERNAL';

export interface BlobRequest { cid: string; offset: number; maxChunk: number }
export interface BlobChunk { cid: string; offset: number; data: Uint8Array; totalSize: number; last: boolean }
export type BlobResponse = { chunk: BlobChunk; error?: undefined } | { error: { code: string; message: string }; chunk?: undefined };

/** Thrown by the decoders on bytes that are not the expected message. */
export class MalformedMessageError extends GridpipeError<'MALFORMED_MESSAGE'> {
  override name = 'MalformedMessageError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MALFORMED_MESSAGE', message, options);
  }
}

/** A decoded uint64 as a size: a safe non-negative integer, or MalformedMessageError. */
function safeUint(value: number | { toNumber(): number } | null | undefined, field: string): number {
  const n = typeof value === 'number' ? value : value ? value.toNumber() : 0;
  if (!Number.isSafeInteger(n) || n < 0) throw new MalformedMessageError(`${field} is not a usable size (${String(value)})`);
  return n;
}

export function encodeBlobRequest(req: BlobRequest): Uint8Array {
  return RequestType.encode(RequestType.create({ cid: req.cid, offset: req.offset, maxChunk: req.maxChunk })).finish();
}

export function decodeBlobRequest(bytes: Uint8Array): BlobRequest {
  let m: gridpipe.v1.BlobRequest;
  try {
    m = RequestType.decode(bytes);
  } catch (err) {
    throw new MalformedMessageError(`not a BlobRequest: ${(err as Error).message}`);
  }
  return { cid: m.cid, offset: safeUint(m.offset, 'offset'), maxChunk: m.maxChunk };
}

export function encodeErrorResponse(code: ErrorCodeName, message: string): Uint8Array {
  return ResponseType.encode(ResponseType.create({ error: { code: wire.ErrorCode[code], message } })).finish();
}

/**
 * One length-prefixed BlobResponse{chunk} frame, ready for `stream.send`. The header fields are encoded
 * by protobufjs; field 3 (data) is appended by hand so the payload goes out without being copied
 * (protobuf allows fields in any order).
 */
export function encodeChunkFrame(chunk: BlobChunk): Uint8ArrayList {
  const head = ChunkType.encode(ChunkType.create({ cid: chunk.cid, offset: chunk.offset, totalSize: chunk.totalSize, last: chunk.last })).finish();
  const dataKey = lengthDelimitedPrefix(3, chunk.data.byteLength);
  const chunkLength = head.byteLength + dataKey.byteLength + chunk.data.byteLength;
  const outerKey = lengthDelimitedPrefix(1, chunkLength);
  const frameLength = outerKey.byteLength + chunkLength;
  return new Uint8ArrayList(encodeVarint(frameLength), outerKey, head, dataKey, chunk.data);
}

/** Length-prefixes one encoded message (for frames other than chunks), as one buffer. */
export function frame(message: Uint8Array): Uint8ArrayList {
  return new Uint8ArrayList(lengthPrefixed(message));
}

export function decodeBlobResponse(bytes: Uint8Array): BlobResponse {
  let m: gridpipe.v1.BlobResponse;
  try {
    m = ResponseType.decode(bytes);
  } catch (err) {
    throw new MalformedMessageError(`not a BlobResponse: ${(err as Error).message}`);
  }
  if (m.error) {
    // the code's name; a number this schema does not know stays a number
    return { error: { code: String(wire.ErrorCode[m.error.code] ?? m.error.code), message: m.error.message } };
  }
  if (m.chunk) {
    const c = m.chunk;
    return {
      chunk: { cid: c.cid, offset: safeUint(c.offset, 'offset'), data: c.data, totalSize: safeUint(c.totalSize, 'total_size'), last: c.last },
    };
  }
  throw new MalformedMessageError('BlobResponse carries neither a chunk nor an error');
}
