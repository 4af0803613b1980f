/**
 * Issue 21 end to end: real supplier processes on 127.0.0.1, one of them started with a test-only fault
 * (GRIDPIPE_TEST_FAULT) that makes it return wrong outputs the way a cheater would. The gateway's verifier
 * re-runs each checked link on another host of the span; a mismatch asks a third; the cheater is condemned
 * (excluded from routing) and honest suppliers never are.
 *
 * Layout: a 4-layer GPT cut into 4 fragments; "0" and "3" on one honest supplier each; the span "1,2" on two
 * honest suppliers and the cheater, so a mismatch always has a referee.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { cidOfFile } from '../../fragments/cid.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { Verifier, type Verdict } from '../../gateway/verify/verifier.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';

const tmp = tempDir();
let fragDir: string;
let manifestCid: string;
let manifest: Manifest;
let bootstrap: string;
let client: GridClient;
let model: OpenModel;
const honest = new Set<string>();
const procs: RunningProcess[] = [];
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 8;

async function start(name: string, fragments: string, hostArg: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<{ peerId: string; proc: RunningProcess; address: string }> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', hostArg, '--fragments', fragments, '--json', ...extra], env);
  procs.push(proc);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  return { peerId: ready.peerId, proc, address: ready.addresses[0] };
}

function options(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

/** One generation through a session the verifier observes; resolves once its checks have run. */
async function generateChecked(verifier: Verifier): Promise<{ tokens: number[]; route: string[] }> {
  const session = client.session(model, PROMPT.length + MAX_TOKENS, { observer: verifier.observe(model, PROMPT.length + MAX_TOKENS) });
  const tokens: number[] = [];
  try {
    for await (const t of generate(session, options())) tokens.push(t.id);
  } finally {
    await session.close();
  }
  await verifier.idle();
  return { tokens, route: session.route.map((r) => r.peerId) };
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed: 21 }), modelPath);
  fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 4 })).manifest;
  manifestCid = await cidOfFile(path.join(fragDir, 'manifest.json'));
  const first = await start('h0', '0', fragDir);
  bootstrap = first.address;
  honest.add(first.peerId);
  const others = await Promise.all([
    start('h3', '3', manifestCid, {}, ['--bootstrap', bootstrap]),
    start('h1', '1,2', manifestCid, {}, ['--bootstrap', bootstrap]),
    start('h2', '1,2', manifestCid, {}, ['--bootstrap', bootstrap]),
  ]);
  for (const o of others) honest.add(o.peerId);
  // Routing must pick the cheater for the test to check it: trust its advertised speed (--gflops below) and
  // assume no round trip before a ping, so a newcomer's estimate beats the honest hosts' measured ones.
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 }, estimates: { maxAdvertisedGflops: 1e7, defaultRttMs: 0 } });
  model = await client.openModel(fragDir);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await Promise.all(procs.map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('verification against cheating suppliers (real processes, GRIDPIPE_TEST_FAULT)', () => {
  it('checks honest suppliers at rate 1 without a single mismatch', async () => {
    await waitFor(async () => (await model.discovery.refresh()).length === 4, 'four suppliers in view', 30_000, 250);
    const verdicts: Verdict[] = [];
    const verifier = new Verifier({ host: client.host, swarm: client.swarm, rate: 1, onVerdict: (v) => verdicts.push(v) });
    let expected: number[] | undefined;
    for (let i = 0; i < 3; i++) {
      const { tokens } = await generateChecked(verifier);
      expected ??= tokens;
      expect(tokens).toEqual(expected);
    }
    expect(verifier.stats.checks).toBeGreaterThanOrEqual(3);
    expect(verifier.stats.checkedSteps).toBeGreaterThanOrEqual(3 * MAX_TOKENS);
    expect(verifier.stats.condemned).toEqual([]);
    expect(verdicts).toEqual([]);
    // Routing learns round trips from the client's own pings (policy/estimates.ts), not from reported compute.
    await waitFor(() => [...honest].some((p) => client.swarm.estimateOf(p).pingSamples > 0), 'a pinged round trip', 10_000);
  });

  for (const fault of ['noise', 'swap', 'skip-layer', 'int8'] as const) {
    it(`a supplier that cheats with "${fault}" is caught by the first check of its work and excluded from routing`, async () => {
      const cheater = await start(`cheat-${fault}`, '1,2', manifestCid, { GRIDPIPE_TEST_FAULT: fault }, ['--bootstrap', bootstrap, '--gflops', '1000000']);
      try {
        await waitFor(async () => (await model.discovery.refresh()).some((s) => s.peerId === cheater.peerId), 'the cheater in view', 30_000, 250);
        const verdicts: Verdict[] = [];
        const verifier = new Verifier({ host: client.host, swarm: client.swarm, rate: 1, onVerdict: (v) => verdicts.push(v) });
        // Routing decides who serves; keep generating until the cheater has served (then it is checked at once).
        let served = 0;
        for (let i = 0; i < 12 && !verdicts.length; i++) {
          const { route } = await generateChecked(verifier);
          if (route.includes(cheater.peerId)) served++;
        }
        expect(served, 'the cheater served a session').toBe(1);
        expect(verdicts).toHaveLength(1);
        expect(verdicts[0].result).toBe('supplier-condemned');
        expect(verdicts[0].supplier).toBe(cheater.peerId);
        // Caught by the numbers, not by a malformed reply.
        expect(verdicts[0].mismatch?.detail.reason).toMatch(/^(mean-error|overlap|max-error)$/);
        expect(honest.has(verdicts[0].checker!) && honest.has(verdicts[0].referee!)).toBe(true);
        expect(client.swarm.isBanned(cheater.peerId)).toBe(true);
        // Excluded at once, for good: later sessions never route to it.
        for (let i = 0; i < 2; i++) expect((await generateChecked(verifier)).route).not.toContain(cheater.peerId);
        expect(verifier.stats.condemned).toEqual([cheater.peerId]);
      } finally {
        await cheater.proc.stop('SIGTERM');
      }
    });
  }
});
