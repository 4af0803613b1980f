/**
 * Placement of a model whose MoE layers are cut apart (policy/expert-placement.ts, node/placement/expert-join.ts):
 * first the pure choice, then real `gridpipe supply --host <manifest CID>` processes on 127.0.0.1 that choose their
 * fragments themselves (no --fragments). A seed node holds the blobs and hosts nothing; four suppliers that may each
 * host 8 of the 13 fragments join one by one. Every expert ends on two or more hosts, the capacity records name the
 * experts each supplier computes, generation equals the monolithic model, and with one expert host killed every
 * expert is still served by its other host: the same tokens and no fallback.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { Manifest } from '../../fragments/manifest.js';
import type { GridHost } from '../../net/host.js';
import { findAllRecords } from '../../net/capacity/dht.js';
import { buildRecord, decodeRecord, encodeRecord, type CapacityRecord } from '../../net/capacity/record.js';
import { spansOf } from '../../scheduler/discovery.js';
import { chooseMoeFragments, expertFragmentsOf, holdersOf, underReplicatedExperts } from '../../policy/expert-placement.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import type { StepOutcome } from '../../scheduler/session.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { MOE_MAX_TOKENS, MOE_PROMPT, moeGenerateOptions, openMoeSeed } from './moe-seed.js';

/** The layout of a 2-layer, 4-expert gpt-moe cut with --parts 3 --experts-per-fragment 1 (checked below). */
const TRUNK = [0, 1, 6, 7, 12];
const EXPERTS_L0 = [2, 3, 4, 5];
const EXPERTS_L1 = [8, 9, 10, 11];
const layoutManifest = (): Pick<Manifest, 'fragments'> => ({
  fragments: Array.from({ length: 13 }, (_, index) => {
    const layer = EXPERTS_L0.includes(index) ? 0 : EXPERTS_L1.includes(index) ? 1 : -1;
    const expert = layer === 0 ? index - 2 : index - 8;
    return { index, ...(layer >= 0 ? { moe: { group: layer, role: 'experts' as const, experts: [expert] } } : {}) } as Manifest['fragments'][number];
  }),
});

describe('expert placement pieces', () => {
  const experts = expertFragmentsOf(layoutManifest());
  const model = { fragmentBytes: new Array<number>(13).fill(1) };

  it('orders expert fragments expert by expert across the layers', () => {
    expect(experts).toEqual([2, 8, 3, 9, 4, 10, 5, 11]);
  });

  it('takes the trunk while it is the weaker kind, then the least-held experts; four suppliers of 8 put every expert on two hosts', () => {
    const listed: number[][] = [];
    for (let n = 0; n < 4; n++) {
      const chosen = chooseMoeFragments({ model, experts, holders: holdersOf(listed, 13), memoryBytes: 100, maxLength: 8 });
      expect(chosen).toHaveLength(8);
      listed.push(chosen);
    }
    expect(listed[0]).toEqual([...TRUNK, 2, 3, 8].sort((a, b) => a - b));
    // the second finds experts with no host: it takes them all first
    expect(listed[1]).toEqual(expect.arrayContaining([4, 5, 9, 10, 11]));
    const holders = holdersOf(listed, 13);
    expect(underReplicatedExperts(experts, holders)).toEqual([]);
    for (const j of TRUNK) expect(holders[j]).toBeGreaterThanOrEqual(2);
  });

  it('fills memory, not a count: a supplier that fits two fragments takes the least-held ones', () => {
    const holders = holdersOf([[...TRUNK, ...experts]], 13);
    holders[9] = 2;
    const chosen = chooseMoeFragments({ model: { fragmentBytes: model.fragmentBytes.map((b, j) => (TRUNK.includes(j) ? 5 : b)) }, experts, holders, memoryBytes: 2 });
    expect(chosen).toEqual([2, 8]);
    expect(chooseMoeFragments({ model, experts, holders, memoryBytes: 0.5 })).toEqual([]);
  });

  it('records name the experts of an expert fragment, and discovery keeps them per span', () => {
    const frag = (index: number, experts?: { group: number; experts: number[] }) => ({ cid: `c${index}`, manifestCid: 'm', index, stepsPerSecond: 1, load: 0, activeSessions: 1, ...(experts ? { experts } : {}) });
    const record = buildRecord('p1', { fragments: [frag(1), frag(2, { group: 0, experts: [0] }), frag(9, { group: 1, experts: [1] })] });
    const back: CapacityRecord = decodeRecord(encodeRecord(record));
    expect(back.fragments.map((f) => f.experts)).toEqual([undefined, { group: 0, experts: [0] }, { group: 1, experts: [1] }]);
    expect(spansOf(back, 'm').map((s) => [s.start, s.end, s.experts])).toEqual([
      [1, 3, [{ fragment: 2, group: 0, experts: [0] }]],
      [9, 10, [{ fragment: 9, group: 1, experts: [1] }]],
    ]);
  });
});

// ---------------------------------------------------------------- processes

const tmp = tempDir();
let seed: GridHost;
let manifest: Manifest;
let manifestCid: string;
let fragDir: string;
let client: GridClient;
let model: OpenModel;
let expected: number[];
interface Ready { peerId: string; addresses: string[]; hosted: { manifestCid: string; index: number }[] }
const suppliers: { name: string; proc: RunningProcess; ready: Ready }[] = [];

