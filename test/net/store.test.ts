/**
 * FragmentStore: blobs stored under the CID of their bytes, verified and atomic; a fragment folder imported; a blob
 * whose bytes no longer match is never returned; only safe blob CIDs accepted.
 */
import '../../net/polyfill.js';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { CID } from 'multiformats/cid';
import ort from 'onnxruntime-node';
import { Registry } from 'prom-client';
import { Uint8ArrayList } from 'uint8arraylist';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModel } from '../../fragments/builder/index.js';
import { cidFromSha256, cidOfBytes, cidOfFile } from '../../fragments/cid.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { MANIFEST_FILE, type Manifest } from '../../fragments/manifest.js';
import { readModel } from '../../fragments/onnx/read.js';
import { writeModel } from '../../fragments/onnx/write.js';
import type { GridHost } from '../../net/host.js';
import {
  BLOB_PROTOCOL, BlobRemoteError, CidMismatchError, FetchError, FragmentStore, FrameReader, InvalidCidError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
  createBlobHandler,
  counterValue, decodeBlobRequest, decodeBlobResponse, encodeBlobRequest, encodeChunkFrame, fetchBlob, fetchByCid,
  fetchManifestAndFragments, frame, handleBlobProtocol, parseBlobCid, provideBlobs, type BlobServerOptions,
} from '../../net/store/index.js';
import { startSwarm, stopSwarm, waitFor, type Swarm } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-store-');
afterAll(() => tmp.cleanup());

let fragDir: string; // fragmentModel output: 2 fragments, weights inside the .onnx files
let extDir: string; // the same model with fragment 1's weights in an external data file
let manifest: Manifest;
let manifestCid: string;
let extManifestCid: string;
let big: { cid: string; bytes: number; file: string }; // the largest fragment file

const SMALL_CHUNK = 16 * 1024;

