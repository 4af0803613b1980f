/**
 * Placement repair of a cut MoE model after an expert host leaves (policy/expert-repair.ts,
 * node/placement/expert-repair.ts): first the pure choice (free memory first, else swapping out fragments others
 * hold twice; nothing to do when every expert has two hosts), then real `gridpipe supply --host <manifest CID>`
 * processes on 127.0.0.1: a supplier told to host experts 4-5 of both layers (--fragments), then three that place
 * themselves around it (9 of the 13 fragments each, so every one is full, each of those experts once more). The
 * first leaves (SIGTERM, its record withdrawn): its experts are down to one host; within a few checks the other
 * three put every expert back on two hosts by themselves (three of 9 hold 27 ≥ 26 = every fragment twice),
 * swapping out fragments held three times, the trunk kept on two; generation then equals the monolithic model
 * with no fallback.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { Manifest } from '../../fragments/manifest.js';
import type { GridHost } from '../../net/host.js';
import { findAllRecords } from '../../net/capacity/dht.js';
import type { CapacityRecord } from '../../net/capacity/record.js';
import { isJoining } from '../../net/capacity/swarm.js';
import { chooseMoeFragments, expertFragmentsOf, holdersOf, underReplicatedExperts } from '../../policy/expert-placement.js';
import { chooseExpertRepair } from '../../policy/expert-repair.js';
import { GridClient } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import type { StepOutcome } from '../../scheduler/session.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { testLogger, waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { MOE_MAX_TOKENS, MOE_PROMPT, moeGenerateOptions, openMoeSeed } from './moe-seed.js';

/** The layout of a 2-layer, 4-expert gpt-moe cut with --parts 3 --experts-per-fragment 1 (as test/moe/placement.test.ts). */
const TRUNK = [0, 1, 6, 7, 12];
const EXPERTS = [2, 8, 3, 9, 4, 10, 5, 11];
const one = { fragmentBytes: new Array<number>(13).fill(1) };

