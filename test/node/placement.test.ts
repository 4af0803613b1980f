/**
 * Placement end to end: `gridpipe supply --host <manifest CID>` without `--fragments`, as real processes
 * on 127.0.0.1. A seed node (in this test) holds a 6-fragment model's blobs and runs the DHT, but hosts
 * nothing, so the model starts with no host at all. Suppliers that can each hold 2 fragments join one by
 * one and cover it without choosing the same span while a gap is open; when a sole host leaves (SIGTERM
 * withdraws its record), the agent of another supplier moves into the gap after two checks agree; and a
 * balanced swarm stays put over several check intervals. Before that, the pure pieces the agent rests on.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { readManifest } from '../../fragments/manifest-file.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { FragmentStore } from '../../net/store/fragment-store.js';
import { handleBlobProtocol } from '../../net/store/blob-protocol.js';
import { findAllRecords } from '../../net/capacity/dht.js';
import { buildRecord, type CapacityRecord } from '../../net/capacity/record.js';
import type { PlacementStatus } from '../../node/placement/index.js';
import { placementModelOf, type ModelPlacementInfo } from '../../policy/placement-model.js';
import { swarmFromRecords, settledHolders, joiningFragment, type Span } from '../../net/capacity/swarm.js';
import { chooseSpan, coverage, shouldMove } from '../../policy/placement.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';

describe('placement pieces', () => {
  const model = { fragmentBytes: [4, 4, 4, 4, 4, 4] };
  const server = (peerId: string, start: number, end: number, throughput = 10): { peerId: string; start: number; end: number; throughput: number; memoryBytes: number } => ({ peerId, start, end, throughput, memoryBytes: 8 });

  it('never moves the last host of a fragment away, even while another fragment has no host', () => {
    // b is the only host of 2..3; fragments 4..5 have none. Moving b there would only move the gap.
    const swarm = [server('a', 0, 2), server('b', 2, 4)];
    expect(shouldMove(swarm[1], swarm, model).move).toBe(false);
    // with a second host of 2..3, one of them moves into the gap
    const more = [...swarm, server('c', 2, 4)];
    const check = shouldMove(more[2], more, model);
    expect(check.move).toBe(true);
    expect(check.target).toEqual({ start: 4, end: 6 });
  });

  it('may leave a shared fragment while keeping one it alone hosts', () => {
    // d hosts 1..2 (fragment 2 alone); moving to 2..3 keeps fragment 2 and covers the gap at 3.
    const swarm = [server('a', 0, 2), server('d', 1, 3), server('c', 4, 6)];
    const check = shouldMove(swarm[1], swarm, model);
    expect(check).toMatchObject({ move: true, target: { start: 2, end: 4 } });
  });

  it('weighs fragments by cost and honours a span-length cap', () => {
    // fragment 1 costs 4× the others: one server there adds a quarter of the steps/s
    const costly = { fragmentBytes: [1, 1, 1, 1], fragmentCost: [1, 4, 1, 1] };
    const tau = coverage([server('a', 0, 4)], 4, costly.fragmentCost);
    expect(Array.from(tau)).toEqual([10, 2.5, 10, 10]);
    expect(chooseSpan(tau, costly, 100, 1)).toEqual({ start: 1, end: 2 });
    const capped = shouldMove({ ...server('b', 2, 3), maxLength: 1, memoryBytes: 100 }, [server('a', 0, 4), { ...server('b', 2, 3), maxLength: 1, memoryBytes: 100 }], costly, 0.99);
    expect(capped.target).toEqual({ start: 1, end: 2 });
  });

  it('reads members from records: joining fragments apart, bad CIDs, paused and withdrawn suppliers ignored', () => {
    const info: ModelPlacementInfo = { fragmentBytes: [1, 1, 1, 1], fragmentCost: [2, 2, 2, 2], fragmentCids: ['c0', 'c1', 'c2', 'c3'] };
    const frag = (index: number, cid = `c${index}`) => ({ cid, manifestCid: 'm', index, stepsPerSecond: 5, load: 0, activeSessions: 0 });
    const records: CapacityRecord[] = [
      buildRecord('p1', { fragments: [frag(0), frag(1), joiningFragment(frag(2))] }),
      buildRecord('p2', { fragments: [frag(3, 'forged')] }),
      buildRecord('p3', { fragments: [frag(3)], limits: { maxMemoryBytes: 1, maxSessions: 1, threads: 1, gpuShare: 1, hours: '', paused: true } }),
      buildRecord('p4', { fragments: [frag(3)], withdrawn: true }),
      buildRecord('p5', { fragments: [{ ...frag(3), load: 1, activeSessions: 4 }] }),
    ];
    const members = swarmFromRecords(records, 'm', info);
    expect(members.map((m) => [m.peerId, m.online, m.joining, m.throughput])).toEqual([['p1', [0, 1], [2], 10], ['p5', [3], [], 10]]);
    // p1 is moving: of its fragments only the joining one is sure to stay hosted
    expect(settledHolders(members, 4)).toEqual([0, 0, 1, 1]);
  });
});

// ---------------------------------------------------------------- processes

const tmp = tempDir();
let seed: GridHost;
let seedAddr: string;
let manifestCid: string;
let model: ModelPlacementInfo;
const K = 6;

interface Ready { peerId: string; addresses: string[]; admin: string; hosted: { manifestCid: string; index: number }[]; placement: { manifestCid: string; span?: Span }[] }
interface Supplier { name: string; proc: RunningProcess; ready: Ready }
const suppliers: Supplier[] = [];

function startSupplier(name: string): RunningProcess {
  return startGridpipe([
    'supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', seedAddr,
    '--host', manifestCid, '--max-fragments', '2', '--gflops', '10',
    '--join-jitter', '0.2', '--rebalance-every', '1', '--drain', '1', '--admin-port', '0', '--json',
  ]);
}

async function join(name: string): Promise<Supplier> {
  const proc = startSupplier(name);
  const ready = (await proc.ready) as unknown as Ready;
  const s = { name, proc, ready };
  suppliers.push(s);
  return s;
}

/** Fragments each supplier lists for the model (served ones), from the DHT. */
async function listed(): Promise<Map<string, number[]>> {
  const records = await findAllRecords(seed, { timeoutMs: 5000 });
  return new Map(swarmFromRecords(records, manifestCid, model).map((m) => [m.peerId, m.online]));
}

