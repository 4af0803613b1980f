/**
 * Issue 3 end to end, through the CLI as a supplier runs it: five `gridpipe supply` processes on
 * 127.0.0.1. One imports a fragment folder; the others fetch their fragment by manifest CID from it and
 * verify it; `gridpipe peers` sees every capacity record; a step through a supplier that fetched its
 * fragment matches a local onnxruntime run; pause shows in the record; a restart keeps the PeerId;
 * SIGTERM withdraws the record and exits cleanly.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { readManifest } from '../../fragments/manifest-file.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ExecClient } from '../../net/exec/client.js';
import { readAdminToken } from '../../node/admin-guard.js';
import { waitFor } from '../helpers/swarm.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
const suppliers: RunningProcess[] = [];
let fragDir: string;
let manifestCid: string;
let bootstrap: string;

interface Ready { peerId: string; addresses: string[]; admin?: string; hosted: { manifestCid: string; index: number; cid: string }[] }

async function peers(): Promise<{ peerId: string; fragments: { index: number }[]; limits?: { paused: boolean } }[]> {
  const r = await runCli(['peers', '--bootstrap', bootstrap, '--json', '--timeout', '20'], { env: { GRIDPIPE_LOG_LEVEL: 'warn' } });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

async function waitForPeers(check: (list: Awaited<ReturnType<typeof peers>>) => boolean): Promise<Awaited<ReturnType<typeof peers>>> {
  let list = await peers();
  for (let i = 0; i < 20 && !check(list); i++) {
    await new Promise((r) => setTimeout(r, 500));
    list = await peers();
  }
  return list;
}

beforeAll(async () => {
  const model = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 32, heads: 2, kvCache: true, seed: 21 }), model);
  fragDir = path.join(tmp.dir, 'frags');
  await fragmentModel(model, fragDir, { parts: 4 });
});

afterAll(async () => {
  await Promise.all(suppliers.map((s) => s.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('gridpipe supply (5 processes on loopback)', () => {
  let first: Ready;
  it('starts a supplier that hosts a fragment folder, then four that fetch their fragment by manifest CID', async () => {
    const a = startGridpipe(['supply', '--data', path.join(tmp.dir, 's0'), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', '0,1,2,3', '--admin-port', '0', '--json']);
    suppliers.push(a);
    first = (await a.ready) as unknown as Ready;
    expect(first.hosted).toHaveLength(4);
    manifestCid = first.hosted[0].manifestCid;
    bootstrap = first.addresses[0];
    const { manifest } = await readManifest(fragDir);
    expect(first.hosted.map((h) => h.cid)).toEqual(manifest.fragments.map((f) => f.cid));

    const others = [1, 2, 3, 4].map((i) => startGridpipe(['supply', '--data', path.join(tmp.dir, `s${i}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', bootstrap, '--host', manifestCid, '--fragments', String(i - 1), '--admin-port', '0', '--json']));
    suppliers.push(...others);
    const readies = (await Promise.all(others.map((o) => o.ready))) as unknown as Ready[];
    readies.forEach((r, i) => {
      expect(r.hosted).toEqual([{ manifestCid, index: i, cid: manifest.fragments[i].cid }]);
    });
  });

  it('loads every served fragment into onnxruntime at start, before any session asks for it', async () => {
    const status = async (): Promise<{ hosted: { loaded: boolean }[]; sessions: number }> => (await fetch(`${first.admin}/status`)).json() as never;
    await waitFor(async () => (await status()).hosted.every((h) => h.loaded), 'the 4 fragments loaded');
    const s = await status();
    expect(s.hosted).toHaveLength(4);
    expect(s.sessions).toBe(0);
  });

  it('every supplier\'s capacity record is found by `gridpipe peers`', async () => {
    const list = await waitForPeers((l) => l.length >= 5);
    expect(list).toHaveLength(5);
    const ids = new Set(list.map((r) => r.peerId));
    expect(ids.size).toBe(5);
    expect(list.find((r) => r.peerId === first.peerId)!.fragments).toHaveLength(4);
  });

  it('runs a step on a supplier that fetched its fragment, with the same outputs as a local run', async () => {
    const { manifest } = await readManifest(fragDir);
    const target = (await suppliers[1].ready) as unknown as Ready; // hosts fragment 0, fetched by CID
    const client: GridHost = await createGridHost({ network: 'local', clientMode: true, bootstrap: [bootstrap] });
    try {
      const session = await new ExecClient().openSession(client.node, multiaddr(target.addresses[0]), {
        fragments: [{ cid: manifest.fragments[0].cid, manifestCid, index: 0 }], maxLength: 16,
      });
      const n = 3;
      const inputs: Record<string, ort.Tensor> = {};
      for (const input of manifest.fragments[0].inputs) {
        if (input.name === 'input_ids') inputs[input.name] = new ort.Tensor('int64', BigInt64Array.from([5n, 17n, 99n]), [1, n]);
        else if (input.name === 'position_ids') inputs[input.name] = new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n]), [1, n]);
        else if (input.name === 'attention_mask') inputs[input.name] = new ort.Tensor('int64', BigInt64Array.from([1n, 1n, 1n]), [1, n]);
      }
      const remote = await session.step(inputs, { position: 0 });
      await session.close();
      // Local run of the same fragment file, with the empty KV cache the server starts from.
      const local = await ort.InferenceSession.create(path.join(fragDir, manifest.fragments[0].file));
      const feeds: Record<string, ort.Tensor> = { ...inputs };
      for (const input of manifest.fragments[0].inputs) {
        if (input.name.startsWith('past_key_values')) feeds[input.name] = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 16]);
      }
      const expected = await local.run(feeds);
      await local.release();
      const shared = Object.keys(remote.outputs).filter((k) => expected[k]);
      expect(shared.length).toBeGreaterThan(0);
      for (const k of shared) expect(Array.from(remote.outputs[k].data as Float32Array)).toEqual(Array.from(expected[k].data as Float32Array));
    } finally {
      await client.stop();
    }
  });

  it('pausing through the admin endpoint shows in the capacity record', async () => {
    const b = (await suppliers[2].ready) as unknown as Ready;
    const token = readAdminToken(path.join(tmp.dir, 's2'));
    expect(await fetch(`${b.admin}/pause`, { method: 'POST' }).then((r) => r.status)).toBe(401);
    const res = await fetch(`${b.admin}/pause`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(await res.json()).toEqual({ paused: true });
    const list = await waitForPeers((l) => l.find((r) => r.peerId === b.peerId)?.limits?.paused === true);
    expect(list.find((r) => r.peerId === b.peerId)!.limits!.paused).toBe(true);
    const status = await (await fetch(`${b.admin}/status`)).json() as { paused: boolean };
    expect(status.paused).toBe(true);
    const metrics = await (await fetch(`${b.admin}/metrics`)).text();
    expect(metrics).toMatch(/gridpipe_/);
  });

  it('a restarted supplier keeps its PeerId; SIGTERM withdraws its record and exits 0', async () => {
    const last = suppliers.pop()!;
    const before = (await last.ready) as unknown as Ready;
    expect(await last.stop('SIGTERM')).toBe(0);
    const gone = await waitForPeers((l) => !l.some((r) => r.peerId === before.peerId));
    expect(gone.some((r) => r.peerId === before.peerId)).toBe(false);

    const again = startGridpipe(['supply', '--data', path.join(tmp.dir, 's4'), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', bootstrap, '--host', manifestCid, '--fragments', '3', '--json']);
    suppliers.push(again);
    const after = (await again.ready) as unknown as Ready;
    expect(after.peerId).toBe(before.peerId);
    expect(peerIdFromString(after.peerId).toString()).toBe(before.peerId);
    const back = await waitForPeers((l) => l.some((r) => r.peerId === before.peerId));
    expect(back.some((r) => r.peerId === before.peerId)).toBe(true);
  });

  it('rejects bad supplier options with a one-line error and exit 2', async () => {
    const bad = await runCli(['supply', '--data', path.join(tmp.dir, 'bad'), '--hours', 'nightly']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^gridpipe: error: --hours must look like 22:00-08:00/);
    const noBootstrap = await runCli(['peers']);
    expect(noBootstrap.code).toBe(2);
  });
});
