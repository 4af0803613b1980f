/**
 * Tokenizer files in the fragment store: a model fragmented with `--tokenizer` ships tokenizer.json and
 * tokenizer_config.json, content addressed in its manifest. The store imports them (verified), a host that
 * fetched the model by CID fetches them too, serves them and provides them, and bytes that do not match the
 * CID are rejected wherever they come from.
 */
import '../../net/polyfill.js';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModel } from '../../fragments/builder/index.js';
import { cidOfFile } from '../../fragments/cid.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { MANIFEST_FILE, type Manifest } from '../../fragments/manifest.js';
import { writeModel } from '../../fragments/onnx/write.js';
import type { GridHost } from '../../net/host.js';
import {
  BLOB_PROTOCOL, CidMismatchError, FetchError, FragmentStore, MAX_REQUEST_BYTES, decodeBlobRequest, encodeChunkFrame, fetchByCid,
  fetchManifestAndFragments, handleBlobProtocol, hostedBlobCids, provideBlobs, tokenizerFilesOf,
} from '../../net/store/index.js';
import { startSwarm, stopSwarm, type Swarm } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer } from '../gateway/fixtures.js';

const tmp = tempDir('gridpipe-store-tok-');
afterAll(() => tmp.cleanup());

let dir: string;
let manifest: Manifest;
let manifestCid: string;
let tok: { cid: string; file: string }; // tokenizer.json
let config: { cid: string; file: string }; // tokenizer_config.json