function uncovered(spans: Map<string, number[]>): number[] {
  const have = new Set([...spans.values()].flat());
  return Array.from({ length: K }, (_, j) => j).filter((j) => !have.has(j));
}

async function status(s: Supplier): Promise<PlacementStatus> {
  const res = await fetch(`${s.ready.admin}/status`);
  const body = (await res.json()) as { placement: PlacementStatus[] };
  return body.placement[0];
}

const range = (span: Span): number[] => Array.from({ length: span.end - span.start }, (_, i) => span.start + i);

beforeAll(async () => {
  const file = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 6, dModel: 32, heads: 2, kvCache: true, seed: 5 }), file);
  const fragDir = path.join(tmp.dir, 'frags');
  await fragmentModel(file, fragDir, { parts: K });
  const { manifest } = await readManifest(fragDir);
  expect(manifest.fragments).toHaveLength(K);
  model = placementModelOf(manifest);
  // The seed holds every blob and answers blob requests, but hosts nothing and publishes no record.
  seed = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger: testLogger() });
  const store = await FragmentStore.open({ dataDir: path.join(tmp.dir, 'seed'), logger: testLogger() });
  manifestCid = (await store.importManifestDir(fragDir)).manifestCid;
  await handleBlobProtocol(seed.node, store);
  seedAddr = seed.addresses()[0];
});

