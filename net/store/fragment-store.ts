/**
 * The fragment store: content-addressed files (fragments, their external weights, manifests) in
 * `<dataDir>/blobs/<cid>`, named by the CID of their bytes (CIDv1, raw codec, SHA-256, as
 * `fragments/cid.ts` computes them). Downloads grow in `<cid>.partial` beside them and become blobs only
 * once their bytes hash to the CID. Every import is verified; a blob is verified again (once per process,
 * and whenever its size or mtime changes) before the store hands out its path or serves it, and a blob
 * that no longer matches its CID is removed, never returned.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, open, readFile, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { sha256 } from 'multiformats/hashes/sha2';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { cidFromSha256 } from '../../fragments/cid.js';
import { checkManifest, fileClash, MANIFEST_FILE, type Manifest } from '../../fragments/manifest.js';
import { readManifest } from '../../fragments/manifest-file.js';
import { CidMismatchError, InvalidCidError } from './errors.js';
import { createStoreMetrics, type StoreMetrics } from './metrics.js';

const BLOBS = 'blobs';
const PARTIAL = '.partial';
const TMP_PREFIX = '.tmp-';
const READ_CHUNK = 4 << 20;
/** Manifests are small JSON files; refuse to parse anything larger. */
export const MAX_MANIFEST_BYTES = 64 << 20;
/** Tokenizer files (tokenizer.json, tokenizer_config.json) are a few MB at most; refuse anything larger. */
export const MAX_TOKENIZER_BYTES = 64 << 20;

/**
 * The content-addressed tokenizer files a manifest names (a Hugging Face tokenizer.json and its
 * tokenizer_config.json), in that order; empty for byte tokenizers and models without one. They travel with
 * the fragments so that a gateway that only knows the manifest CID can still tokenize.
 */
export function tokenizerFilesOf(manifest: Manifest): TokenizerFile[] {
  const t = manifest.tokenizer;
  if (t?.kind !== 'hf') return [];
  const files: TokenizerFile[] = [];
  if (typeof t.file === 'string' && typeof t.cid === 'string') files.push({ file: t.file, cid: t.cid, ...(t.bytes === undefined ? {} : { bytes: t.bytes }) });
  if (t.config && typeof t.config.file === 'string' && typeof t.config.cid === 'string') files.push({ file: t.config.file, cid: t.config.cid, bytes: t.config.bytes });
  return files;
}

/**
 * The blobs a host of fragments `indices` of a model serves and should provide on the DHT: the manifest, those
 * fragments with their data files, and the model's tokenizer files (so that gateways can tokenize).
 */
export function hostedBlobCids(manifestCid: string, manifest: Manifest, indices: number[]): string[] {
  const fragments = indices.flatMap((i) => {
    const f = manifest.fragments[i];
    return f ? [f.cid, ...(f.data ? [f.data.cid] : [])] : [];
  });
  return [...new Set([manifestCid, ...fragments, ...tokenizerFilesOf(manifest).map((t) => t.cid)])];
}

/** A tokenizer file a manifest names (its size is optional in older manifests). */
export interface TokenizerFile { file: string; cid: string; bytes?: number }

/**
 * Parses a blob CID and returns its canonical string (base32 CIDv1). Only CIDv1 with the raw codec and a
 * SHA-256 multihash name blobs; anything else throws InvalidCidError. The canonical string is safe as a
 * file name (lowercase base32, no separators).
 */
export function parseBlobCid(text: string): string {
  let cid: CID;
  try {
    cid = CID.parse(text);
  } catch (err) {
    throw new InvalidCidError(`not a CID: ${JSON.stringify(String(text).slice(0, 100))} (${(err as Error).message})`);
  }
  if (cid.version !== 1 || cid.code !== raw.code || cid.multihash.code !== sha256.code || cid.multihash.digest.length !== 32) {
    throw new InvalidCidError(`${cid.toString()} is not a blob CID (expected CIDv1, raw codec, sha2-256)`);
  }
  return cid.toString();
}

