/**
 * Where the explorer is served. `gridpipe supply --explorer`: a supplier serves the explorer on its own loopback port, reading the swarm
 * through its own DHT host. Its ready line names the page; the Network view lists it and the supplier that
 * joined through it, both online, with their fragments; the Models view counts each fragment's replica;
 * without a chain the Chain view says so. `gridpipe gateway --no-explorer` serves none (404), while a gateway
 * serves it by default and says where in its ready line.
 */
import '../../net/polyfill.js';
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { killAll, startGridpipe, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { eventually, smallGpt } from '../payments/helpers.js';
import type { ChainView, ModelsView, NetworkView } from '../../explorer/types.js';

const tmp = tempDir('gridpipe-supplier-explorer-');
const suppliers: RunningProcess[] = [];
let bootstrap: string | undefined;

afterAll(async () => {
  await Promise.all(suppliers.map((s) => s.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('gridpipe supply --explorer', () => {
  it('serves the explorer: both suppliers online in Network, their fragments in Models, no chain', async () => {
    const { fragDir, manifestCid } = await smallGpt(tmp.dir, 2);
    const args = (name: string, fragment: string): string[] => ['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--network', 'local', '--host', fragDir, '--fragments', fragment, '--json'];
    suppliers.push(startGridpipe([...args('a', '0'), '--explorer']));
    const a = (await suppliers[0].ready) as { peerId: string; addresses: string[]; explorer?: string };
    bootstrap = a.addresses[0];
    suppliers.push(startGridpipe([...args('b', '1'), '--bootstrap', a.addresses[0]]));
    const b = (await suppliers[1].ready) as { peerId: string };
    expect(a.explorer).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/explorer\/$/);
    const get = async <T>(view: string): Promise<T> => (await (await fetch(new URL(`api/v1/${view}`, a.explorer))).json()) as T;
    const listed = async (): Promise<boolean> => {
      const { peers } = await get<NetworkView>('network');
      return [a.peerId, b.peerId].every((id) => peers.some((p) => p.peerId === id && p.online));
    };
    await eventually(listed, 'both suppliers online in the Network view', 90_000);
    const { peers } = await get<NetworkView>('network');
    expect(peers.find((p) => p.peerId === b.peerId)!.fragments.map((f) => [f.manifestCid, f.index])).toEqual([[manifestCid, 1]]);
    const { models } = await get<ModelsView>('models');
    expect(models.find((m) => m.manifestCid === manifestCid)?.fragments.map((f) => f.replicas)).toEqual([1, 1]);
    expect((await get<ChainView>('chain')).configured).toBe(false);
    expect((await fetch(a.explorer!)).headers.get('content-type')).toMatch(/^text\/html/);
  }, 240_000);

  it('a gateway serves it by default; with --no-explorer it serves none', async () => {
    expect(bootstrap).toBeDefined();
    for (const off of [false, true]) {
      const gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', bootstrap!, '--data', path.join(tmp.dir, `gw-${off}`), '--json', ...(off ? ['--no-explorer'] : [])]);
      try {
        const ready = (await gateway.ready) as { url: string; explorer?: string };
        const page = await fetch(`${ready.url}/explorer/`);
        if (off) {
          expect(ready.explorer).toBeUndefined();
          expect(page.status).toBe(404);
        } else {
          expect(ready.explorer).toBe(`${ready.url}/explorer/`);
          expect(page.status).toBe(200);
        }
      } finally {
        await gateway.stop('SIGTERM');
      }
    }
  });
});
