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
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { expectFailoverFromNat, expectServedBehindNat, generateFromPublicSide as generateNat, natModel, startNatGrid, type GenerateDone, type NatGrid } from '../helpers/nat-grid.js';
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
  let expected: number[];
  let grid: NatGrid;

  beforeAll(async () => {
    ({ fragDir, expected } = await natModel(tmp.dir, 29, PROMPT, MAX_TOKENS));

    topology = createNatTopology({ nat: 'kernel' });
    topology.firewall(FIREWALLED_CLIENT_PORT);
    grid = await startNatGrid(topology, tmp.dir, fragDir);
  });

  afterAll(async () => {
    await killAll();
    topology?.destroy();
    tmp.cleanup();
  });

  /** `gridpipe generate` on the public side (test/helpers/nat-grid.ts). */
  function generateFromPublicSide(clientPort: number): Promise<GenerateDone> {
    return generateNat(topology, grid, { fragDir, prompt: PROMPT, maxTokens: MAX_TOKENS, clientPort });
  }

  it('a firewalled client is served through the relay (a limited connection): the tokens of the local run', async () => {
    expectServedBehindNat(await generateFromPublicSide(FIREWALLED_CLIENT_PORT), expected, grid, 'relayed');
  });

  it('a reachable client goes direct after DCUtR through the NAT: the same tokens', async () => {
    expectServedBehindNat(await generateFromPublicSide(REACHABLE_CLIENT_PORT), expected, grid, 'direct');
  });

  it('AutoNAT v2: a supplier on 0.0.0.0 learns it is public; the one behind NAT keeps its relay slot', async () => {
    const open = topology.gridpipe(topology.pub, ['supply', '--data', path.join(tmp.dir, 'wildcard'), '--listen', `/ip4/0.0.0.0/tcp/${WILDCARD_SUPPLIER_PORT}`,
      '--bootstrap', grid.relayAddr, '--host', fragDir, '--fragments', '0', '--json']);
    const ready = (await open.ready) as { reachability?: string };
    expect(ready.reachability).not.toBe('public'); // nobody announced it: unverified at start
    await waitFor(() => /"reachability":"public"/.test(open.output()), 'AutoNAT v2 to verify the supplier\'s public address', 60_000, 100);
    const line = open.output().split('\n').find((l) => l.includes('"reachability":"public"'))!;
    expect((JSON.parse(line) as { addresses: string[] }).addresses.some((a) => a.startsWith(`/ip4/${PUBLIC_IP}/tcp/${WILDCARD_SUPPLIER_PORT}/`)), line).toBe(true);
    // The supplier behind NAT was asked about by its relay (AutoNAT v2 runs on every connection): it never lost
    // its slot, so it never said anything but relayed (a lost slot reads "unknown").
    const lines = grid.behindNat.proc.output().split('\n').filter((l) => l.startsWith('{') && l.includes('"reachability"'));
    const said = lines.map((l) => (JSON.parse(l) as { reachability: string }).reachability);
    const since = said.indexOf('relayed');
    expect(since).toBeGreaterThanOrEqual(0);
    expect(said.slice(since).every((r) => r === 'relayed'), said.join(' ')).toBe(true);
    expect(grid.behindNat.proc.child.exitCode).toBeNull();
  });

  it('a supplier killed behind NAT mid-generation fails over to a public replica: the same tokens', async () => {
    await expectFailoverFromNat(topology, grid, { fragDir, prompt: PROMPT, maxTokens: MAX_TOKENS, clientPort: FIREWALLED_CLIENT_PORT }, expected);
  });
});
