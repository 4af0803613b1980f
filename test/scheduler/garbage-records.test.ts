/**
 * Issue 21, "its records ignored for a while", the client's side: a peer whose signed capacity record claims
 * a model at a huge speed but whose exec protocol answers with garbage (a frame that breaks the decoding
 * limits) gets its replies counted as garbage (net/exec/garbage-reply.ts); past the limit the swarm view
 * leaves its records out of every sweep and routing excludes it, until the back-off ends and its record is
 * read again. Real parts: a libp2p swarm on 127.0.0.1 with a DHT, a real supplier, the real grid client and
 * generation; the rogue is a libp2p host of the swarm with a handler from project code.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { Stream } from '@libp2p/interface';
import { Supplier } from '../../node/supplier.js';
import { GridClient } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { buildRecord, signRecord } from '../../net/capacity/record.js';
import { findRecord, findSupplierPeers, provideSupplier, publishRecord } from '../../net/capacity/dht.js';
import { FrameReader, writeFrame } from '../../net/exec/index.js';
import { PROTOCOLS } from '../../proto/grid.js';
import { tempDir } from '../helpers/tmp.js';
import { startSwarm, stopSwarm, testLogger, waitFor, type Swarm } from '../helpers/swarm.js';
import { smallGpt } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-garbage-records-');
const PROMPT = [5, 6, 7];
const MAX_TOKENS = 3;
/** How long the rogue's records are ignored after its garbage. */
const REFUSE_MS = 4_000;
let swarm: Swarm;
let supplier: Supplier;
let client: GridClient;
let model: Awaited<ReturnType<typeof smallGpt>>;
let garbageSent = 0;

function genOptions(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: model.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

/** Answers every exec request with field 0: a reply no client decodes. */
async function garbageHandler(stream: Stream): Promise<void> {
  const reader = new FrameReader(stream, { maxFrameBytes: 1 << 24 });
  try {
    while (await reader.next()) {
      garbageSent++;
      await writeFrame(stream, [Uint8Array.from([2, 0x02, 0x00])]);
    }
  } catch { /* the client hung up */ }
}

beforeAll(async () => {
  model = await smallGpt(tmp.dir, 2);
  const logger = testLogger();
  swarm = await startSwarm(2);
  const bootstrap = swarm.hosts[0].addresses();
  supplier = await Supplier.start({
    network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger, placement: false, gflops: 10,
    dataDir: path.join(tmp.dir, 'supplier'), bootstrap, host: [model.fragDir],
  });
  client = await GridClient.connect({
    bootstrap, network: 'local', logger,
    discovery: { lookupTimeoutMs: 5000, refreshMs: 10 * 60_000 },
    // the rogue's claimed speed counts, so routing tries it first; one garbage reply is enough here
    estimates: { banBaseMs: 100, maxAdvertisedGflops: 1e7 },
    garbage: { garbage: { limit: 1, windowMs: 60_000 }, refuseMs: REFUSE_MS },
  });
  const rogue = swarm.hosts[1];
  await rogue.node.handle(PROTOCOLS.exec, (stream) => { void garbageHandler(stream); });
  const fragments = model.manifest.fragments.map((f) => ({ cid: f.cid, manifestCid: model.manifestCid, index: f.index, stepsPerSecond: 1e6, load: 0, activeSessions: 0 }));
  const record = buildRecord(rogue.peerId, { pricePerGflop: '0', addrs: rogue.addresses(), benchmark: { matmulGflops: 1e6, executionProvider: 'cpu', measuredAtMs: Date.now() }, fragments });
  expect((await publishRecord(rogue, await signRecord(rogue.privateKey, record))).ok).toBe(true);
  await provideSupplier(rogue);
  await waitFor(async () => {
    const peers = await findSupplierPeers(client.host, { timeoutMs: 2000 });
    return peers.includes(supplier.peerId) && peers.includes(rogue.peerId.toString())
      && (await findRecord(client.host, supplier.peerId, { timeoutMs: 2000 })) !== undefined
      && (await findRecord(client.host, rogue.peerId.toString(), { timeoutMs: 2000 })) !== undefined;
  }, 'both records', 60_000, 200);
}, 180_000);

afterAll(async () => {
  await client?.close();
  await supplier?.stop().catch(() => undefined);
  await stopSwarm(swarm);
  tmp.cleanup();
});

describe('records of a peer that sent garbage', () => {
  it('are ignored for a while, and routing goes to the honest supplier; then read again', async () => {
    const rogue = swarm.hosts[1].peerId.toString();
    const open = await client.openModel(model.manifestCid);
    expect((await client.swarm.refresh()).records.map((r) => r.peerId)).toContain(rogue);

    const local: number[] = [];
    const runner = await LocalModelRunner.open(model.modelPath, model.manifest.statefulPairs);
    try { for await (const t of generate(runner, genOptions())) local.push(t.id); } finally { await runner.close(); }

    const session = client.session(open, PROMPT.length + MAX_TOKENS);
    const tokens: number[] = [];
    try { for await (const t of generate(session, genOptions())) tokens.push(t.id); } finally { await session.close(); }
    expect(tokens).toEqual(local);
    expect(garbageSent).toBeGreaterThanOrEqual(1);
    expect(session.failovers).toBeGreaterThanOrEqual(1);
    expect(new Set(session.route.map((r) => r.peerId))).toEqual(new Set([supplier.peerId]));
    expect(client.swarm.garbage.isRefused(rogue)).toBe(true);

    // every sweep while refused leaves the rogue's record out, so the model's hosts are the supplier alone
    const during = await client.swarm.refresh();
    expect(during.records.map((r) => r.peerId)).toEqual([supplier.peerId]);
    expect(open.discovery.current.map((s) => s.peerId)).toEqual([supplier.peerId]);

    // once the back-off ends, its record is read again (it may then be tried, and refused again, on its merits)
    await waitFor(() => !client.swarm.garbage.isRefused(rogue), 'the back-off to end', REFUSE_MS * 3, 100);
    expect((await client.swarm.refresh()).records.map((r) => r.peerId)).toContain(rogue);
  }, 180_000);
});