beforeAll(async () => {
  const model = path.join(tmp.dir, 'model.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 128, heads: 4, seed: 11 }), model);
  fragDir = path.join(tmp.dir, 'frag');
  const result = await fragmentModel(model, fragDir, { parts: 2 });
  manifest = result.manifest;
  manifestCid = result.manifestCid;
  const largest = [...manifest.fragments].sort((a, b) => b.bytes - a.bytes)[0];
  big = { cid: largest.cid, bytes: largest.bytes, file: path.join(fragDir, largest.file) };

  // A fragment folder whose fragment 1 keeps its weights in external data (as fragments of big models do).
  extDir = path.join(tmp.dir, 'frag-ext');
  await mkdir(extDir, { recursive: true });
  const ext: Manifest = JSON.parse(readFileSync(path.join(fragDir, MANIFEST_FILE), 'utf8'));
  await copyFile(path.join(fragDir, ext.fragments[0].file), path.join(extDir, ext.fragments[0].file));
  const f1 = ext.fragments[1];
  const written = await writeModel(readModel(path.join(fragDir, f1.file)), path.join(extDir, f1.file), { externalData: 'always' });
  expect(written.data).toBeDefined();
  f1.cid = await cidOfFile(written.model.path);
  f1.bytes = written.model.bytes;
  f1.data = { file: path.basename(written.data!.path), cid: await cidOfFile(written.data!.path), bytes: written.data!.bytes };
  const text = `${JSON.stringify(ext, null, 2)}\n`;
  writeFileSync(path.join(extDir, MANIFEST_FILE), text);
  extManifestCid = cidOfBytes(Buffer.from(text));
});

let storeNo = 0;
async function newStore(): Promise<FragmentStore> {
  return FragmentStore.open({ dataDir: path.join(tmp.dir, `store-${storeNo++}`), registry: new Registry() });
}

interface Peer { host: GridHost; store: FragmentStore; peerId: PeerId }

/** A swarm whose every node has a store and serves it (options per node index). */
async function storeSwarm(n: number, serverOptions: (i: number) => BlobServerOptions = () => ({})): Promise<{ swarm: Swarm; peers: Peer[] }> {
  const swarm = await startSwarm(n);
  const peers: Peer[] = [];
  for (const [i, host] of swarm.hosts.entries()) {
    const store = await newStore();
    await handleBlobProtocol(host.node, store, serverOptions(i));
    peers.push({ host, store, peerId: host.peerId });
  }
  return { swarm, peers };
}

/** Imports the fragment folder into `peer`'s store and announces every blob on the DHT. */
async function host(peer: Peer, dir = fragDir): Promise<string[]> {
  const { cids } = await peer.store.importManifestDir(dir);
  expect(await provideBlobs(peer.host.node, cids)).toEqual([]);
  return cids;
}

function expectMonotonic(calls: [number, number][], total: number): void {
  expect(calls.length).toBeGreaterThan(0);
  for (let i = 1; i < calls.length; i++) expect(calls[i][0]).toBeGreaterThanOrEqual(calls[i - 1][0]);
  for (const [bytes, t] of calls) {
    expect(t).toBe(total);
    expect(bytes).toBeLessThanOrEqual(total);
  }
  expect(calls.at(-1)).toEqual([total, total]);
}

// ------------------------------------------------------------------------------------------ store

describe('FragmentStore', () => {
  it('imports files under the CID of their bytes, verified, atomically', async () => {
    const store = await newStore();
    const r = await store.import(big.file);
    expect(r.cid).toBe(big.cid);
    expect(r.bytes).toBe(big.bytes);
    expect(await store.has(big.cid)).toBe(true);
    expect(await store.get(big.cid)).toBe(store.path(big.cid));
    expect(await store.size(big.cid)).toBe(big.bytes);
    expect(await store.list()).toEqual([big.cid]);
    expect(await cidOfFile(store.path(big.cid))).toBe(big.cid);

    // A wrong expected CID stores nothing (and leaves no temp file).
    const other = manifest.fragments.find((f) => f.cid !== big.cid)!;
    await expect(store.import(path.join(fragDir, other.file), { expectedCid: big.cid })).rejects.toBeInstanceOf(CidMismatchError);
    expect(await store.list()).toEqual([big.cid]);
    expect(readdirSync(store.blobsDir)).toEqual([big.cid]);

    expect(await store.remove(big.cid)).toBe(true);
    expect(await store.has(big.cid)).toBe(false);
    expect(await store.get(big.cid)).toBeUndefined();
    expect(await store.remove(big.cid)).toBe(false);
  });

  it('imports a fragment folder: the manifest under its own CID, each fragment and data file verified', async () => {
    const store = await newStore();
    const r = await store.importManifestDir(fragDir);
    expect(r.manifestCid).toBe(manifestCid);
    expect(r.cids).toEqual([manifestCid, ...manifest.fragments.map((f) => f.cid)]);
    expect((await store.readManifest(manifestCid))?.fragments.map((f) => f.cid)).toEqual(manifest.fragments.map((f) => f.cid));

    const ext = await store.importManifestDir(extDir);
    expect(ext.manifestCid).toBe(extManifestCid);
    expect(ext.cids).toHaveLength(4); // manifest, fragment 0, fragment 1 and its data
    expect(ext.manifest.fragments[1].data).toBeDefined();

    // A folder whose fragment bytes do not match the manifest is refused.
    const bad = path.join(tmp.dir, 'frag-bad');
    await mkdir(bad, { recursive: true });
    for (const name of readdirSync(fragDir)) await copyFile(path.join(fragDir, name), path.join(bad, name));
    appendFileSync(path.join(bad, manifest.fragments[1].file), Buffer.from([1]));
    const fresh = await newStore();
    await expect(fresh.importManifestDir(bad)).rejects.toBeInstanceOf(CidMismatchError);
    expect(await fresh.has(manifest.fragments[1].cid)).toBe(false);
  });

  it('never returns a blob whose bytes stopped matching its CID', async () => {
    const store = await newStore();
    await store.import(big.file);
    const file = store.path(big.cid);
    const bytes = await readFile(file);
    bytes[bytes.length >> 1] ^= 0xff;
    await writeFile(file, bytes); // same size, other bytes (and a new mtime)
    expect(await store.get(big.cid)).toBeUndefined();
    expect(await store.has(big.cid)).toBe(false); // removed
    expect(await counterValue(store.metrics.corruptBlobs)).toBe(1);

    // The same at start-up: a fresh store over the folder checks everything.
    const other = manifest.fragments.find((f) => f.cid !== big.cid)!;
    await store.import(big.file);
    await store.import(path.join(fragDir, other.file));
    await truncate(store.path(other.cid), 10);
    const reopened = await FragmentStore.open({ dataDir: store.dataDir, registry: new Registry() });
    expect(await reopened.verifyAll()).toEqual({ ok: [big.cid], removed: [other.cid] });
    expect(await reopened.list()).toEqual([big.cid]);
  });

  it('commits a finished download only when it hashes to its CID', async () => {
    const store = await newStore();
    await copyFile(big.file, store.partialPath(big.cid));
    await truncate(store.partialPath(big.cid), big.bytes - 1);
    await expect(store.commitPartial(big.cid)).rejects.toBeInstanceOf(CidMismatchError);
    expect(await store.partialSize(big.cid)).toBe(0); // discarded
    expect(await store.has(big.cid)).toBe(false);
    await copyFile(big.file, store.partialPath(big.cid));
    expect((await store.commitPartial(big.cid)).bytes).toBe(big.bytes);
    expect(await store.get(big.cid)).toBeDefined();
    expect(await store.list()).toEqual([big.cid]); // partials are not listed
  });

  it('accepts only blob CIDs (CIDv1 raw sha2-256), so a CID is always a safe file name', () => {
    expect(parseBlobCid(big.cid)).toBe(big.cid);
    expect(parseBlobCid(CID.parse(big.cid).toString())).toBe(big.cid);
    for (const bad of ['', '../../etc/passwd', 'bafy..', 'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG', 'bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi']) {
      expect(() => parseBlobCid(bad), bad).toThrow(InvalidCidError);
    }
  });

  it('places a fragment and its external data under the manifest names, loadable by onnxruntime', async () => {
    const store = await newStore();
    const { manifest: m } = await store.importManifestDir(extDir);
    const out = path.join(tmp.dir, 'linked');
    const placed = await store.linkFragment(m, 1, out);
    expect(path.basename(placed.model)).toBe(m.fragments[1].file);
    expect(path.basename(placed.data!)).toBe(m.fragments[1].data!.file);
    const session = await ort.InferenceSession.create(placed.model);
    expect(session.inputNames.length).toBeGreaterThan(0);
    await session.release();
  });
});

// ------------------------------------------------------------------------------------------ wire

describe('blob wire format', () => {
  it('chunk frames built around the payload decode as protobuf BlobResponse', () => {
    const data = Uint8Array.from({ length: 3000 }, (_, i) => i % 251);
    const frameBytes = encodeChunkFrame({ cid: big.cid, offset: 5_000_000_000, data, totalSize: 6_000_000_000, last: true }).subarray();
    // strip the varint length prefix
    let i = 0;
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = frameBytes[i++];
      len += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    expect(frameBytes.length - i).toBe(len);
    const msg = decodeBlobResponse(frameBytes.subarray(i));
    expect(msg.chunk).toBeDefined();
    expect(msg.chunk!.cid).toBe(big.cid);
    expect(msg.chunk!.offset).toBe(5_000_000_000);
    expect(msg.chunk!.totalSize).toBe(6_000_000_000);
    expect(msg.chunk!.last).toBe(true);
    expect(Buffer.from(msg.chunk!.data).equals(Buffer.from(data))).toBe(true);
    expect(decodeBlobRequest(encodeBlobRequest({ cid: big.cid, offset: 7, maxChunk: 4096 }))).toEqual({ cid: big.cid, offset: 7, maxChunk: 4096 });
  });
});

// ------------------------------------------------------------------------------------------ network

describe('fetching by CID over libp2p', () => {
  let swarm: Swarm | undefined;
  let peers: Peer[];
  beforeAll(async () => {
    ({ swarm, peers } = await storeSwarm(4));
  });
  afterAll(() => stopSwarm(swarm));

  it('fetches a manifest and its fragments (with external data) from a DHT provider, verified, then provides them', async () => {
    const [a, b, c] = peers;
    const cids = await host(a, extDir);
    const progress: [number, number][] = [];
    const r = await fetchManifestAndFragments(b.host.node, b.store, extManifestCid, undefined, { onProgress: (x, t) => progress.push([x, t]) });
    expect(r.fragments).toHaveLength(2);
    expect(r.fragments[1].data).toBeDefined();
    for (const f of r.fragments) {
      expect(await cidOfFile(f.path)).toBe(f.cid);
      if (f.data) expect(await cidOfFile(f.data.path)).toBe(f.data.cid);
    }
    expect((await b.store.list()).sort()).toEqual([...cids].sort());
    const total = r.manifest.fragments.reduce((s, f) => s + f.bytes + (f.data?.bytes ?? 0), 0);
    expectMonotonic(progress, total);

    // The fetched fragment runs: the external data resolves beside the model.
    const placed = await b.store.linkFragment(r.manifest, 1, path.join(tmp.dir, 'fetched-ext'));
    await (await ort.InferenceSession.create(placed.model)).release();

    // Counted on both sides (the manifest too).
    const manifestBytes = (await stat(path.join(extDir, MANIFEST_FILE))).size;
    expect(await counterValue(a.store.metrics.bytesServed)).toBe(total + manifestBytes);
    expect(await counterValue(b.store.metrics.bytesFetched)).toBe(total + manifestBytes);

    // b now provides what it fetched: c finds b among the providers of fragment 1's data.
    const dataCid = r.fragments[1].data!.cid;
    await waitFor(async () => {
      const found: string[] = [];
      for await (const p of c.host.node.contentRouting.findProviders(CID.parse(dataCid))) found.push(p.id.toString());
      return found.includes(b.peerId.toString());
    }, 'the fetching node to provide the blob');
  });

  it('shares one download between concurrent fetches of the same CID and returns cached blobs at once', async () => {
    const [a, , , d] = peers;
    await host(a);
    const [x, y] = await Promise.all([fetchByCid(d.host.node, d.store, big.cid), fetchByCid(d.host.node, d.store, big.cid)]);
    expect(x).toBe(y);
    expect(await counterValue(d.store.metrics.bytesFetched)).toBe(big.bytes);
    const again = await fetchByCid(d.host.node, d.store, big.cid);
    expect(again.cached).toBe(true);
    expect(await counterValue(d.store.metrics.bytesFetched)).toBe(big.bytes);
  });

  it('reports monotonic progress that ends at the total', async () => {
    const [a, , c] = peers;
    await host(a);
    const progress: [number, number][] = [];
    const r = await fetchByCid(c.host.node, c.store, big.cid, { maxChunk: SMALL_CHUNK, peers: [a.peerId], onProgress: (x, t) => progress.push([x, t]) });
    expect(r.bytes).toBe(big.bytes);
    expect(progress.length).toBeGreaterThanOrEqual(Math.ceil(big.bytes / SMALL_CHUNK));
    expectMonotonic(progress, big.bytes);
  });

  it('answers malformed, oversized and impossible requests with an error and keeps serving a parallel fetch', async () => {
    const [a, b] = peers;
    await host(a);
    const server = a.peerId;

    /** Sends raw bytes on a blob stream and decodes the first response frame. */
    const raw = async (bytes: Uint8Array | Uint8ArrayList): Promise<{ code: string; message: string }> => {
      const stream = await b.host.node.dialProtocol(server, BLOB_PROTOCOL);
      const lp = lpStream(stream, { maxDataLength: 2 << 20 });
      const reply = lp.read();
      if (!stream.send(bytes)) await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }));
      const res = decodeBlobResponse((await reply).subarray());
      await stream.close().catch(() => undefined);
      expect(res.error, 'an error reply').toBeDefined();
      return res.error!;
    };
    const request = (cid: string, offset = 0, maxChunk = 0): Uint8ArrayList => frame(encodeBlobRequest({ cid, offset, maxChunk }));
    const hugeFrame = (size: number): Uint8ArrayList => new Uint8ArrayList(frame(new Uint8Array(size)));

    const partial = path.join(tmp.dir, 'parallel.partial');
    const honest = fetchBlob(b.host.node, server, big.cid, partial, { maxChunk: SMALL_CHUNK });
    const replies = await Promise.all([
      raw(frame(Uint8Array.from([0xff, 0xff, 0xff, 0x01, 0x02]))), // not a protobuf message
      raw(frame(Uint8Array.from([0x0a, 0x05, 0x61]))), // a string field that runs past the end
      raw(hugeFrame(MAX_REQUEST_BYTES + 1)),
      raw(hugeFrame(6 << 20)), // larger than any buffer the server keeps
      raw(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), // length varint too long
      raw(request('not-a-cid')),
      raw(request('QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG')),
      raw(request(big.cid, 0, 10)), // max_chunk below the minimum
      raw(request(big.cid, big.bytes + 1)), // past the end
      raw(request(cidOfBytes(Buffer.from('nobody has this')))),
    ]);
    expect(replies.map((r) => r.code)).toEqual([...Array(9).fill('BAD_REQUEST'), 'NOT_FOUND']);
    for (const r of replies) expect(r.message.length).toBeGreaterThan(5);
    expect(replies[2].message).toMatch(/too large/);
    expect(replies[3].message).toMatch(/too large/);
    expect(replies[5].message).toMatch(/not a CID/);
    expect(replies[8].message).toMatch(/past the end/);

    const done = await honest;
    expect(done).toEqual({ total: big.bytes, from: 0 });
    expect(await cidOfFile(partial)).toBe(big.cid);
    expect(await counterValue(a.store.metrics.requests)).toBeGreaterThanOrEqual(11);
    const { values } = await a.store.metrics.requests.get();
    expect(values.find((v) => v.labels.result === 'bad_request')?.value).toBeGreaterThanOrEqual(9);

    // And it still serves afterwards; a client-side error names the code.
    await expect(fetchBlob(b.host.node, server, cidOfBytes(Buffer.from('still nobody')), path.join(tmp.dir, 'nf.partial'))).rejects.toMatchObject({ remoteCode: 'NOT_FOUND' });
    await expect(fetchBlob(b.host.node, server, cidOfBytes(Buffer.from('still nobody')), path.join(tmp.dir, 'nf.partial'))).rejects.toBeInstanceOf(BlobRemoteError);
    const again = path.join(tmp.dir, 'again.partial');
    await fetchBlob(b.host.node, server, big.cid, again);
    expect(await cidOfFile(again)).toBe(big.cid);
  });

  it('the server waits for the reader (back-pressure): its write buffer stays within a frame or two', async () => {
    const [, b, c] = peers;
    const store = await newStore();
    // A server that ignored back-pressure would queue what the reader's window does not take (up to all of it).
    const size = 20 << 20;
    const chunk = 64 * 1024;
    const file = path.join(tmp.dir, 'twenty-mib.bin');
    const pattern = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7919) % 251));
    writeFileSync(file, Buffer.concat(Array.from({ length: size >> 20 }, () => pattern)));
    const { cid } = await store.import(file);
    const serverStreams: Stream[] = [];
    const handler = createBlobHandler(store);
    await c.host.node.unhandle(BLOB_PROTOCOL);
    await c.host.node.handle(BLOB_PROTOCOL, (stream, connection) => {
      serverStreams.push(stream);
      return handler(stream, connection);
    });
    try {
      const stream = await b.host.node.dialProtocol(c.peerId, BLOB_PROTOCOL);
      // A slow reader: pauses the stream as soon as anything is buffered, and stops for a while now and then.
      const reader = new FrameReader(stream, { maxFrameBytes: MAX_RESPONSE_BYTES, highWaterMark: 1 });
      stream.send(frame(encodeBlobRequest({ cid, offset: 0, maxChunk: chunk })));
      const hash = createHash('sha256');
      let received = 0;
      let maxServerQueue = 0;
      for (;;) {
        const f = await reader.read();
        if (!f) break;
        const msg = decodeBlobResponse(f.subarray()).chunk!;
        hash.update(msg.data);
        received += msg.data.byteLength;
        if (received % (4 << 20) === chunk) await new Promise((resolve) => setTimeout(resolve, 50));
        maxServerQueue = Math.max(maxServerQueue, serverStreams[0]?.writeBufferLength ?? 0);
        if (msg.last) break;
      }
      expect(received).toBe(size);
      expect(cidFromSha256(new Uint8Array(hash.digest()))).toBe(cid);
      expect(maxServerQueue).toBeLessThanOrEqual(2 * (chunk + 256));
    } finally {
      await c.host.node.unhandle(BLOB_PROTOCOL);
      await handleBlobProtocol(c.host.node, c.store);
    }
  });

  it('does not serve a stored blob whose bytes were corrupted on disk', async () => {
    const [, b, c] = peers;
    const store = await newStore();
    const file = path.join(tmp.dir, 'rot.bin');
    writeFileSync(file, Buffer.alloc(200_000, 7));
    const { cid } = await store.import(file);
    const rotten = await readFile(store.path(cid));
    rotten[10] = 8;
    await writeFile(store.path(cid), rotten);
    // Serve this store from c's node for the duration of the test.
    await c.host.node.unhandle(BLOB_PROTOCOL);
    await handleBlobProtocol(c.host.node, store);
    try {
      await expect(fetchBlob(b.host.node, c.peerId, cid, path.join(tmp.dir, 'rot.partial'))).rejects.toMatchObject({ remoteCode: 'NOT_FOUND' });
      expect(await counterValue(store.metrics.corruptBlobs)).toBe(1);
    } finally {
      await c.host.node.unhandle(BLOB_PROTOCOL);
      await handleBlobProtocol(c.host.node, c.store);
    }
  });
});