/** SHA-256 of a file's bytes, streamed. */
async function sha256File(file: string): Promise<Uint8Array> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK })) hash.update(chunk as Buffer);
  return new Uint8Array(hash.digest());
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** A plain file name (no folders, no `..`), as manifests name fragment files. */
function plainName(name: string, what: string): string {
  if (!name || name === '.' || name === '..' || path.basename(name) !== name || name.includes('\\')) {
    throw new Error(`${what}: ${JSON.stringify(name)} is not a plain file name`);
  }
  return name;
}

export interface FragmentStoreOptions {
  /** The node's data folder; blobs live in `<dataDir>/blobs`. */
  dataDir: string;
  /** Where the store's metrics (and those of its blob server and fetcher) register; a new Registry if absent. */
  registry?: Registry;
  logger?: Logger;
}

export interface ImportResult { cid: string; bytes: number; path: string }

export interface ManifestImport {
  manifestCid: string;
  manifest: Manifest;
  /** Every CID imported: the manifest, then each fragment and its data file, then the tokenizer files. */
  cids: string[];
}

/** A verified blob opened for reading (the server's view). Close the handle when done. */
export interface OpenBlob { handle: FileHandle; size: number }

interface Verified { size: number; mtimeMs: number }

export class FragmentStore {
  readonly dataDir: string;
  readonly blobsDir: string;
  readonly metrics: StoreMetrics;
  readonly logger?: Logger;
  private readonly verified = new Map<string, Verified>();
  /** Paths linkFragment put a blob at, and which: a path never gets a second CID. */
  private readonly linked = new Map<string, string>();
  private readonly verifying = new Map<string, Promise<Verified | undefined>>();

  private constructor(options: FragmentStoreOptions) {
    this.dataDir = path.resolve(options.dataDir);
    this.blobsDir = path.join(this.dataDir, BLOBS);
    this.metrics = createStoreMetrics(options.registry);
    this.logger = options.logger;
  }

  /** Opens (creating if needed) the store in `dataDir` and removes temp files left by an interrupted import. */
  static async open(options: FragmentStoreOptions): Promise<FragmentStore> {
    const store = new FragmentStore(options);
    await mkdir(store.blobsDir, { recursive: true });
    for (const name of await readdir(store.blobsDir)) {
      if (name.startsWith(TMP_PREFIX)) await rm(path.join(store.blobsDir, name), { force: true });
    }
    return store;
  }

  /** Where the blob `cid` lives (or would). Checks the CID's form only; use `get` for a verified path. */
  path(cid: string): string {
    return path.join(this.blobsDir, parseBlobCid(cid));
  }

  /** Where a download of `cid` grows until it is verified. */
  partialPath(cid: string): string {
    return `${this.path(cid)}${PARTIAL}`;
  }

