/**
 * Issue 19: a supplier behind a NAT router serves generations. In network namespaces (test/helpers/netns.ts):
 * a public supplier with `--relay-server` hosts fragment 0; a supplier in the home namespace with `--relay`
 * hosts fragment 1 and is reachable only through the relay (10 ms each way between home and the internet);
 * the client (`gridpipe generate`) runs on the public side.
 * - A client whose own port the router does not forward: the generation runs through the relay (a limited
 *   connection) and its tokens equal the local onnxruntime run.
 * - A client listening on a reachable port: DCUtR upgrades the relayed connection to a direct one (the
 *   supplier behind NAT connects out to the client) and the tokens are the same.
 * - The supplier behind NAT is SIGKILLed mid-generation: the session fails over to the public replica of
 *   fragment 1 (which advertises a tiny compute rate, so routes avoid it while the supplier behind NAT
 *   lives), with the same tokens.
 * - A gateway with `--relay-server` relays too: a supplier behind NAT that joins through it holds its slot there.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { expectFailoverFromNat, expectServedBehindNat, generateFromPublicSide as generateNat, natModel, RELAY_PORT, REPLICA_PORT, startNatGrid, type GenerateDone, type NatGrid } from '../helpers/nat-grid.js';
import { waitFor } from '../helpers/swarm.js';
import { createNatTopology, netnsUnsupportedReason, PUBLIC_IP, type NatTopology } from '../helpers/netns.js';

const unsupported = netnsUnsupportedReason();
if (unsupported) console.warn(`[nat relay] SKIPPED: ${unsupported}`);

const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 24;
/** Public ports besides the relay's and the replica's (test/helpers/nat-grid.ts): a client port the router forwards, one it does not. */
const REACHABLE_CLIENT_PORT = 4003;
const UNREACHABLE_CLIENT_PORT = 4009;
const GATEWAY_RELAY_PORT = 4004;

describe.skipIf(unsupported !== undefined)('a supplier behind NAT (network namespaces)', () => {
  const tmp = tempDir();
  let topology: NatTopology;
  let fragDir: string;
  let expected: number[];
  let grid: NatGrid;

  beforeAll(async () => {
    ({ fragDir, expected } = await natModel(tmp.dir, 19, PROMPT, MAX_TOKENS));

    topology = createNatTopology();
    await topology.startRouter([RELAY_PORT, REPLICA_PORT, REACHABLE_CLIENT_PORT, GATEWAY_RELAY_PORT], { up: { delayMs: 10 }, down: { delayMs: 10 } });
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

  it('serves a generation through the relay (a limited connection): the tokens of the local run', async () => {
    expectServedBehindNat(await generateFromPublicSide(UNREACHABLE_CLIENT_PORT), expected, grid, 'relayed');
  });

  it('goes direct after DCUtR where the client is reachable: the same tokens', async () => {
    expectServedBehindNat(await generateFromPublicSide(REACHABLE_CLIENT_PORT), expected, grid, 'direct');
  });

  it('a supplier killed behind NAT mid-generation fails over to a public replica: the same tokens', async () => {
    await expectFailoverFromNat(topology, grid, { fragDir, prompt: PROMPT, maxTokens: MAX_TOKENS, clientPort: UNREACHABLE_CLIENT_PORT }, expected);
  });

  it('a gateway with --relay-server is a relay too: a supplier behind NAT joining through it reserves a slot there', async () => {
    const gateway = topology.gridpipe(topology.pub, ['gateway', '--port', '0', '--bootstrap', grid.relayAddr, '--listen', `/ip4/${PUBLIC_IP}/tcp/${GATEWAY_RELAY_PORT}`,
      '--relay-server', '--data', path.join(tmp.dir, 'gateway'), '--json']);
    const gatewayId = ((await gateway.ready) as { peerId: string }).peerId;
    const gatewayAddr = `/ip4/${PUBLIC_IP}/tcp/${GATEWAY_RELAY_PORT}/p2p/${gatewayId}`;
    const home = topology.gridpipe(topology.home, ['supply', '--data', path.join(tmp.dir, 'home2'), '--relay', '--bootstrap', gatewayAddr,
      '--host', fragDir, '--fragments', '1', '--json']);
    await home.ready;
    await waitFor(() => /"reachability":"relayed"/.test(home.output()), 'a relay slot on the gateway', 60_000, 100);
    const line = home.output().split('\n').find((l) => l.includes('"reachability":"relayed"'))!;
    const addresses = (JSON.parse(line) as { addresses: string[] }).addresses;
    expect(addresses.some((a) => a.startsWith(`${gatewayAddr}/p2p-circuit/p2p/`)), addresses.join(' ')).toBe(true);
  });
});