const options = (): GenerateOptions => moeGenerateOptions(manifest);

async function generateOnGrid(): Promise<{ tokens: number[]; steps: StepOutcome[] }> {
  const session = client.session(model, MOE_PROMPT.length + MOE_MAX_TOKENS);
  const steps: StepOutcome[] = [];
  const tokens: number[] = [];
  try {
    for await (const t of generate({ step: async (...a) => { const r = await session.step(...a); steps.push(r); return r; } }, options())) tokens.push(t.id);
    return { tokens, steps };
  } finally {
    await session.close();
  }
}

/** Every supplier's record of the model, from the DHT. */
async function records(): Promise<CapacityRecord[]> {
  return (await findAllRecords(seed, { timeoutMs: 5000 })).filter((r) => !r.withdrawn && r.fragments.some((f) => f.manifestCid === manifestCid));
}

beforeAll(async () => {
  ({ fragDir, manifest, manifestCid, seed, expected } = await openMoeSeed(tmp.dir));
});

afterAll(async () => {
  await client?.close();
  await Promise.all(suppliers.map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await seed?.stop();
  tmp.cleanup();
});

describe('gridpipe supply places a cut MoE model by itself (processes on loopback)', () => {
  it('the cut is the layout the pure tests assume', () => {
    expect(expertFragmentsOf(manifest)).toEqual(expertFragmentsOf(layoutManifest()));
  });

  it('four suppliers joining one by one put every expert on two or more hosts; the records name the experts', async () => {
    for (const name of ['a', 'b', 'c', 'd']) {
      const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', seed.addresses()[0],
        '--host', manifestCid, '--max-fragments', '8', '--gflops', '10', '--join-jitter', '0.2', '--json']);
      const ready = (await proc.ready) as unknown as Ready;
      expect(ready.hosted.filter((h) => h.manifestCid === manifestCid)).toHaveLength(8);
      suppliers.push({ name, proc, ready });
      await waitFor(async () => (await records()).some((r) => r.peerId === ready.peerId), `${name}'s record in the DHT`, 20_000, 200);
    }
    const recs = await records();
    expect(recs).toHaveLength(4);
    const holders = holdersOf(recs.map((r) => r.fragments.filter((f) => f.manifestCid === manifestCid).map((f) => f.index)), manifest.fragments.length);
    for (const g of manifest.expertGroups) for (const e of g.experts) expect(holders[e.fragments[0]], `layer ${g.layer} expert ${e.index}`).toBeGreaterThanOrEqual(2);
    for (const f of manifest.fragments) expect(holders[f.index]).toBeGreaterThanOrEqual(1);
    for (const r of recs) {
      for (const f of r.fragments) {
        const moe = manifest.fragments[f.index].moe;
        expect(f.experts).toEqual(moe?.role === 'experts' ? { group: moe.group, experts: moe.experts } : undefined);
      }
    }
  });

  it('generates the monolithic tokens; with one host of every expert it served killed, its other host serves it: no fallback', async () => {
    client = await GridClient.connect({ bootstrap: [seed.addresses()[0]], network: 'local', discovery: { lookupTimeoutMs: 5000 }, logger: testLogger() });
    model = await client.openModel(fragDir);
    const everyFragmentAndSupplier = (spans: { peerId: string; start: number; end: number }[]): boolean =>
      new Set(spans.map((s) => s.peerId)).size === 4 && manifest.fragments.every((f) => spans.some((s) => s.start <= f.index && f.index < s.end));
    await waitFor(async () => everyFragmentAndSupplier(await model.discovery.refresh()), 'the suppliers in the swarm view', 30_000, 250);
    const first = await generateOnGrid();
    expect(first.tokens).toEqual(expected);
    expect(first.steps.flatMap((s) => s.experts!.fallbacks)).toEqual([]);
    // The supplier that answered the most expert calls goes down.
    const calls = new Map<string, number>();
    for (const h of first.steps.flatMap((s) => s.experts!.hops)) if (h.experts.length) calls.set(h.peerId, (calls.get(h.peerId) ?? 0) + 1);
    const victimId = [...calls].sort((a, b) => b[1] - a[1])[0][0];
    const victim = suppliers.find((s) => s.ready.peerId === victimId)!;
    const itsExperts = victim.ready.hosted.filter((h) => manifest.fragments[h.index].moe?.role === 'experts');
    expect(itsExperts.length).toBeGreaterThan(0);
    victim.proc.child.kill('SIGKILL');
    await victim.proc.exited;
    suppliers.splice(suppliers.indexOf(victim), 1);

    const second = await generateOnGrid();
    expect(second.tokens).toEqual(expected);
    expect(second.steps.flatMap((s) => s.experts!.fallbacks)).toEqual([]);
    const hops = second.steps.flatMap((s) => s.experts!.hops);
    expect(hops.some((h) => h.peerId === victimId)).toBe(false);
    // the killed host's experts were still called, on the others
    expect(hops.some((h) => itsExperts.some((x) => x.index === h.fragment))).toBe(true);
  });
});
