/**
 * Chain mode on the exec protocol (issue 19), real libp2p hosts on 127.0.0.1 and real onnxruntime: a server
 * forwards its outputs into the next server's session, which answers the client on the client's own stream;
 * a server that cannot reach the next one says so in its reply (the client relays there); a peer the session
 * did not name as a forwarder gets nothing into it.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ShareLimits } from '../../node/limits.js';
import { ExecServer } from '../../node/exec/index.js';
import { ExecClient, ExecError, ortToWire, type RemoteSession, type TensorMap } from '../../net/exec/index.js';
import type { WireHop } from '../../net/exec/codec.js';
import { testLogger } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { gptInputs, maxAbsDiff } from '../helpers/decoder-inputs.js';

const tmp = tempDir('gridpipe-forward-');
const logger = testLogger();
let manifest: Manifest;
let manifestCid: string;
const files = new Map<string, string>();
const hosts: GridHost[] = [];
const servers: ExecServer[] = [];
let client: GridHost;
let first: GridHost;
let second: GridHost;
const exec = new ExecClient({ stepTimeoutMs: 60_000 });

async function serve(): Promise<GridHost> {
  const host = await createGridHost({ network: 'local', logger });
  hosts.push(host);
  const server = new ExecServer({ logger, limits: new ShareLimits({}, { memoryBytes: 1 << 30, cores: 2 }), resolve: (cid) => files.get(cid) });
  await server.start(host.node);
  servers.push(server);
  return host;
}

beforeAll(async () => {
  const file = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: 64, maxPositions: 64, seed: 9, kvCache: false }), file);
  const out = await fragmentModel(file, path.join(tmp.dir, 'frags'), { parts: 2 });
  ({ manifest, manifestCid } = out);
  for (const f of manifest.fragments) files.set(f.cid, path.join(out.dir, f.file));
  files.set(manifestCid, path.join(out.dir, 'manifest.json'));
  [client, first, second] = await Promise.all([createGridHost({ network: 'local', logger }), serve(), serve()]);
  hosts.push(client);
});

afterAll(async () => {
  for (const s of servers) await s.stop().catch(() => undefined);
  await Promise.allSettled(hosts.map((h) => h.stop()));
  tmp.cleanup();
});

const ref = (index: number): { cid: string; manifestCid: string; index: number }[] => [{ cid: manifest.fragments[index].cid, manifestCid, index }];

/** The second fragment's hop: its graph inputs from the client, the rest carried from the first server. */
function hopTo(session: RemoteSession, host: GridHost, inputs: TensorMap, addrs = host.node.getMultiaddrs().map(String)): WireHop {
  const reads = manifest.fragments[1].inputs;
  return {
    peerId: host.node.peerId.toString(), addrs, sessionId: session.sessionId,
    inputs: reads.filter((i) => i.from === 'graph').map((i) => ortToWire(i.name, inputs[i.name])),
    carry: reads.filter((i) => i.from !== 'graph').map((i) => i.name),
    want: ['logits'],
  };
}

function firstInputs(inputs: TensorMap): TensorMap {
  return Object.fromEntries(manifest.fragments[0].inputs.map((i) => [i.name, inputs[i.name]]));
}

describe('chain mode on the exec protocol', () => {
  it('the first server forwards into the second server\'s session; the second answers on the client\'s stream with the star\'s logits', async () => {
    const inputs = gptInputs([3, 1, 4, 1, 5], 0);
    const a = await exec.openSession(client.node, first.node.getMultiaddrs(), { fragments: ref(0) });
    const b = await exec.openSession(client.node, second.node.getMultiaddrs(), { fragments: ref(1), forwarders: [first.node.peerId.toString()] });
    // the star: the client relays
    const starA = await a.step(firstInputs(inputs), { position: 0 });
    const starB = await b.step({ ...Object.fromEntries(hopTo(b, second, inputs).inputs.map((t) => [t.name, inputs[t.name]])), ...starA.outputs }, { position: 0, want: ['logits'] });
    // the chain: one message to the first server
    const stepId = 10n;
    const last = b.awaitReply(stepId, 30_000);
    const head = await a.step(firstInputs(inputs), { position: 0, stepId, forward: [hopTo(b, second, inputs)] });
    const tail = await last;
    expect(head.forwardError).toBeUndefined();
    expect(Object.keys(head.outputs).sort()).toEqual(Object.keys(starA.outputs).sort()); // the client's copy, for replay
    expect(Object.keys(tail.outputs)).toEqual(['logits']);
    expect(maxAbsDiff(tail.outputs.logits, starB.outputs.logits)).toBe(0);
    await a.close();
    await b.close();
  });

  it('a server that cannot reach the next one still answers, with the reason, and the client can relay', async () => {
    const inputs = gptInputs([2, 7, 1, 8], 0);
    const a = await exec.openSession(client.node, first.node.getMultiaddrs(), { fragments: ref(0) });
    const b = await exec.openSession(client.node, second.node.getMultiaddrs(), { fragments: ref(1), forwarders: [first.node.peerId.toString()] });
    // a server nobody can reach any more: stopped, its port closed (the first server holds no connection to it)
    const gone = await createGridHost({ network: 'local', logger });
    const goneAddrs = gone.node.getMultiaddrs().map(String);
    await gone.stop();
    const unreachable = { ...hopTo(b, second, inputs), peerId: gone.node.peerId.toString(), addrs: goneAddrs };
    const head = await a.step(firstInputs(inputs), { position: 0, stepId: 1n, forward: [unreachable] });
    expect(head.forwardError).toMatch(/could not forward to/);
    const relayed = await b.step({ ...Object.fromEntries(unreachable.inputs.map((t) => [t.name, inputs[t.name]])), ...head.outputs }, { position: 0, stepId: 1n, want: ['logits'] });
    expect(relayed.outputs.logits.dims.at(-1)).toBe(64);
    await a.close();
    await b.close();
  });

  it('a session that did not name the forwarder takes nothing from it', async () => {
    const inputs = gptInputs([1, 1, 2, 3], 0);
    const a = await exec.openSession(client.node, first.node.getMultiaddrs(), { fragments: ref(0) });
    const b = await exec.openSession(client.node, second.node.getMultiaddrs(), { fragments: ref(1) }); // no forwarders
    const last = b.awaitReply(5n, 2_000);
    const head = await a.step(firstInputs(inputs), { position: 0, stepId: 5n, forward: [hopTo(b, second, inputs)] });
    expect(head.forwardError).toBeUndefined(); // handed over; the second server refuses it to the forwarder
    const err = await last.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ExecError);
    expect((err as ExecError).code).toBe('TIMEOUT');
    await a.close();
  });
});
