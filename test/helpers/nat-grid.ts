/**
 * The grid the NAT tests share (test/nat/relay.test.ts, test/nat/kernel-nat.test.ts), started inside a topology of
 * test/helpers/netns.ts: a public supplier of fragment 0 that is also a relay server, a public replica of fragment
 * 1 that advertises a crawl (routes prefer the supplier at home while it lives), and a supplier of fragment 1 at
 * home behind the NAT, reachable only through the relay; and `gridpipe generate` run from the public side.
 */
import path from 'node:path';
import { expect } from 'vitest';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { localTokens } from './local-run.js';
import type { RunningProcess } from './process.js';
import { waitFor } from './swarm.js';
import { PUBLIC_IP, type NatTopology } from './netns.js';

/** Public ports of the relay supplier and of the replica. */
export const RELAY_PORT = 4001;
export const REPLICA_PORT = 4002;

/** The summary line of `gridpipe generate --json`. */
export interface GenerateDone { done: true; tokens: number[]; route: Array<{ peerId: string; fragments: number[]; connection: string }>; failovers: number }

/** The suppliers of the NAT grid: the relay's address, the replica's id, and the supplier behind NAT. */
export interface NatGrid { relayAddr: string; replicaId: string; behindNat: { proc: RunningProcess; peerId: string } }

/** Starts the three suppliers (data folders under `dataDir`, fragments from `fragDir`); resolves once the supplier behind NAT advertises its relayed address. */
export async function startNatGrid(topology: NatTopology, dataDir: string, fragDir: string): Promise<NatGrid> {
  const relay = topology.gridpipe(topology.pub, ['supply', '--data', path.join(dataDir, 'relay'), '--listen', `/ip4/${PUBLIC_IP}/tcp/${RELAY_PORT}`,
    '--relay-server', '--host', fragDir, '--fragments', '0', '--json']);
  const relayReady = (await relay.ready) as { peerId: string };
  const relayAddr = `/ip4/${PUBLIC_IP}/tcp/${RELAY_PORT}/p2p/${relayReady.peerId}`;
  // A second DHT server too, so each public supplier's record has a peer to live on.
  const replica = topology.gridpipe(topology.pub, ['supply', '--data', path.join(dataDir, 'replica'), '--listen', `/ip4/${PUBLIC_IP}/tcp/${REPLICA_PORT}`,
    '--bootstrap', relayAddr, '--host', fragDir, '--fragments', '1', '--gflops', '0.0001', '--json']);
  const replicaId = ((await replica.ready) as { peerId: string }).peerId;
  const home = topology.gridpipe(topology.home, ['supply', '--data', path.join(dataDir, 'home'), '--relay', '--bootstrap', relayAddr,
    '--host', fragDir, '--fragments', '1', '--json']);
  const homeReady = (await home.ready) as { peerId: string };
  // It says so (at ready, or in a later line) once it holds a relay slot and its capacity record advertises the relayed address.
  await waitFor(() => /"reachability":"relayed"/.test(home.output()), 'the supplier behind NAT to be reachable through the relay', 60_000, 100);
  const line = home.output().split('\n').find((l) => l.includes('"reachability":"relayed"'))!;
  const { addresses, advertised } = JSON.parse(line) as { addresses: string[]; advertised?: boolean };
  expect(addresses.some((a) => a.startsWith(`${relayAddr}/p2p-circuit/p2p/${homeReady.peerId}`)), addresses.join(' ')).toBe(true);
  // at ready (no `advertised` field) the first publication already named the relayed address
  expect(advertised ?? true).toBe(true);
  return { relayAddr, replicaId, behindNat: { proc: home, peerId: homeReady.peerId } };
}

/** `gridpipe generate` on the public side, listening on `clientPort`; `onToken(n)` sees each token as it is printed. */
export async function generateFromPublicSide(topology: NatTopology, grid: NatGrid, request: { fragDir: string; prompt: number[]; maxTokens: number; clientPort: number }, onToken?: (n: number) => void): Promise<GenerateDone> {
  const proc = topology.gridpipe(topology.pub, ['generate', '--manifest', request.fragDir, '--prompt-ids', request.prompt.join(','), '--max-tokens', String(request.maxTokens),
    '--bootstrap', grid.relayAddr, '--listen', `/ip4/${PUBLIC_IP}/tcp/${request.clientPort}`, '--wait', '60', '--json'], { GRIDPIPE_LOG_LEVEL: 'warn' });
  let seen = 0;
  proc.child.stdout!.on('data', () => {
    const tokens = proc.output().split('\n').filter((l) => l.startsWith('{"token"')).length;
    for (; seen < tokens; seen++) onToken?.(seen + 1);
  });
  const code = await proc.exited;
  expect(code, proc.output()).toBe(0);
  const lines = proc.output().split('\n').filter((l) => l.startsWith('{'));
  return JSON.parse(lines.find((l) => l.includes('"done":true'))!) as GenerateDone;
}

/** The NAT tests' model (4 layers, d 64) cut in 2 under `dir`, and the tokens its local onnxruntime run gives for `prompt`. */
export async function natModel(dir: string, seed: number, prompt: number[], maxTokens: number): Promise<{ fragDir: string; expected: number[] }> {
  const modelPath = path.join(dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed }), modelPath);
  const fragDir = path.join(dir, 'frags');
  const { manifest } = await fragmentModel(modelPath, fragDir, { parts: 2 });
  const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
  return { fragDir, expected: await localTokens(modelPath, manifest.statefulPairs, { promptIds: prompt, maxTokens, kvCache: true, inputNames }) };
}

/** Asserts a generation gave `expected` and the supplier behind NAT served it over a `connection` connection. */
export function expectServedBehindNat(done: GenerateDone, expected: number[], grid: NatGrid, connection: 'relayed' | 'direct'): void {
  expect(done.tokens).toEqual(expected);
  const hop = done.route.find((r) => r.peerId === grid.behindNat.peerId);
  expect(hop, JSON.stringify(done.route)).toBeDefined();
  expect(hop!.connection).toBe(connection);
}

/** Generates from the public side and SIGKILLs the supplier behind NAT at the 4th token; asserts the session failed over to the replica with `expected`. */
export async function expectFailoverFromNat(topology: NatTopology, grid: NatGrid, request: { fragDir: string; prompt: number[]; maxTokens: number; clientPort: number }, expected: number[]): Promise<void> {
  let killedAt = 0;
  const done = await generateFromPublicSide(topology, grid, request, (n) => {
    if (n === 4 && !killedAt) {
      killedAt = n;
      grid.behindNat.proc.child.kill('SIGKILL');
    }
  });
  expect(killedAt).toBe(4);
  expect(done.tokens).toEqual(expected);
  expect(done.failovers).toBeGreaterThanOrEqual(1);
  expect(done.route.map((r) => r.peerId)).toContain(grid.replicaId);
  expect(done.route.map((r) => r.peerId)).not.toContain(grid.behindNat.peerId);
}