describe('choosing a repair', () => {
  it('nothing to do while every expert has two hosts besides this supplier', () => {
    const holders = holdersOf([[...TRUNK, ...EXPERTS], [...TRUNK, ...EXPERTS]], 13);
    expect(chooseExpertRepair({ model: one, experts: EXPERTS, holders, hosted: [2, 8], memoryBytes: 100 })).toEqual({ adopt: [], drop: [] });
  });

  it('takes the least-held missing experts into free memory, drops nothing', () => {
    const holders = holdersOf([[...TRUNK, 2, 8, 3, 9], [...TRUNK, 2, 8, 4, 10, 5, 11], [3]], 13);
    // 9 has 1 host, 4/10/5/11 have 1, 3 has 2: the ones with fewest hosts first, in fill order, as room allows
    expect(chooseExpertRepair({ model: one, experts: EXPERTS, holders, hosted: [], memoryBytes: 2 })).toEqual({ adopt: [4, 9], drop: [] });
  });

  it('a full supplier swaps out fragments others hold twice (most-held first), never one the swarm still needs', () => {
    // others hold trunk 0 three times, expert 2 twice, trunk 1 once; expert 5 has a single host
    const holders = new Array<number>(13).fill(2);
    holders[0] = 3; holders[1] = 1; holders[5] = 1;
    const repair = chooseExpertRepair({ model: one, experts: EXPERTS, holders, hosted: [0, 1, 2], memoryBytes: 100, maxLength: 3 });
    expect(repair).toEqual({ adopt: [5], drop: [0] });
    // nothing spare (trunk 0 and 1 and expert 2 have one other host each): no swap, the gaps stay
    const tight = [...holders];
    tight[0] = 1; tight[2] = 1; tight[9] = 1;
    expect(chooseExpertRepair({ model: one, experts: EXPERTS, holders: tight, hosted: [0, 1, 2], memoryBytes: 100, maxLength: 3 })).toEqual({ adopt: [], drop: [] });
  });

  it('bytes, not counts: a big expert needs two spare fragments out', () => {
    const model = { fragmentBytes: one.fragmentBytes.map((b, j) => (j === 5 ? 2 : b)) };
    const holders = new Array<number>(13).fill(2);
    holders[5] = 1;
    expect(chooseExpertRepair({ model, experts: EXPERTS, holders, hosted: [0, 1, 2], memoryBytes: 3 })).toEqual({ adopt: [5], drop: [0, 1] });
  });

  it('four full suppliers placed by the join, one leaves: the others, repairing in turn, put every expert back on two hosts and keep the trunk on two', () => {
    const listed: number[][] = [];
    for (let n = 0; n < 4; n++) listed.push(chooseMoeFragments({ model: one, experts: EXPERTS, holders: holdersOf(listed, 13), memoryBytes: 100, maxLength: 9 }));
    listed.splice(worstLeaver(listed), 1);
    expect(underReplicatedExperts(EXPERTS, holdersOf(listed, 13)).length).toBeGreaterThan(0);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < listed.length; i++) {
        const others = listed.filter((_, k) => k !== i);
        const repair = chooseExpertRepair({ model: one, experts: EXPERTS, holders: holdersOf(others, 13), hosted: listed[i], memoryBytes: 100, maxLength: 8 });
        listed[i] = [...listed[i].filter((j) => !repair.drop.includes(j)), ...repair.adopt].sort((a, b) => a - b);
        expect(listed[i].length).toBeLessThanOrEqual(9);
      }
    }
    const holders = holdersOf(listed, 13);
    expect(underReplicatedExperts(EXPERTS, holders)).toEqual([]);
    for (const j of TRUNK) expect(holders[j]).toBeGreaterThanOrEqual(2);
  });

  it('three suppliers of 8 cannot hold 8 experts and 5 trunk fragments twice (26 > 24): no swap takes the trunk below two', () => {
    const listed = [[0, 1, 6, 7, 12, 2, 8, 3], [0, 1, 6, 7, 12, 9, 4, 10], [2, 8, 3, 9, 4, 10, 5, 11]];
    for (let i = 0; i < listed.length; i++) {
      const repair = chooseExpertRepair({ model: one, experts: EXPERTS, holders: holdersOf(listed.filter((_, k) => k !== i), 13), hosted: listed[i], memoryBytes: 100, maxLength: 8 });
      expect(repair, `supplier ${i}`).toEqual({ adopt: [], drop: [] });
    }
  });
});

/** Of suppliers' listed fragments, the one whose leaving leaves the most experts under-replicated. */
function worstLeaver(listed: number[][]): number {
  const gaps = listed.map((_, i) => underReplicatedExperts(EXPERTS, holdersOf(listed.filter((__, k) => k !== i), 13)).length);
  return gaps.indexOf(Math.max(...gaps));
}

// ---------------------------------------------------------------- processes

const tmp = tempDir();
let seed: GridHost;
let manifest: Manifest;
let manifestCid: string;
let fragDir: string;
let expected: number[];
interface Ready { peerId: string; addresses: string[]; hosted: { manifestCid: string; index: number }[] }
const suppliers: { name: string; proc: RunningProcess; ready: Ready }[] = [];

const options = (): GenerateOptions => moeGenerateOptions(manifest);

/** Every live (not withdrawn) supplier's record of the model, from the DHT. */
async function records(): Promise<CapacityRecord[]> {
  return (await findAllRecords(seed, { timeoutMs: 5000 })).filter((r) => !r.withdrawn && r.fragments.some((f) => f.manifestCid === manifestCid));
}

/** The fragments each record lists as served (not joining: a repair announces its new set before it serves it). */
const listedBy = (recs: CapacityRecord[]): number[][] => recs.map((r) => [...new Set(r.fragments.filter((f) => f.manifestCid === manifestCid && !isJoining(f)).map((f) => f.index))]);

