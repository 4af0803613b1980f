/**
 * Fetching blobs by CID from whoever provides them: providers come from the caller's hints, then the DHT
 * (`contentRouting.findProviders`). Each is tried in turn; a download resumes from the partial file, even
 * one another provider started. The finished file must hash to the CID before it enters the store. A
 * provider whose bytes do not match (or that breaks the protocol) is dropped for the rest of the fetch and
 * its bytes discarded; when a mismatching file came from several providers, nobody is blamed and the
 * download restarts from zero with one provider. After the import the node provides the CID.
 */
import { readFile } from 'node:fs/promises';
import type { Libp2p, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { CID } from 'multiformats/cid';
import type { Logger } from 'pino';
import { fetchBlob, BlobSizeError } from './blob-protocol.js';
import { BlobProtocolError, BlobRemoteError, CidMismatchError, FetchError, toError, type FetchAttempt } from './errors.js';
import { MAX_MANIFEST_BYTES, MAX_TOKENIZER_BYTES, parseBlobCid, tokenizerFilesOf, type FragmentStore } from './fragment-store.js';
import type { Manifest } from '../../fragments/manifest.js';

/** What the fetcher needs of a libp2p node (a full `Libp2p` fits). */
export type FetchNode = Pick<Libp2p, 'peerId' | 'dialProtocol' | 'contentRouting' | 'peerStore'>;

export interface FetchOptions {
  /**
   * Bytes downloaded (resumed prefix included) and the blob's size. Never goes backwards: after a
   * discarded download it holds until the new one passes the old mark. The last call is (total, total).
   */
  onProgress?: (bytes: number, total: number) => void;
  /** Called before each provider is asked, with the offset the request resumes from. */
  onAttempt?: (peer: PeerId, from: number) => void;
  signal?: AbortSignal;
  /** Providers to try before asking the DHT (e.g. peers known to host the model). */
  peers?: PeerId[];
  /** The blob's size when known (from a manifest). */
  expectedSize?: number;
  /** Refuse blobs larger than this. */
  maxBytes?: number;
  /** Peers not to ask; bad providers found by this fetch are added. Share one set across fetches to remember them. */
  badPeers?: Set<string>;
  /** Provide the CID on the DHT after a successful fetch (default true). */
  provide?: boolean;
  /** Largest chunk to ask for (default 1 MiB). */
  maxChunk?: number;
  /** Passes over providers that failed for a transient reason (stream broke, busy) (default 2). */
  rounds?: number;
  /** Fail a transfer that gets no data for this long (default 30 s). */
  stallTimeoutMs?: number;
  logger?: Logger;
}

export interface FetchResult {
  cid: string;
  /** The verified blob in the store. */
  path: string;
  bytes: number;
  /** True when the store already had it (nothing was downloaded). */
  cached: boolean;
  attempts: FetchAttempt[];
  /** Providers this fetch dropped for bad bytes or protocol violations. */
  badPeers: string[];
}

const inflight = new WeakMap<FragmentStore, Map<string, Promise<FetchResult>>>();
const EARLIER = '(earlier download)';

/**
 * Fetches blob `cid` into `store` and returns its verified path. Concurrent calls for the same CID and
 * store share one download (the first caller's options apply). Throws FetchError (NO_PROVIDERS,
 * ALL_PROVIDERS_FAILED, listing every attempt) or the signal's reason; a partial download stays for the
 * next attempt unless its bytes were bad.
 */
export async function fetchByCid(node: FetchNode, store: FragmentStore, cid: string, options: FetchOptions = {}): Promise<FetchResult> {
  const key = parseBlobCid(cid);
  let perStore = inflight.get(store);
  if (!perStore) inflight.set(store, (perStore = new Map()));
  const running = perStore.get(key);
  if (running) return running;
  const job = fetchOnce(node, store, key, options);
  perStore.set(key, job);
  try {
    return await job;
  } finally {
    perStore.delete(key);
  }
}

async function fetchOnce(node: FetchNode, store: FragmentStore, cid: string, options: FetchOptions): Promise<FetchResult> {
  const logger = options.logger ?? store.logger;
  const signal = options.signal;
  const bad = options.badPeers ?? new Set<string>();
  const badHere: string[] = [];
  const attempts: FetchAttempt[] = [];
  const self = node.peerId.toString();

  let reported = 0;
  const progress = (bytes: number, total: number): void => {
    reported = Math.max(reported, bytes);
    options.onProgress?.(reported, total);
  };

  const have = await store.get(cid);
  if (have) {
    const size = (await store.size(cid)) ?? 0;
    progress(size, size);
    return { cid, path: have, bytes: size, cached: true, attempts, badPeers: [] };
  }

  // Who wrote the bytes now in the partial file (to know whom a mismatch blames).
  const contributors = new Set<string>();
  if ((await store.partialSize(cid)) > 0) contributors.add(EARLIER);

  const markBad = (peer: string, why: string): void => {
    if (!bad.has(peer)) {
      bad.add(peer);
      badHere.push(peer);
      store.metrics.badProviders.inc();
    }
    logger?.warn({ cid, peer, why }, 'provider dropped');
  };

  type Outcome = { done: FetchResult } | { retry: boolean };

  /** One provider, possibly twice: again from zero after a mismatch that nobody can be blamed for. */
  const tryPeer = async (peerId: PeerId): Promise<Outcome> => {
    const peer = peerId.toString();
    for (let pass = 0; pass < 2; pass++) {
      const from = await store.partialSize(cid);
      options.onAttempt?.(peerId, from);
      const attempt: FetchAttempt = { peer, from, to: from, outcome: 'failed' };
      attempts.push(attempt);
      try {
        await fetchBlob(node, peerId, cid, store.partialPath(cid), {
          signal, maxChunk: options.maxChunk, expectedSize: options.expectedSize, maxBytes: options.maxBytes,
          stallTimeoutMs: options.stallTimeoutMs, metrics: store.metrics, onProgress: progress,
        });
      } catch (err) {
        attempt.to = await store.partialSize(cid);
        if (attempt.to > from) contributors.add(peer);
        if (signal?.aborted) throw signal.reason ?? err;
        const e = toError(err);
        attempt.error = e.message;
        if (err instanceof BlobProtocolError) {
          attempt.outcome = 'bad-bytes';
          markBad(peer, e.message);
          await store.discardPartial(cid);
          contributors.clear();
          return { retry: false };
        }
        if (err instanceof BlobRemoteError && err.remoteCode === 'BAD_REQUEST' && from > 0) {
          // Most likely our partial file is longer than the blob: it is not a prefix of it. Start over.
          logger?.warn({ cid, peer, from, err: e.message }, 'provider refused to resume: discarding the partial download');
          await store.discardPartial(cid);
          contributors.clear();
          continue;
        }
        // An answer (NOT_FOUND, BAD_REQUEST) or a size we refuse will not change; a broken stream or BUSY may.
        const retry = err instanceof BlobRemoteError ? err.remoteCode === 'BUSY' : !(err instanceof BlobSizeError);
        logger?.debug({ cid, peer, err: e.message, retry }, 'provider failed');
        return { retry };
      }
      attempt.to = await store.partialSize(cid);
      if (attempt.to > from || from === 0) contributors.add(peer);
      try {
        const imported = await store.commitPartial(cid);
        attempt.outcome = 'complete';
        return { done: { cid, path: imported.path, bytes: imported.bytes, cached: false, attempts, badPeers: badHere } };
      } catch (err) {
        if (!(err instanceof CidMismatchError)) throw err;
        // commitPartial has deleted the partial file.
        if (contributors.size === 1 && contributors.has(peer)) {
          attempt.outcome = 'bad-bytes';
          attempt.error = 'served bytes that do not match the CID';
          markBad(peer, err.message);
          contributors.clear();
          return { retry: false };
        }
        attempt.outcome = 'mixed-mismatch';
        attempt.error = `the download (from ${[...contributors].join(', ')}) does not match the CID; starting over from this provider alone`;
        logger?.warn({ cid, peer, contributors: [...contributors] }, 'download from several providers does not match its CID: starting over');
        contributors.clear();
      }
    }
    return { retry: false };
  };

  const tried = new Set<string>();
  const again: PeerId[] = [];
  const usable = (peerId: PeerId): boolean => {
    const peer = peerId.toString();
    return peer !== self && !bad.has(peer);
  };

  let result: FetchResult | undefined;
  let dhtError: Error | undefined;
  const first = async function* (): AsyncGenerator<PeerId> {
    yield* options.peers ?? [];
    try {
      for await (const provider of node.contentRouting.findProviders(CID.parse(cid), { signal })) {
        if (provider.multiaddrs.length > 0 && provider.id.toString() !== self) {
          await node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => undefined);
        }
        yield provider.id;
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      dhtError = toError(err);
      logger?.debug({ cid, err: dhtError.message }, 'provider search failed');
    }
  };
  for await (const peerId of first()) {
    const peer = peerId.toString();
    if (tried.has(peer) || !usable(peerId)) continue;
    tried.add(peer);
    const outcome = await tryPeer(peerId);
    if ('done' in outcome) {
      result = outcome.done;
      break;
    }
    if (outcome.retry) again.push(peerId);
  }
  for (let round = 1; !result && round < (options.rounds ?? 2) && again.length > 0; round++) {
    const peers = again.splice(0);
    for (const peerId of peers) {
      if (!usable(peerId)) continue;
      const outcome = await tryPeer(peerId);
      if ('done' in outcome) {
        result = outcome.done;
        break;
      }
      if (outcome.retry) again.push(peerId);
    }
  }

  if (!result) {
    // Keep a partial download for the next try, but not an empty file.
    if ((await store.partialSize(cid)) === 0) await store.discardPartial(cid);
    if (attempts.length === 0) {
      const skipped = options.peers?.length || bad.size ? ` (${bad.size} known-bad provider${bad.size === 1 ? '' : 's'} skipped)` : '';
      throw new FetchError('NO_PROVIDERS', `no provider of ${cid} found${dhtError ? `: ${dhtError.message}` : ''}${skipped}`, cid, attempts);
    }
    const lines = attempts.map((a) => `${a.peer}: ${a.outcome === 'bad-bytes' ? 'dropped, ' : ''}${a.error ?? a.outcome} (bytes ${a.from}..${a.to})`);
    throw new FetchError('ALL_PROVIDERS_FAILED', `could not fetch ${cid} from any of ${tried.size} provider${tried.size === 1 ? '' : 's'}: ${lines.join('; ')}`, cid, attempts);
  }

  progress(result.bytes, result.bytes);
  logger?.info({ cid, bytes: result.bytes, attempts: attempts.length }, 'blob fetched');
  if (options.provide ?? true) {
    try {
      await node.contentRouting.provide(CID.parse(cid), { signal });
    } catch (err) {
      logger?.warn({ cid, err: toError(err).message }, 'could not provide the fetched blob');
    }
  }
  return result;
}

/** Announces `cids` on the DHT; returns the CIDs that could not be provided, with why. */
export async function provideBlobs(node: Pick<Libp2p, 'contentRouting'>, cids: string[], options: { signal?: AbortSignal } = {}): Promise<{ cid: string; error: string }[]> {
  const failed: { cid: string; error: string }[] = [];
  for (const cid of cids) {
    try {
      await node.contentRouting.provide(CID.parse(parseBlobCid(cid)), { signal: options.signal });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      failed.push({ cid, error: toError(err).message });
    }
  }
  return failed;
}

export interface FetchedFragment {
  index: number;
  cid: string;
  path: string;
  data?: { cid: string; path: string };
}

/** A tokenizer file the manifest names: its verified path, or why it could not be fetched. */
export interface FetchedTokenizerFile { file: string; cid: string; path?: string; error?: string }

export interface ManifestFetchResult {
  manifestCid: string;
  manifest: Manifest;
  fragments: FetchedFragment[];
  /** The manifest's tokenizer files (tokenizer.json, tokenizer_config.json), fetched beside the fragments. */
  tokenizer: FetchedTokenizerFile[];
}

/**
 * Fetches a manifest by CID, then the fragments it lists (all, or those at `fragmentIndices`) with their
 * external data, then its tokenizer files, each verified. Progress covers the fragment and data bytes.
 * Providers found bad while fetching one file are skipped for the others. A tokenizer file that cannot be
 * fetched does not fail the call (the fragments run without it): it is logged and reported with its error.
 */
export async function fetchManifestAndFragments(node: FetchNode, store: FragmentStore, manifestCid: string, fragmentIndices?: number[], options: FetchOptions = {}): Promise<ManifestFetchResult> {
  const key = parseBlobCid(manifestCid);
  const badPeers = options.badPeers ?? new Set<string>();
  const common: FetchOptions = { ...options, badPeers, onProgress: undefined, expectedSize: undefined, maxBytes: undefined };
  // Who delivered the manifest: it most likely has the tokenizer files too (they are not always on the DHT).
  const attempted = new Map<string, PeerId>();
  const got = await fetchByCid(node, store, key, {
    ...common, maxBytes: MAX_MANIFEST_BYTES,
    onAttempt: (peer, from) => { attempted.set(peer.toString(), peer); options.onAttempt?.(peer, from); },
  });
  const deliverer = got.attempts.filter((a) => a.outcome === 'complete').map((a) => attempted.get(a.peer)).filter((p): p is PeerId => p !== undefined);
  const manifest = await store.readManifest(key);
  if (!manifest) throw new Error(`manifest ${key} vanished from the store`);
  const indices = fragmentIndices ?? manifest.fragments.map((f) => f.index);
  for (const i of indices) {
    if (!Number.isInteger(i) || !manifest.fragments[i]) throw new Error(`manifest ${key} has no fragment ${i} (it has ${manifest.fragments.length})`);
  }
  const files = indices.flatMap((i) => {
    const f = manifest.fragments[i];
    return f.data ? [{ cid: f.cid, bytes: f.bytes }, { cid: f.data.cid, bytes: f.data.bytes }] : [{ cid: f.cid, bytes: f.bytes }];
  });
  const total = files.reduce((s, f) => s + (f.bytes ?? 0), 0);
  let done = 0;
  let reported = 0;
  const paths = new Map<string, string>();
  for (const f of files) {
    const r = await fetchByCid(node, store, f.cid, {
      ...common,
      expectedSize: Number.isSafeInteger(f.bytes) ? f.bytes : undefined,
      onProgress: options.onProgress && ((bytes) => {
        reported = Math.max(reported, Math.min(total, done + bytes));
        options.onProgress?.(reported, total);
      }),
    });
    paths.set(f.cid, r.path);
    done += r.bytes;
  }
  options.onProgress?.(total, total);
  const tokenizer: FetchedTokenizerFile[] = [];
  const hints = [...deliverer, ...(options.peers ?? []).filter((p) => !deliverer.some((d) => d.equals(p)))];
  for (const t of tokenizerFilesOf(manifest)) {
    try {
      const r = await fetchByCid(node, store, t.cid, {
        ...common, peers: hints, maxBytes: MAX_TOKENIZER_BYTES,
        expectedSize: Number.isSafeInteger(t.bytes) ? t.bytes : undefined,
      });
      tokenizer.push({ file: t.file, cid: t.cid, path: r.path });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const error = toError(err).message;
      (options.logger ?? store.logger)?.warn({ manifestCid: key, cid: t.cid, file: t.file, err: error }, 'could not fetch a tokenizer file of the model');
      tokenizer.push({ file: t.file, cid: t.cid, error });
    }
  }
  return {
    manifestCid: key,
    manifest,
    tokenizer,
    fragments: indices.map((i) => {
      const f = manifest.fragments[i];
      const out: FetchedFragment = { index: i, cid: f.cid, path: paths.get(f.cid)! };
      if (f.data) out.data = { cid: f.data.cid, path: paths.get(f.data.cid)! };
      return out;
    }),
  };
}

/** A peer named by a capacity record: its id and the addresses it announced. */
export interface KnownHost { peerId: string; addrs: readonly string[] }

/**
 * One small file (a tokenizer file) fetched by CID into `store` and returned, verified and at most `maxBytes`,
 * asking `hosts` (the model's suppliers, which keep its files; their addresses are added to the peer store so
 * they can be dialled) before the DHT's providers. Provided to nobody.
 */
export async function fetchSmallFile(node: FetchNode, store: FragmentStore, file: { cid: string; bytes?: number }, hosts: readonly KnownHost[], maxBytes: number, timeoutMs = 15_000): Promise<Uint8Array> {
  const fetched = await fetchByCid(node, store, file.cid, {
    provide: false, signal: AbortSignal.timeout(timeoutMs), maxBytes,
    expectedSize: Number.isSafeInteger(file.bytes) ? file.bytes : undefined, peers: await dialableHosts(node, hosts),
  });
  return readFile(fetched.path);
}

/** The hosts as peer ids (self and malformed ids left out), their announced addresses merged into the peer store. */
async function dialableHosts(node: FetchNode, hosts: readonly KnownHost[]): Promise<PeerId[]> {
  const self = node.peerId.toString();
  const peers = new Map<string, PeerId>();
  for (const host of hosts) {
    if (peers.has(host.peerId) || host.peerId === self) continue;
    try {
      const id = peerIdFromString(host.peerId);
      if (host.addrs.length) await node.peerStore.merge(id, { multiaddrs: host.addrs.map((a) => multiaddr(a)) }).catch(() => undefined);
      peers.set(host.peerId, id);
    } catch {
      // not a peer id: the DHT lookup will do
    }
  }
  return [...peers.values()];
}
