/**
 * The fragment store and its network side: content-addressed blobs on disk (`FragmentStore`), the
 * /gridpipe/blob/1.0.0 server and client (`handleBlobProtocol`, `fetchBlob`), and fetching by CID from DHT
 * providers with resume and verification (`fetchByCid`, `fetchManifestAndFragments`).
 */
export { FragmentStore, parseBlobCid, tokenizerFilesOf, hostedBlobCids, MAX_MANIFEST_BYTES, MAX_TOKENIZER_BYTES, type TokenizerFile, type FragmentStoreOptions, type ImportResult, type ManifestImport, type OpenBlob } from './fragment-store.js';
export { createBlobHandler, handleBlobProtocol, fetchBlob, BlobSizeError, type BlobServerOptions, type FetchBlobOptions, type FetchBlobResult } from './blob-protocol.js';
export {
  BLOB_PROTOCOL, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
  encodeBlobRequest, decodeBlobRequest, encodeChunkFrame, encodeErrorResponse, decodeBlobResponse, frame, MalformedMessageError,
  type BlobRequest, type BlobChunk, type BlobResponse, type ErrorCodeName,
} from './blob-codec.js';
export { fetchByCid, fetchManifestAndFragments, provideBlobs, type FetchNode, type FetchOptions, type FetchResult, type FetchedFragment, type FetchedTokenizerFile, type ManifestFetchResult } from './fetcher.js';
export { createStoreMetrics, counterValue, type StoreMetrics } from './metrics.js';
export * from './errors.js';
export { FrameReader, FrameTooLargeError, TruncatedFrameError, type FrameReaderOptions } from '../wire/frame-reader.js';
