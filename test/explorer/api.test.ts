/**
 * The explorer's API over real HTTP (fastify on 127.0.0.1) and real libp2p hosts on loopback: a supplier's
 * record makes it a peer of the Network view, online while it answers pings and offline once its host stops;
 * the Models view counts online replicas, marks weak fragments and gives each expert of a real
 * mixture-of-experts manifest its replicas; the page is served with a policy that
 * loads nothing from elsewhere; the live stream (SSE) carries a request published on the gateway's feed and
 * ends when the server closes.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify, { type FastifyInstance } from 'fastify';
import { createGridHost, type GridHost } from '../../net/host.js';
import type { CapacityRecord } from '../../net/capacity/record.js';
import { SwarmView } from '../../scheduler/swarm-view.js';
import { EventFeed } from '../../gateway/feed.js';
import { Explorer } from '../../explorer/explorer.js';
import { EXPLORER_API, registerExplorerRoutes } from '../../explorer/routes.js';
import type { ModelView, ModelsView, NetworkView } from '../../explorer/types.js';
import { eventually } from '../payments/helpers.js';
import { testLogger } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';

let supplierA: GridHost;
let supplierB: GridHost;
let watcher: GridHost;
let app: FastifyInstance;
let base: string;
const feed = new EventFeed();
let explorer: Explorer;
const tmp = tempDir('gridpipe-explorer-api-');
let moe: { manifest: Manifest; manifestCid: string };

function record(host: GridHost, fragments: number[], moeFragments: number[] = []): CapacityRecord {
  return {
    peerId: host.peerId.toString(), addrs: host.addresses(), pricePerGflop: '5', stakingAddress: '', softwareVersion: 'test', issuedAtMs: Date.now(), expiresAtMs: Date.now() + 3600_000, sequence: 1, withdrawn: false,
    hardware: { gpus: [], cpuCores: 2, cpuModel: 'test cpu', memoryTotalBytes: 8 << 30, memoryFreeBytes: 4 << 30, executionProviders: ['cpu'], platform: 'linux-x64' },
    benchmark: { matmulGflops: 12.5, executionProvider: 'cpu', measuredAtMs: Date.now() },
    limits: { maxMemoryBytes: 1 << 30, maxSessions: 8, threads: 2, gpuShare: 0, hours: '', paused: false },
    fragments: [
      ...fragments.map((index) => ({ cid: `frag-${index}`, manifestCid: 'model-cid', index, stepsPerSecond: 10, load: 0, activeSessions: 0 })),
      ...moeFragments.map((index) => ({ cid: moe.manifest.fragments[index].cid, manifestCid: moe.manifestCid, index, stepsPerSecond: 5, load: 0, activeSessions: 0 })),
    ],
  };
}

beforeAll(async () => {
  // A real mixture-of-experts manifest: its expert groups name the fragments each expert runs in.
  const modelPath = `${tmp.dir}/moe.onnx`;
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 32, heads: 2, experts: 3, topK: 1, kvCache: true, seed: 7 }), modelPath);
  moe = await fragmentModel(modelPath, `${tmp.dir}/moe`, { parts: 2 });
  const logger = testLogger();
  [supplierA, supplierB, watcher] = await Promise.all([0, 1, 2].map(() => createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger })));
  const records = [record(supplierA, [0, 1], [0, 1]), record(supplierB, [0], [1])];
  const swarm = new SwarmView(async () => records);
  explorer = new Explorer({ swarm, pinger: watcher.node, feed, pingEveryMs: 200, manifests: () => [moe] });
  app = Fastify();
  registerExplorerRoutes(app, explorer, { statsEveryMs: 60_000 });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});

afterAll(async () => {
  explorer?.close();
  await app?.close();
  await Promise.all([supplierA, supplierB, watcher].map((h) => h?.stop().catch(() => undefined)));
  tmp.cleanup();
});

const getJson = async <T>(path: string): Promise<T> => (await (await fetch(`${base}${EXPLORER_API}/${path}`)).json()) as T;

describe('explorer API', () => {
  it('Network: every supplier from the records, online by ping, with hardware, price and limits', async () => {
    const net = await getJson<NetworkView>('network');
    expect(net.peers.map((p) => p.peerId).sort()).toEqual([supplierA, supplierB].map((h) => h.peerId.toString()).sort());
    for (const p of net.peers) {
      expect(p.online).toBe(true);
      expect(p.hardware?.executionProviders).toEqual(['cpu']);
      expect(p.benchmark?.matmulGflops).toBe(12.5);
      expect(p.limits?.maxSessions).toBe(8);
      expect(p.pricePerGflop).toBe('5');
    }
  });

  it('Models: replicas and coverage per fragment; a fragment with one online host is weak', async () => {
    const { models } = await getJson<ModelsView>('models');
    expect(models).toHaveLength(2);
    const plain = models.find((m) => m.manifestCid === 'model-cid')!;
    expect(plain.fragments.map((f) => [f.index, f.replicas, f.stepsPerSecond, f.weak])).toEqual([[0, 2, 20, false], [1, 1, 10, true]]);
    expect(plain.servable).toBe(true);
    expect(plain.name).toBeUndefined(); // no manifest known: what the records say only
    expect((await fetch(`${base}${EXPLORER_API}/models/model-cid`)).status).toBe(200);
    expect((await fetch(`${base}${EXPLORER_API}/models/nothing`)).status).toBe(404);
  });

  it('Models: a manifest\'s name, tokenizer, synthetic flag and expert groups, each expert with its online replicas', async () => {
    const m = await getJson<ModelView>(`models/${moe.manifest.name}`);
    expect(m).toMatchObject({ manifestCid: moe.manifestCid, tokenizer: moe.manifest.tokenizer.kind, synthetic: true, expertGroups: 2 });
    expect(m.fragments.map((f) => [f.cid, f.replicas])).toEqual([[moe.manifest.fragments[0].cid, 1], [moe.manifest.fragments[1].cid, 2]]);
    expect(m.experts.map((g) => g.layer)).toEqual(moe.manifest.expertGroups.map((g) => g.layer));
    for (const [gi, g] of m.experts.entries()) {
      expect(g.experts.map((e) => e.fragments)).toEqual(moe.manifest.expertGroups[gi].experts.map((e) => e.fragments));
      for (const e of g.experts) expect(e.replicas).toBe(Math.min(...e.fragments.map((f) => m.fragments[f].replicas)));
    }
  });

  it('a supplier whose host stops turns offline, and its fragments lose the replica', async () => {
    const id = supplierA.peerId.toString();
    await supplierA.stop();
    await eventually(async () => (await getJson<NetworkView>('network')).peers.find((p) => p.peerId === id)?.online === false, 'the stopped supplier to turn offline', 30_000);
    const peer = await getJson<{ peer: { online: boolean; lastSeenMs?: number } }>(`peers/${id}`);
    expect(peer.peer.online).toBe(false);
    expect(peer.peer.lastSeenMs).toBeGreaterThan(0);
    const { models } = await getJson<ModelsView>('models');
    const plain = models.find((m) => m.manifestCid === 'model-cid')!;
    expect(plain.fragments.map((f) => f.replicas)).toEqual([1, 0]);
    expect(plain.servable).toBe(false);
    expect(models.find((m) => m.manifestCid === moe.manifestCid)!.fragments.map((f) => f.replicas)).toEqual([0, 1]);
  });

  it('serves the page with a policy that loads nothing from another origin', async () => {
    const res = await fetch(`${base}/explorer/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
    const html = await res.text();
    expect(html).toContain('app.js');
    expect(html).not.toMatch(/https?:\/\//);
    const js = await (await fetch(`${base}/explorer/app.js`)).text();
    expect(js.length).toBeGreaterThan(10_000);
    expect((await fetch(`${base}/explorer/secrets.json`)).status).toBe(404);
  });

  it('the live stream carries a request published on the gateway feed', async () => {
    const controller = new AbortController();
    const res = await fetch(`${base}${EXPLORER_API}/live/stream`, { signal: controller.signal });
    const reader = res.body!.getReader();
    let text = '';
    const got = (async () => {
      while (!text.includes('event: request')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
    })();
    await eventually(async () => text.includes('live stream'), 'the stream to open', 10_000);
    feed.publish({ event: 'request.started', requestId: 'req-1', at: Date.now(), endpoint: '/v1/completions', model: 'm', key: 'alice', stream: true });
    await got;
    controller.abort();
    const data = JSON.parse(/event: request\ndata: (.*)\n/.exec(text)![1]) as { requestId: string; state: string };
    expect(data).toMatchObject({ requestId: 'req-1', state: 'running' });
    expect(text).not.toContain('alice');
  });

  it('a server closing ends its open live streams (a page left open does not hold the close)', async () => {
    const other = Fastify();
    registerExplorerRoutes(other, explorer);
    await other.listen({ port: 0, host: '127.0.0.1' });
    const address = other.server.address();
    const res = await fetch(`http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}${EXPLORER_API}/live/stream`);
    const reader = res.body!.getReader();
    await reader.read(); // the stream's opening comment
    await other.close();
    let done = false;
    while (!done) done = (await reader.read()).done;
    expect(done).toBe(true);
  });
});