beforeAll(async () => {
  ({ fragDir, manifest, manifestCid, seed, expected } = await openMoeSeed(tmp.dir));
});

afterAll(async () => {
  await Promise.all(suppliers.map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await seed?.stop();
  tmp.cleanup();
});

describe('gridpipe supply repairs a cut MoE model\'s placement when an expert host leaves (processes on loopback)', () => {
  it('the cut is the layout the pure tests assume', () => {
    expect(expertFragmentsOf(manifest)).toEqual(EXPERTS);
  });

  it('an expert host leaves; the three full suppliers left put every expert back on two hosts, and the model generates with no fallback', { timeout: 360_000 }, async () => {
    for (const name of ['x', 'a', 'b', 'c']) {
      const placement = name === 'x' ? ['--fragments', '4,5,10,11'] : ['--max-fragments', '9', '--join-jitter', '0.2', '--rebalance-every', '8'];
      const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', seed.addresses()[0],
        '--host', manifestCid, ...placement, '--gflops', '10', '--json']);
      const ready = (await proc.ready) as unknown as Ready;
      suppliers.push({ name, proc, ready });
      await waitFor(async () => (await records()).some((r) => r.peerId === ready.peerId), `${name}'s record in the DHT`, 20_000, 200);
    }
    // A DHT walk on this loaded machine may miss records: read until it sees all four, every expert on two hosts.
    let recs: CapacityRecord[] = [];
    await waitFor(async () => {
      recs = await records();
      return recs.length === 4 && underReplicatedExperts(EXPERTS, holdersOf(listedBy(recs), 13)).length === 0;
    }, 'every expert on two hosts after the joins', 60_000, 250);

    // x leaves (its record is withdrawn): the experts it hosted are down to one host.
    const leaving = suppliers[0].ready.peerId;
    expect(underReplicatedExperts(EXPERTS, holdersOf(listedBy(recs.filter((r) => r.peerId !== leaving)), 13)).length).toBeGreaterThan(0);
    const victim = suppliers.find((s) => s.ready.peerId === leaving)!;
    expect(await victim.proc.stop('SIGTERM')).toBe(0);
    suppliers.splice(suppliers.indexOf(victim), 1);

    let after: number[][] = [];
    await waitFor(async () => {
      after = listedBy((await records()).filter((r) => r.peerId !== leaving));
      return after.length === 3 && underReplicatedExperts(EXPERTS, holdersOf(after, 13)).length === 0;
    }, 'every expert back on two hosts', 120_000, 1000);
    const holders = holdersOf(after, 13);
    for (const f of manifest.fragments) expect(holders[f.index], `fragment ${f.index}`).toBeGreaterThanOrEqual(2);
    for (const l of after) expect(l.length).toBeLessThanOrEqual(9);

    const client = await GridClient.connect({ bootstrap: [seed.addresses()[0]], network: 'local', discovery: { lookupTimeoutMs: 5000 }, logger: testLogger() });
    try {
      const model = await client.openModel(fragDir);
      await waitFor(async () => {
        const spans = await model.discovery.refresh();
        return manifest.fragments.every((f) => spans.filter((s) => s.start <= f.index && f.index < s.end).length >= (EXPERTS.includes(f.index) ? 2 : 1));
      }, 'the repaired placement in the client\'s view', 30_000, 250);
      const session = client.session(model, MOE_PROMPT.length + MOE_MAX_TOKENS);
      const steps: StepOutcome[] = [];
      const tokens: number[] = [];
      try {
        for await (const t of generate({ step: async (...a) => { const r = await session.step(...a); steps.push(r); return r; } }, options())) tokens.push(t.id);
      } finally {
        await session.close();
      }
      expect(tokens).toEqual(expected);
      expect(steps.flatMap((s) => s.experts!.fallbacks)).toEqual([]);
      expect(steps.flatMap((s) => s.experts!.hops).some((h) => h.peerId === leaving)).toBe(false);
    } finally {
      await client.close();
    }
  });
});
