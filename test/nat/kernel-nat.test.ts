/**
 * Issue 19: a supplier behind a real kernel NAT (iptables masquerade in the router namespace,
 * test/helpers/netns.ts `nat: 'kernel'`), beside the user-space symmetric NAT of relay.test.ts. A public supplier
 * with `--relay-server` hosts fragment 0; a supplier at home with `--relay` hosts fragment 1, reachable only
 * through the relay; the client (`gridpipe generate`) runs on the public side.
 * - A client behind a firewall (its port drops new connections from the internet): DCUtR cannot reverse the
 *   connection and has no public address of the supplier to punch towards, so the generation runs through the
 *   relay, with the tokens of the local onnxruntime run.
 * - A reachable client: the supplier's DCUtR dials it through the NAT and the relayed connection becomes a
 *   direct one; the same tokens.
 * - The supplier behind NAT is SIGKILLed mid-generation: the session fails over to a public replica.
 * - AutoNAT v2: a public supplier listening on 0.0.0.0 (an address nobody announced) learns from a peer's
 *   dial-back that it is public; the supplier behind NAT, asked about by its own relay, keeps its slot
 *   (AutoNAT v1's failure, docs/nat.md) and still says it is relayed.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { generate } from '../../scheduler/generate.js';
import { LocalModelRunner } from '../../scheduler/local-runner.js';
import { killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { generateFromPublicSide as generateNat, startNatGrid, type GenerateDone } from '../helpers/nat-grid.js';
import { waitFor } from '../helpers/swarm.js';
import { createNatTopology, kernelNatUnsupportedReason, PUBLIC_IP, type NatTopology } from '../helpers/netns.js';

const unsupported = kernelNatUnsupportedReason();
if (unsupported) console.warn(`[kernel nat] SKIPPED: ${unsupported}`);

const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 24;
/** Public ports besides the relay's and the replica's (test/helpers/nat-grid.ts): a reachable client port, a firewalled one. */
const REACHABLE_CLIENT_PORT = 4003;
const FIREWALLED_CLIENT_PORT = 4009;
const WILDCARD_SUPPLIER_PORT = 4005;

describe.skipIf(unsupported !== undefined)('a supplier behind a kernel NAT (iptables masquerade)', () => {
  const tmp = tempDir();
  let topology: NatTopology;
  let fragDir: string;
  let manifest: Manifest;
  let expected: number[];
  let relayAddr: string;
  let behindNat: { proc: RunningProcess; peerId: string };
  let replicaId: string;

  beforeAll(async () => {
    const modelPath = path.join(tmp.dir, 'gpt.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed: 29 }), modelPath);
    fragDir = path.join(tmp.dir, 'frags');
    manifest = (await fragmentModel(modelPath, fragDir, { parts: 2 })).manifest;
    const runner = await LocalModelRunner.open(modelPath, manifest.statefulPairs);
    expected = [];
    for await (const t of generate(runner, { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: inputNames() })) expected.push(t.id);
    await runner.close();

    topology = createNatTopology({ nat: 'kernel' });
    topology.firewall(FIREWALLED_CLIENT_PORT);
    ({ relayAddr, replicaId, behindNat } = await startNatGrid(topology, tmp.dir, fragDir));
  });

  afterAll(async () => {
    await killAll();
    topology?.destroy();
    tmp.cleanup();
  });

  function inputNames(): string[] {
    return manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
  }

  /** `gridpipe generate` on the public side (test/helpers/nat-grid.ts). */
  function generateFromPublicSide(clientPort: number, onToken?: (n: number) => void): Promise<GenerateDone> {
    return generateNat(topology, { relayAddr, replicaId, behindNat }, { fragDir, prompt: PROMPT, maxTokens: MAX_TOKENS, clientPort }, onToken);
  }

  it('a firewalled client is served through the relay (a limited connection): the tokens of the local run', async () => {
    const done = await generateFromPublicSide(FIREWALLED_CLIENT_PORT);
    expect(done.tokens).toEqual(expected);
    const hop = done.route.find((r) => r.peerId === behindNat.peerId);
    expect(hop, JSON.stringify(done.route)).toBeDefined();
    expect(hop!.connection).toBe('relayed');
  });

  it('a reachable client goes direct after DCUtR through the NAT: the same tokens', async () => {
    const done = await generateFromPublicSide(REACHABLE_CLIENT_PORT);
    expect(done.tokens).toEqual(expected);
    const hop = done.route.find((r) => r.peerId === behindNat.peerId);
    expect(hop, JSON.stringify(done.route)).toBeDefined();
    expect(hop!.connection).toBe('direct');
  });

  it('AutoNAT v2: a supplier on 0.0.0.0 learns it is public; the one behind NAT keeps its relay slot', async () => {
    const open = topology.gridpipe(topology.pub, ['supply', '--data', path.join(tmp.dir, 'wildcard'), '--listen', `/ip4/0.0.0.0/tcp/${WILDCARD_SUPPLIER_PORT}`,
      '--bootstrap', relayAddr, '--host', fragDir, '--fragments', '0', '--json']);
    const ready = (await open.ready) as { reachability?: string };
    expect(ready.reachability).not.toBe('public'); // nobody announced it: unverified at start
    await waitFor(() => /"reachability":"public"/.test(open.output()), 'AutoNAT v2 to verify the supplier\'s public address', 60_000, 100);
    const line = open.output().split('\n').find((l) => l.includes('"reachability":"public"'))!;
    expect((JSON.parse(line) as { addresses: string[] }).addresses.some((a) => a.startsWith(`/ip4/${PUBLIC_IP}/tcp/${WILDCARD_SUPPLIER_PORT}/`)), line).toBe(true);
    // The supplier behind NAT was asked about by its relay (AutoNAT v2 runs on every connection): it never lost
    // its slot, so it never said anything but relayed (a lost slot reads "unknown").
    const lines = behindNat.proc.output().split('\n').filter((l) => l.startsWith('{') && l.includes('"reachability"'));
    const said = lines.map((l) => (JSON.parse(l) as { reachability: string }).reachability);
    const since = said.indexOf('relayed');
    expect(since).toBeGreaterThanOrEqual(0);
    expect(said.slice(since).every((r) => r === 'relayed'), said.join(' ')).toBe(true);
    expect(behindNat.proc.child.exitCode).toBeNull();
  });

  it('a supplier killed behind NAT mid-generation fails over to a public replica: the same tokens', async () => {
    let killedAt = 0;
    const done = await generateFromPublicSide(FIREWALLED_CLIENT_PORT, (n) => {
      if (n === 4 && !killedAt) {
        killedAt = n;
        behindNat.proc.child.kill('SIGKILL');
      }
    });
    expect(killedAt).toBe(4);
    expect(done.tokens).toEqual(expected);
    expect(done.failovers).toBeGreaterThanOrEqual(1);
    expect(done.route.map((r) => r.peerId)).toContain(replicaId);
    expect(done.route.map((r) => r.peerId)).not.toContain(behindNat.peerId);
  });
});
