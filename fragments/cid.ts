/** Content identifiers: CIDv1 (raw codec, SHA-256) over a file's bytes, via multiformats. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import { sha256 } from 'multiformats/hashes/sha2';
import * as raw from 'multiformats/codecs/raw';

/** The CID of bytes whose SHA-256 digest is already known (e.g. computed while writing them). */
export function cidFromSha256(digest: Uint8Array): string {
  return CID.createV1(raw.code, Digest.create(sha256.code, digest)).toString();
}

/** The CID of a byte array. */
export function cidOfBytes(bytes: Uint8Array): string {
  return cidFromSha256(new Uint8Array(createHash('sha256').update(bytes).digest()));
}

/** The CID of a file's contents, streamed. */
export async function cidOfFile(filePath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(filePath, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return cidFromSha256(new Uint8Array(hash.digest()));
}

/** Parses and re-prints a CID string; throws on anything that is not a valid CID. */
export function normalizeCid(text: string): string {
  return CID.parse(text).toString();
}
