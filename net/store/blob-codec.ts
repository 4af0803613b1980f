/**
 * Wire messages of /gridpipe/blob/1.0.0 (proto/blob.proto) and their limits. Chunk frames are built by
 * hand around the payload so a chunk's bytes are never copied into an encoder buffer.
 */
import { Uint8ArrayList } from 'uint8arraylist';
import { encodeVarint, lengthDelimitedPrefix } from '../../fragments/onnx/wire.js';
import { gridRoot, PROTOCOLS } from '../../proto/grid.js';
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

const RequestType = gridRoot.lookupType('gridpipe.v1.BlobRequest');
const ChunkType = gridRoot.lookupType('gridpipe.v1.BlobChunk');
const ResponseType = gridRoot.lookupType('gridpipe.v1.BlobResponse');
const ErrorCodeEnum = gridRoot.lookupEnum('gridpipe.v1.ErrorCode');

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

const CONVERT = { longs: Number, enums: String, defaults: true } as const;

function safeUint(value: unknown, field: string): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw new MalformedMessageError(`${field} is not a usable size (${String(value)})`);
  return n;
}

export function encodeBlobRequest(req: BlobRequest): Uint8Array {
  return RequestType.encode(RequestType.create({ cid: req.cid, offset: req.offset, maxChunk: req.maxChunk })).finish();
}

export function decodeBlobRequest(bytes: Uint8Array): BlobRequest {
  let obj: { cid?: string; offset?: unknown; maxChunk?: unknown };
  try {
    obj = RequestType.toObject(RequestType.decode(bytes), CONVERT) as typeof obj;
  } catch (err) {
    throw new MalformedMessageError(`not a BlobRequest: ${(err as Error).message}`);
  }
  return { cid: obj.cid ?? '', offset: safeUint(obj.offset, 'offset'), maxChunk: safeUint(obj.maxChunk, 'max_chunk') };
}

export function encodeErrorResponse(code: ErrorCodeName, message: string): Uint8Array {
  return ResponseType.encode(ResponseType.create({ error: { code: ErrorCodeEnum.values[code], message } })).finish();
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
  let obj: { chunk?: { cid?: string; offset?: unknown; data?: Uint8Array; totalSize?: unknown; last?: boolean }; error?: { code?: string | number; message?: string } };
  try {
    obj = ResponseType.toObject(ResponseType.decode(bytes), { ...CONVERT, defaults: false, oneofs: true }) as typeof obj;
  } catch (err) {
    throw new MalformedMessageError(`not a BlobResponse: ${(err as Error).message}`);
  }
  if (obj.error) {
    return { error: { code: String(obj.error.code ?? 'ERROR_UNSPECIFIED'), message: obj.error.message ?? '' } };
  }
  if (obj.chunk) {
    const c = obj.chunk;
    return {
      chunk: {
        cid: c.cid ?? '',
        offset: safeUint(c.offset, 'offset'),
        data: c.data ?? new Uint8Array(0),
        totalSize: safeUint(c.totalSize, 'total_size'),
        last: c.last ?? false,
      },
    };
  }
  throw new MalformedMessageError('BlobResponse carries neither a chunk nor an error');
}