describe('resuming interrupted fetches', () => {
  let swarm: Swarm | undefined;
  afterAll(() => stopSwarm(swarm));

  it('continues an aborted download from its partial file, from another provider, after the first one died', async () => {
    const s = await storeSwarm(3);
    swarm = s.swarm;
    const [a, b, c] = s.peers;
    await host(a);
    await host(b);

    // Abort after a few chunks from a.
    const ac = new AbortController();
    const cut = 4 * SMALL_CHUNK;
    await expect(fetchBlob(c.host.node, a.peerId, big.cid, c.store.partialPath(big.cid), {
      maxChunk: SMALL_CHUNK, signal: ac.signal, onProgress: (x) => { if (x >= cut) ac.abort(new Error('enough')); },
    })).rejects.toThrow('enough');
    const kept = await c.store.partialSize(big.cid);
    expect(kept).toBeGreaterThanOrEqual(cut);
    expect(kept).toBeLessThan(big.bytes);
    expect(await c.store.has(big.cid)).toBe(false);

    await a.host.stop(); // the first provider is gone; the DHT may still name it

    const progress: [number, number][] = [];
    const r = await fetchByCid(c.host.node, c.store, big.cid, { maxChunk: SMALL_CHUNK, onProgress: (x, t) => progress.push([x, t]) });
    expect(await cidOfFile(r.path)).toBe(big.cid);
    const last = r.attempts.at(-1)!;
    expect(last).toMatchObject({ peer: b.peerId.toString(), from: kept, to: big.bytes, outcome: 'complete' });
    expect(r.attempts.filter((x) => x.peer === a.peerId.toString()).every((x) => x.outcome === 'failed')).toBe(true);
    expect(progress[0][0]).toBeGreaterThanOrEqual(kept); // resumed, not restarted
    expectMonotonic(progress, big.bytes);
    // Only the missing bytes came over the network (fetchBlob above was given no metrics).
    expect(await counterValue(c.store.metrics.bytesFetched)).toBe(big.bytes - kept);
    expect(await c.store.partialSize(big.cid)).toBe(0);
  });
});