beforeAll(async () => {
  const t = writeTestTokenizer(path.join(tmp.dir, 'hf'));
  const model = path.join(tmp.dir, 'chat.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: t.vocabSize, maxPositions: 32, kvCache: true, seed: 5, name: 'tok-chat' }), model);
  dir = path.join(tmp.dir, 'frag');
  ({ manifest, manifestCid } = await fragmentModel(model, dir, { parts: 2, tokenizer: t.tokenizerFile }));
  expect(manifest.tokenizer.kind).toBe('hf');
  tok = { cid: manifest.tokenizer.cid!, file: path.join(dir, manifest.tokenizer.file!) };
  config = { cid: manifest.tokenizer.config!.cid, file: path.join(dir, manifest.tokenizer.config!.file) };
});

let storeNo = 0;
function newStore(): Promise<FragmentStore> {
  return FragmentStore.open({ dataDir: path.join(tmp.dir, `store-${storeNo++}`), registry: new Registry() });
}

describe('tokenizer files in the store', () => {
  it('the manifest names them; importing the folder stores them, verified, with the fragments', async () => {
    expect(tokenizerFilesOf(manifest).map((f) => f.cid)).toEqual([tok.cid, config.cid]);
    expect(await cidOfFile(tok.file)).toBe(tok.cid);
    const store = await newStore();
    const r = await store.importManifestDir(dir);
    expect(r.cids).toEqual([manifestCid, ...manifest.fragments.map((f) => f.cid), tok.cid, config.cid]);
    for (const cid of [tok.cid, config.cid]) expect(await cidOfFile((await store.get(cid))!)).toBe(cid);
    // What a host of any span should announce includes them.
    expect(hostedBlobCids(manifestCid, manifest, [1])).toEqual([manifestCid, manifest.fragments[1].cid, tok.cid, config.cid]);
  });

  it('a folder whose tokenizer.json does not match its CID is refused, and the bad bytes are not stored', async () => {
    const bad = path.join(tmp.dir, 'frag-bad-tok');
    await mkdir(bad, { recursive: true });
    for (const name of await readdir(dir)) await copyFile(path.join(dir, name), path.join(bad, name));
    const json = JSON.parse(readFileSync(path.join(bad, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    json.model.vocab.evil = 0; // a tampered vocabulary
    await writeFile(path.join(bad, 'tokenizer.json'), JSON.stringify(json));
    const store = await newStore();
    await expect(store.importManifestDir(bad)).rejects.toBeInstanceOf(CidMismatchError);
    expect(await store.has(tok.cid)).toBe(false);
    expect((await store.list()).length).toBe(1 + manifest.fragments.length); // manifest and fragments only
  });
});

interface Peer { host: GridHost; store: FragmentStore }

async function storeSwarm(n: number): Promise<{ swarm: Swarm; peers: Peer[] }> {
  const swarm = await startSwarm(n);
  const peers: Peer[] = [];
  for (const host of swarm.hosts) {
    const store = await newStore();
    await handleBlobProtocol(host.node, store);
    peers.push({ host, store });
  }
  return { swarm, peers };
}

describe('a host that fetched the model by CID', () => {
  let swarm: Swarm | undefined;
  let peers: Peer[];
  beforeAll(async () => {
    ({ swarm, peers } = await storeSwarm(3));
  });
  afterAll(() => stopSwarm(swarm));

  it('fetches the tokenizer files with the manifest (verified), then serves and provides them', async () => {
    const [a, b, c] = peers;
    // a announces only the manifest and fragments, as hosts did before tokenizers travelled: b must still get
    // the tokenizer files, from the peer that delivered the manifest.
    await a.store.importManifestDir(dir);
    expect(await provideBlobs(a.host.node, [manifestCid, ...manifest.fragments.map((f) => f.cid)])).toEqual([]);

    const r = await fetchManifestAndFragments(b.host.node, b.store, manifestCid, [0]);
    expect(r.tokenizer.map((t) => [t.cid, t.error])).toEqual([[tok.cid, undefined], [config.cid, undefined]]);
    for (const t of r.tokenizer) expect(await cidOfFile(t.path!)).toBe(t.cid);
    expect(await b.store.has(tok.cid)).toBe(true);

    // c gets tokenizer.json from b alone (a is excluded), found through the DHT: b provided what it fetched.
    const fromB = await fetchByCid(c.host.node, c.store, tok.cid, { badPeers: new Set([a.host.peerId.toString()]) });
    expect(fromB.attempts.map((x) => [x.peer, x.outcome])).toEqual([[b.host.peerId.toString(), 'complete']]);
    expect(readFileSync(fromB.path).equals(readFileSync(tok.file))).toBe(true);
  });
});

describe('a provider that serves a corrupt tokenizer', () => {
  let swarm: Swarm | undefined;
  let peers: Peer[];
  beforeAll(async () => {
    ({ swarm, peers } = await storeSwarm(2));
  });
  afterAll(() => stopSwarm(swarm));

  /** A blob server for the model's folder that flips one byte of tokenizer.json. */
  function evilHandler(): (stream: Stream) => Promise<void> {
    const files = new Map<string, string>([
      [manifestCid, path.join(dir, MANIFEST_FILE)], [tok.cid, tok.file], [config.cid, config.file],
      ...manifest.fragments.map((f): [string, string] => [f.cid, path.join(dir, f.file)]),
    ]);
    return async (stream: Stream) => {
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES });
      const req = decodeBlobRequest((await lp.read()).subarray());
      const bytes = readFileSync(files.get(req.cid)!);
      if (req.cid === tok.cid) bytes[bytes.length >> 1] ^= 0x01;
      const data = bytes.subarray(req.offset);
      if (!stream.send(encodeChunkFrame({ cid: req.cid, offset: req.offset, data, totalSize: bytes.length, last: true }))) {
        await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }));
      }
      await stream.close();
    };
  }

  it('is rejected by CID: the fragments arrive, the tokenizer does not, and nothing corrupt is stored', async () => {
    const [evil, d] = peers;
    await evil.host.node.unhandle(BLOB_PROTOCOL);
    await evil.host.node.handle(BLOB_PROTOCOL, evilHandler());

    const err = await fetchByCid(d.host.node, d.store, tok.cid, { peers: [evil.host.peerId], provide: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FetchError);
    expect((err as FetchError).attempts.map((a) => a.outcome)).toEqual(['bad-bytes']);
    expect(await d.store.has(tok.cid)).toBe(false);

    const r = await fetchManifestAndFragments(d.host.node, d.store, manifestCid, undefined, { peers: [evil.host.peerId], provide: false });
    expect(r.fragments).toHaveLength(manifest.fragments.length);
    expect(r.tokenizer[0].cid).toBe(tok.cid);
    expect(r.tokenizer[0].path).toBeUndefined();
    expect(r.tokenizer[0].error).toMatch(/do not match the CID/);
    expect(await d.store.has(tok.cid)).toBe(false);
    expect(await d.store.partialSize(tok.cid)).toBe(0);
  });
});