  /** Whether a complete blob is stored under `cid` (a file check; `get` verifies its bytes). */
  async has(cid: string): Promise<boolean> {
    try {
      return (await stat(this.path(cid))).isFile();
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** The path of blob `cid` once its bytes are verified against the CID; undefined if absent or corrupt (then removed). */
  async get(cid: string): Promise<string | undefined> {
    const key = parseBlobCid(cid);
    return (await this.verify(key)) ? this.path(key) : undefined;
  }

  /**
   * Verifies every stored blob now (e.g. in the background at start-up, so that the first request for a
   * large blob does not wait for its hash); corrupt ones are removed.
   */
  async verifyAll(): Promise<{ ok: string[]; removed: string[] }> {
    const ok: string[] = [];
    const removed: string[] = [];
    for (const cid of await this.list()) ((await this.verify(cid)) ? ok : removed).push(cid);
    return { ok, removed };
  }

  /** Size in bytes of the stored blob, or undefined when absent. */
  async size(cid: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(cid))).size;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** CIDs of the complete blobs, sorted (downloads in progress are not listed). */
  async list(): Promise<string[]> {
    const names = await readdir(this.blobsDir);
    const cids: string[] = [];
    for (const name of names) {
      if (name.startsWith('.') || name.includes('.')) continue;
      try {
        if (parseBlobCid(name) === name) cids.push(name);
      } catch {
        // not ours
      }
    }
    return cids.sort();
  }

  /** Removes blob `cid` and any partial download of it; whether the blob was there. */
  async remove(cid: string): Promise<boolean> {
    const key = parseBlobCid(cid);
    const existed = await this.has(key);
    this.verified.delete(key);
    await rm(this.path(key), { force: true });
    await rm(this.partialPath(key), { force: true });
    return existed;
  }

  /**
   * Copies a file into the store under the CID of its bytes (hashed while copying, then renamed into
   * place atomically). With `expectedCid`, bytes that hash to anything else throw CidMismatchError and
   * nothing is stored.
   */
  async import(file: string, options: { expectedCid?: string } = {}): Promise<ImportResult> {
    const expected = options.expectedCid === undefined ? undefined : parseBlobCid(options.expectedCid);
    const tmp = path.join(this.blobsDir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      const out = await open(tmp, 'w');
      try {
        for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK })) {
          const buf = chunk as Buffer;
          hash.update(buf);
          bytes += buf.length;
          await out.write(buf);
        }
        await out.datasync();
      } finally {
        await out.close();
      }
      const cid = cidFromSha256(new Uint8Array(hash.digest()));
      if (expected !== undefined && cid !== expected) throw new CidMismatchError(expected, cid, file);
      const dest = this.path(cid);
      await rename(tmp, dest);
      await this.remember(cid);
      return { cid, bytes, path: dest };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Imports a fragment folder (written by `gridpipe model fragment`): the manifest itself (under the CID of
   * the manifest file's bytes), then every fragment and external data file and the tokenizer files, each
   * verified against the CID the manifest gives it.
   */
  async importManifestDir(dir: string): Promise<ManifestImport> {
    const { manifest, dir: root } = await readManifest(dir);
    const manifestImport = await this.import(path.join(root, MANIFEST_FILE));
    const cids = [manifestImport.cid];
    for (const f of manifest.fragments) {
      cids.push((await this.import(path.join(root, plainName(f.file, `fragments[${f.index}].file`)), { expectedCid: f.cid })).cid);
      if (f.data) cids.push((await this.import(path.join(root, plainName(f.data.file, `fragments[${f.index}].data.file`)), { expectedCid: f.data.cid })).cid);
    }
    // Stored (and so served and provided) like fragments: a host that fetched the model by CID has them too.
    for (const t of tokenizerFilesOf(manifest)) cids.push((await this.import(path.join(root, plainName(t.file, 'tokenizer.file')), { expectedCid: t.cid })).cid);
    this.logger?.info({ manifestCid: manifestImport.cid, blobs: cids.length }, 'fragment folder imported');
    return { manifestCid: manifestImport.cid, manifest, cids };
  }

  /** The manifest stored under `manifestCid` (verified, parsed and checked), or undefined when absent. */
  async readManifest(manifestCid: string): Promise<Manifest | undefined> {
    const file = await this.get(manifestCid);
    if (!file) return undefined;
    const size = (await stat(file)).size;
    if (size > MAX_MANIFEST_BYTES) throw new Error(`blob ${manifestCid} is ${size} bytes: too large for a manifest`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      throw new Error(`blob ${manifestCid} is not a manifest: ${(err as Error).message}`, { cause: err });
    }
    const manifest = checkManifest(parsed, `manifest ${manifestCid}`);
    for (const f of manifest.fragments) {
      parseBlobCid(f.cid);
      if (f.data) {
        if (typeof f.data.cid !== 'string' || typeof f.data.file !== 'string') throw new Error(`manifest ${manifestCid}: fragments[${f.index}].data needs a file and a cid`);
        parseBlobCid(f.data.cid);
        plainName(f.data.file, `manifest ${manifestCid}: fragments[${f.index}].data.file`);
      }
    }
    for (const t of tokenizerFilesOf(manifest)) {
      parseBlobCid(t.cid);
      plainName(t.file, `manifest ${manifestCid}: tokenizer file`);
    }
    return manifest;
  }

  /**
   * Puts fragment `index` of `manifest` in `outDir` under the file names the manifest gives (hard links to
   * the verified blobs, copies across file systems), so that a model's relative external-data reference
   * resolves. Returns the model's path and its data file's.
   */
  async linkFragment(manifest: Manifest, index: number, outDir: string): Promise<{ model: string; data?: string }> {
    const f = manifest.fragments[index];
    if (!f) throw new Error(`the manifest has no fragment ${index} (it has ${manifest.fragments.length})`);
    const clash = fileClash(manifest);
    if (clash) throw new Error(`manifest ${manifest.name}: ${clash}`);
    await mkdir(outDir, { recursive: true });
    const place = async (cid: string, name: string): Promise<string> => {
      const src = await this.get(cid);
      if (!src) throw new Error(`blob ${cid} (${name}) is not in the store`);
      const dest = path.join(outDir, plainName(name, `fragments[${index}]`));
      // One path, one CID: never replace a file this store linked for another blob (its user would read other bytes).
      const held = this.linked.get(dest);
      if (held !== undefined && held !== cid) throw new Error(`${dest} already holds blob ${held}: will not link blob ${cid} (${name}) over it`);
      await rm(dest, { force: true });
      try {
        await link(src, dest);
      } catch {
        await copyFile(src, dest);
      }
      this.linked.set(dest, cid);
      return dest;
    };
    const model = await place(f.cid, f.file);
    return f.data ? { model, data: await place(f.data.cid, f.data.file) } : { model };
  }

  /** Bytes already downloaded of `cid` (0 when no download is in progress). */
  async partialSize(cid: string): Promise<number> {
    try {
      return (await stat(this.partialPath(cid))).size;
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
  }

  /** Drops a partial download of `cid`. */
  async discardPartial(cid: string): Promise<void> {
    await rm(this.partialPath(cid), { force: true });
  }

  /**
   * Turns a finished download into a blob: hashes the partial file and renames it into place when it
   * matches the CID. On a mismatch the partial is deleted and CidMismatchError thrown.
   */
  async commitPartial(cid: string): Promise<ImportResult> {
    const key = parseBlobCid(cid);
    const partial = this.partialPath(key);
    const digest = await sha256File(partial);
    const actual = cidFromSha256(digest);
    if (actual !== key) {
      await rm(partial, { force: true });
      throw new CidMismatchError(key, actual, `the download of ${key}`);
    }
    const handle = await open(partial, 'r+');
    try {
      await handle.datasync();
    } finally {
      await handle.close();
    }
    const dest = this.path(key);
    await rename(partial, dest);
    const v = await this.remember(key);
    return { cid: key, bytes: v.size, path: dest };
  }

  /** Opens a verified blob for serving, or undefined when absent or corrupt. */
  async openVerified(cid: string): Promise<OpenBlob | undefined> {
    const key = parseBlobCid(cid);
    for (let tries = 0; tries < 2; tries++) {
      const v = await this.verify(key);
      if (!v) return undefined;
      let handle: FileHandle;
      try {
        handle = await open(this.path(key), 'r');
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
      const st = await handle.stat();
      if (st.size === v.size && st.mtimeMs === v.mtimeMs) return { handle, size: st.size };
      // Replaced between the check and the open: check again.
      await handle.close();
    }
    return undefined;
  }

  private async remember(cid: string): Promise<Verified> {
    const st = await stat(this.path(cid));
    const v = { size: st.size, mtimeMs: st.mtimeMs };
    this.verified.set(cid, v);
    return v;
  }

  /** Verifies blob `cid` (cached while its size and mtime stay the same); removes it when corrupt. */
  private async verify(cid: string): Promise<Verified | undefined> {
    const file = this.path(cid);
    let st;
    try {
      st = await stat(file);
    } catch (err) {
      if (isNotFound(err)) {
        this.verified.delete(cid);
        return undefined;
      }
      throw err;
    }
    const known = this.verified.get(cid);
    if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) return known;
    const pending = this.verifying.get(cid);
    if (pending) return pending;
    const check = (async (): Promise<Verified | undefined> => {
      const actual = cidFromSha256(await sha256File(file));
      if (actual === cid) {
        const v = { size: st.size, mtimeMs: st.mtimeMs };
        this.verified.set(cid, v);
        return v;
      }
      this.verified.delete(cid);
      this.metrics.corruptBlobs.inc();
      this.logger?.error({ cid, actual }, 'stored blob no longer matches its CID: removed');
      await rm(file, { force: true });
      return undefined;
    })();
    this.verifying.set(cid, check);
    try {
      return await check;
    } finally {
      this.verifying.delete(cid);
    }
  }
}