describe('a provider killed mid-transfer', () => {
  let swarm: Swarm | undefined;
  afterAll(() => stopSwarm(swarm));

  it('the download goes on from the partial file with the next provider', async () => {
    // a is throttled so that it is surely killed midway.
    const s = await storeSwarm(3, (i) => (i === 0 ? { maxBytesPerSecond: 256 * 1024 } : {}));
    swarm = s.swarm;
    const [a, b, c] = s.peers;
    await host(a);
    await host(b);

    let current = '';
    let killed = false;
    const progress: [number, number][] = [];
    const r = await fetchByCid(c.host.node, c.store, big.cid, {
      peers: [a.peerId, b.peerId],
      maxChunk: SMALL_CHUNK,
      onAttempt: (p) => { current = p.toString(); },
      onProgress: (x, t) => {
        progress.push([x, t]);
        if (!killed && current === a.peerId.toString() && x >= 2 * SMALL_CHUNK) {
          killed = true;
          // A crash: connections torn down without a goodbye, then the node gone.
          for (const conn of a.host.node.getConnections()) (conn as Connection).abort(new Error('killed'));
          void a.host.stop();
        }
      },
    });
    expect(killed).toBe(true);
    expect(await cidOfFile(r.path)).toBe(big.cid);
    const [first, ...rest] = r.attempts;
    expect(first).toMatchObject({ peer: a.peerId.toString(), from: 0, outcome: 'failed' });
    expect(first.to).toBeGreaterThanOrEqual(2 * SMALL_CHUNK);
    expect(first.to).toBeLessThan(big.bytes);
    expect(rest.at(-1)).toMatchObject({ peer: b.peerId.toString(), from: first.to, to: big.bytes, outcome: 'complete' });
    expectMonotonic(progress, big.bytes);
  });
});