afterAll(async () => {
  await Promise.all(suppliers.map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await seed?.stop();
  tmp.cleanup();
});

describe('gridpipe supply with placement (processes on loopback)', () => {
  it('covers a model with no hosts as suppliers join, without two picking the same span while a gap is open', async () => {
    const early: Supplier[] = [];
    for (const name of ['a', 'b', 'c']) {
      const s = await join(name);
      const span = s.ready.placement[0].span!;
      expect(span.end - span.start).toBe(2);
      expect(s.ready.hosted.map((h) => h.index)).toEqual(range(span));
      early.push(s);
    }
    // 3 × 2 fragments: each took a part nobody held, so the model is covered exactly once
    const taken = early.flatMap((s) => range(s.ready.placement[0].span!));
    expect(new Set(taken).size, `spans ${JSON.stringify(early.map((s) => s.ready.placement[0].span))}`).toBe(K);
    await waitFor(async () => uncovered(await listed()).length === 0, 'the model to be covered in the DHT', 20_000, 200);

    // Two more join at once (the join jitter spreads them); the model stays covered.
    await Promise.all([join('d'), join('e')]);
    const spans = await listed();
    expect(spans.size).toBe(5);
    expect(uncovered(spans)).toEqual([]);
  });

  it('after a sole host leaves, another supplier\'s agent moves into the gap once two checks agree', async () => {
    const spans = await listed();
    // a supplier that alone hosts some fragment
    const holders = new Map<number, string[]>();
    for (const [peer, idx] of spans) for (const j of idx) holders.set(j, [...(holders.get(j) ?? []), peer]);
    const soleFragment = [...holders].find(([, peers]) => peers.length === 1)!;
    expect(soleFragment, `holders ${JSON.stringify([...holders])}`).toBeDefined();
    const victim = suppliers.find((s) => s.ready.peerId === soleFragment[1][0])!;
    const gap = spans.get(victim.ready.peerId)!.filter((j) => holders.get(j)!.length === 1);
    const movesBefore = new Map(await Promise.all(suppliers.filter((s) => s !== victim).map(async (s) => [s.name, (await status(s)).moves] as const)));

    expect(await victim.proc.stop('SIGTERM')).toBe(0);
    suppliers.splice(suppliers.indexOf(victim), 1);
    await waitFor(async () => !(await listed()).has(victim.ready.peerId), 'the leaver\'s record to be withdrawn', 20_000, 200);

    const moved: (PlacementStatus & { name: string })[] = [];
    await waitFor(async () => {
      moved.length = 0;
      for (const s of suppliers) {
        const st = await status(s);
        if (st.moves > movesBefore.get(s.name)!) moved.push({ name: s.name, ...st });
      }
      return moved.length > 0 && uncovered(await listed()).length === 0;
    }, `a supplier to move and fragments ${gap.join(',')} to be hosted again`, 40_000, 250);
    for (const m of moved) {
      expect(m.lastMove!.confirmations).toBeGreaterThanOrEqual(2);
      expect(m.span).toEqual(m.lastMove!.to);
    }
    expect(moved.some((m) => gap.some((j) => j >= m.lastMove!.to.start && j < m.lastMove!.to.end))).toBe(true);
    // and the movers serve what their records say
    const after = await listed();
    for (const m of moved) expect(after.get(suppliers.find((s) => s.name === m.name)!.ready.peerId)).toEqual(range(m.span!));
  });

  it('a balanced swarm stays put over several check intervals', async () => {
    // wait until every agent is settled: its last check said stay and nothing is pending
    await waitFor(async () => (await Promise.all(suppliers.map(status))).every((st) => st.lastCheck && !st.lastCheck.move && !st.pending),
      'every agent to settle', 30_000, 250);
    const start = await Promise.all(suppliers.map(status));
    const spans = await listed();
    expect(uncovered(spans)).toEqual([]);
    // several more checks each
    await waitFor(async () => (await Promise.all(suppliers.map(status))).every((st, i) => st.checks >= start[i].checks + 4),
      'four more checks on every supplier', 40_000, 250);
    const end = await Promise.all(suppliers.map(status));
    end.forEach((st, i) => {
      expect(st.moves, suppliers[i].name).toBe(start[i].moves);
      expect(st.abandoned, suppliers[i].name).toBe(start[i].abandoned);
      expect(st.span, suppliers[i].name).toEqual(start[i].span);
    });
    expect(await listed()).toEqual(spans);
  });
});
