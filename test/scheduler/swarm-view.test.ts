/**
 * Issue 14, one swarm view per process: the gateway's catalog and every model's discovery share one DHT
 * sweep per refresh, and a peer one session bans is avoided by every other session of the process. Real
 * parts: a libp2p swarm on 127.0.0.1 (test/helpers/swarm.ts), a real supplier serving two models, the real
 * catalog and grid client, and a peer whose signed record claims both models at a million GFLOP/s but that
 * serves no exec protocol (routing prefers it until it is banned).
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Supplier } from '../../node/supplier.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { ModelCatalog } from '../../gateway/catalog.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { buildRecord, signRecord } from '../../net/capacity/record.js';
import { findRecord, findSupplierPeers, provideSupplier, publishRecord } from '../../net/capacity/dht.js';
import type { Manifest } from '../../fragments/manifest.js';
import { tempDir } from '../helpers/tmp.js';
import { startSwarm, stopSwarm, testLogger, waitFor, type Swarm } from '../helpers/swarm.js';
import { smallGpt } from '../payments/helpers.js';

interface Model { modelPath: string; fragDir: string; manifest: Manifest; manifestCid: string }

const tmp = tempDir('gridpipe-swarm-view-');
const PROMPT = [5, 6, 7];
const MAX_TOKENS = 3;
let swarm: Swarm;
let supplier: Supplier;
let client: GridClient;
let catalog: ModelCatalog;
let modelA: Model;
let modelB: Model;

function genOptions(m: Model): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: m.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

async function localTokens(m: Model): Promise<number[]> {
  const runner = await LocalModelRunner.open(m.modelPath, m.manifest.statefulPairs);
  const out: number[] = [];
  try {
    for await (const t of generate(runner, genOptions(m))) out.push(t.id);
  } finally {
    await runner.close();
  }
  return out;
}

async function gridRun(m: Model, open: OpenModel): Promise<{ tokens: number[]; failovers: number; peers: Set<string> }> {
  const session = client.session(open, PROMPT.length + MAX_TOKENS);
  const tokens: number[] = [];
  try {
    for await (const t of generate(session, genOptions(m))) tokens.push(t.id);
  } finally {
    await session.close();
  }
  return { tokens, failovers: session.failovers, peers: new Set(session.route.map((r) => r.peerId)) };
}

function opened(m: Model): OpenModel {
  const found = catalog.all().find((c) => c.open.manifestCid === m.manifestCid);
  if (!found) throw new Error(`the catalog has not opened ${m.manifestCid}`);
  return found.open;
}

beforeAll(async () => {
  for (const d of ['a', 'b']) mkdirSync(path.join(tmp.dir, d));
  modelA = await smallGpt(path.join(tmp.dir, 'a'), 2);
  modelB = await smallGpt(path.join(tmp.dir, 'b'), 3);
  const logger = testLogger();
  // Two plain hosts: a DHT seed and the impostor (index 1), which publishes its record later.
  swarm = await startSwarm(2);
  const bootstrap = swarm.hosts[0].addresses();
  supplier = await Supplier.start({
    network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger, placement: false, gflops: 10,
    dataDir: path.join(tmp.dir, 'supplier'), bootstrap, host: [modelA.fragDir, modelB.fragDir],
  });
  client = await GridClient.connect({
    bootstrap, network: 'local', logger,
    // No background sweep and bans that outlast the test: every sweep counted below is one somebody asked for.
    discovery: { lookupTimeoutMs: 5000, refreshMs: 10 * 60_000 },
    // The impostor must be tried first (this file tests bans, not trust in claims): its advertised speed counts in
    // full here, where by default a claim seeds at most 10 GFLOP/s and the real supplier could tie or win.
    estimates: { banBaseMs: 10 * 60_000, maxAdvertisedGflops: 1e7 },
  });
  // What a sweep reads: the supplier among the providers of the suppliers key, and its record (not counted as sweeps).
  await waitFor(async () => (await findSupplierPeers(client.host, { timeoutMs: 2000 })).includes(supplier.peerId)
    && (await findRecord(client.host, supplier.peerId, { timeoutMs: 2000 })) !== undefined, 'the supplier\'s record', 60_000, 200);
  catalog = new ModelCatalog(client, { refreshEveryMs: 0, logger });
}, 180_000);

afterAll(async () => {
  await catalog?.close();
  await client?.close();
  await supplier?.stop().catch(() => undefined);
  await stopSwarm(swarm);
  tmp.cleanup();
});

describe('one swarm view per process', () => {
  it('one DHT sweep per refresh serves the catalog and both models\' discoveries', async () => {
    const view = client.swarm;
    const before = view.sweeps;
    // The catalog's first sweep finds both models; opening them (manifest fetch, first hosts) reads that sweep.
    await catalog.start();
    expect(view.sweeps - before).toBe(1);
    expect(catalog.all().map((m) => m.open.manifestCid).sort()).toEqual([modelA.manifestCid, modelB.manifestCid].sort());
    for (const m of [modelA, modelB]) expect(opened(m).discovery.current.map((s) => s.peerId)).toEqual([supplier.peerId]);

    // A second host of both models appears: the impostor's signed record, claiming every fragment at 1e6 GFLOP/s.
    const impostor = swarm.hosts[1];
    const fragments = [modelA, modelB].flatMap((m) => m.manifest.fragments.map((f) => ({ cid: f.cid, manifestCid: m.manifestCid, index: f.index, stepsPerSecond: 1e6, load: 0, activeSessions: 0 })));
    const record = buildRecord(impostor.peerId, { pricePerGflop: '0', addrs: impostor.addresses(), benchmark: { matmulGflops: 1e6, executionProvider: 'cpu', measuredAtMs: Date.now() }, fragments });
    expect((await publishRecord(impostor, await signRecord(impostor.privateKey, record))).ok).toBe(true);
    await provideSupplier(impostor);

    const next = view.sweeps;
    await catalog.refresh(true);
    // One sweep, and every consumer saw it: the catalog's coverage and each open model's hosts.
    expect(view.sweeps - next).toBe(1);
    for (const m of [modelA, modelB]) {
      expect(new Set(opened(m).discovery.current.map((s) => s.peerId))).toEqual(new Set([supplier.peerId, impostor.peerId.toString()]));
      expect(catalog.all().find((c) => c.open.manifestCid === m.manifestCid)!.hosts).toBe(2);
    }
  }, 120_000);

  it('a peer banned by one model\'s session is avoided by the other model\'s session and the next session of the same model', async () => {
    const impostor = swarm.hosts[1].peerId.toString();
    expect(client.swarm.isBanned(impostor)).toBe(false);

    // Model A: routing prefers the impostor (fastest claim); it cannot open a session, is banned, and A fails over.
    const first = await gridRun(modelA, opened(modelA));
    expect(first.tokens).toEqual(await localTokens(modelA));
    expect(first.failovers).toBeGreaterThanOrEqual(1);
    expect(first.peers).toEqual(new Set([supplier.peerId]));
    expect(client.swarm.isBanned(impostor)).toBe(true);

    // Model B, served by the impostor too: the shared view's ban keeps it off B's route from the start.
    const other = await gridRun(modelB, opened(modelB));
    expect(other.tokens).toEqual(await localTokens(modelB));
    expect(other.failovers).toBe(0);
    expect(other.peers).toEqual(new Set([supplier.peerId]));

    // And the next session of model A.
    const again = await gridRun(modelA, opened(modelA));
    expect(again.tokens).toEqual(first.tokens);
    expect(again.failovers).toBe(0);
    expect(again.peers).toEqual(new Set([supplier.peerId]));
  }, 120_000);

  it('a failure\'s ban never leaves a fragment without a host: with every host banned the soonest-ending ban is lifted; a condemned host stays out', async () => {
    const impostor = swarm.hosts[1].peerId.toString();
    // The impostor is banned from the test before; now the only real host fails once too (as under load, when
    // every host of a fragment can time out opening a session): both banned, for ten minutes and more.
    client.swarm.reportFailure(supplier.peerId);
    expect([client.swarm.isBanned(impostor), client.swarm.isBanned(supplier.peerId)]).toEqual([true, true]);
    const run = await gridRun(modelA, opened(modelA));
    expect(run.tokens).toEqual(await localTokens(modelA));
    expect(run.peers).toEqual(new Set([supplier.peerId]));
    expect(client.swarm.isBanned(supplier.peerId), 'its reply lifted its ban').toBe(false);

    // Condemned (a wrong output, garbage replies) is another matter: with both hosts condemned no ban is lifted,
    // there is no route, however few hosts are left.
    for (const peer of [supplier.peerId, impostor]) client.swarm.estimates.condemn(peer, 60_000);
    await expect(gridRun(modelA, opened(modelA))).rejects.toThrow(/fragment 0/);
  }, 120_000);
});