describe('providers that serve corrupted bytes', () => {
  let swarm: Swarm | undefined;
  let peers: Peer[];
  beforeAll(async () => {
    ({ swarm, peers } = await storeSwarm(4));
  });
  afterAll(() => stopSwarm(swarm));

  /** A blob handler that serves `file` for its CID with one byte flipped. */
  function evilHandler(cid: string, file: string): (stream: Stream) => Promise<void> {
    return async (stream: Stream) => {
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES });
      const req = decodeBlobRequest((await lp.read()).subarray());
      const bytes = readFileSync(file);
      bytes[bytes.length >> 1] ^= 0x01;
      for (let off = req.offset; off < bytes.length; off += SMALL_CHUNK) {
        const data = bytes.subarray(off, Math.min(bytes.length, off + SMALL_CHUNK));
        if (!stream.send(encodeChunkFrame({ cid, offset: off, data, totalSize: bytes.length, last: off + data.length === bytes.length }))) {
          await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }));
        }
      }
      await stream.close();
    };
  }

  it('with only a corrupt provider, the fetch fails clearly and nothing enters the store', async () => {
    const [evil, , c] = peers;
    await evil.host.node.unhandle(BLOB_PROTOCOL);
    await evil.host.node.handle(BLOB_PROTOCOL, evilHandler(big.cid, big.file));
    await evil.host.node.contentRouting.provide(CID.parse(big.cid));

    const err = await fetchByCid(c.host.node, c.store, big.cid).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FetchError);
    expect((err as FetchError).code).toBe('ALL_PROVIDERS_FAILED');
    expect((err as FetchError).message).toMatch(/do not match the CID/);
    expect((err as FetchError).message).toContain(evil.peerId.toString());
    expect((err as FetchError).attempts.map((a) => a.outcome)).toEqual(['bad-bytes']);
    expect(await c.store.has(big.cid)).toBe(false);
    expect(await c.store.partialSize(big.cid)).toBe(0);
    expect(existsSync(c.store.partialPath(big.cid))).toBe(false);
    expect(await counterValue(c.store.metrics.badProviders)).toBe(1);
  });

  it('a corrupt provider is dropped and the fetch completes from an honest one, from scratch', async () => {
    const [evil, honest, , d] = peers;
    await host(honest);
    const badPeers = new Set<string>();
    const r = await fetchByCid(d.host.node, d.store, big.cid, { peers: [evil.peerId, honest.peerId], badPeers });
    expect(await cidOfFile(r.path)).toBe(big.cid);
    expect(r.badPeers).toEqual([evil.peerId.toString()]);
    expect([...badPeers]).toEqual([evil.peerId.toString()]);
    expect(r.attempts.map((a) => [a.peer, a.outcome, a.from])).toEqual([
      [evil.peerId.toString(), 'bad-bytes', 0],
      [honest.peerId.toString(), 'complete', 0], // the evil bytes were thrown away
    ]);
    expect(await counterValue(d.store.metrics.badProviders)).toBe(1);

    // The shared set keeps the bad peer out of later fetches.
    await d.store.remove(big.cid);
    const again = await fetchByCid(d.host.node, d.store, big.cid, { peers: [evil.peerId, honest.peerId], badPeers });
    expect(again.attempts.map((a) => a.peer)).toEqual([honest.peerId.toString()]);
  });

  it('a resumed download that fails verification restarts from zero without blaming the last provider', async () => {
    const [, honest, c] = peers;
    await host(honest);
    await c.store.remove(big.cid);
    // A partial left by an earlier run, with wrong bytes in it.
    const bytes = readFileSync(big.file).subarray(0, 5 * SMALL_CHUNK);
    bytes[100] ^= 0xff;
    await writeFile(c.store.partialPath(big.cid), bytes);
    const r = await fetchByCid(c.host.node, c.store, big.cid, { peers: [honest.peerId] });
    expect(await cidOfFile(r.path)).toBe(big.cid);
    expect(r.attempts.map((a) => [a.outcome, a.from])).toEqual([['mixed-mismatch', 5 * SMALL_CHUNK], ['complete', 0]]);
    expect(r.badPeers).toEqual([]);
  });

  it('a partial file longer than the blob is discarded when the provider refuses to resume from it', async () => {
    const [, honest, c] = peers;
    await host(honest);
    await c.store.remove(big.cid);
    await writeFile(c.store.partialPath(big.cid), Buffer.concat([readFileSync(big.file), Buffer.from('trailing junk')]));
    const r = await fetchByCid(c.host.node, c.store, big.cid, { peers: [honest.peerId] });
    expect(await cidOfFile(r.path)).toBe(big.cid);
    expect(r.attempts.map((a) => [a.outcome, a.from])).toEqual([['failed', big.bytes + 13], ['complete', 0]]);
    expect(r.attempts[0].error).toMatch(/past the end/);
    expect(r.badPeers).toEqual([]);
  });
});
