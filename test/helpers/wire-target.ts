/**
 * The supplier the wire tests attack (test/fuzz/supplier-wire.test.ts, test/security/wire.test.ts,
 * test/security/peer-guard.test.ts): one `gridpipe supply` process hosting a tiny GPT whole (one fragment), and
 * the client hosts they attack it from, stopped with it.
 */
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { killAll, startGridpipe, type RunningProcess } from './process.js';
import { testLogger } from './swarm.js';

/** The model the target serves: 2 layers, d 32, vocab 64, with a KV cache. */
export const TARGET_GPT = { arch: 'gpt' as const, layers: 2, dModel: 32, heads: 2, vocab: 64, maxPositions: 64, seed: 5, kvCache: true };

interface Ready { peerId: string; addresses: string[]; admin?: string; hosted: { manifestCid: string; index: number; cid: string }[] }

export interface WireTarget {
  proc: RunningProcess;
  /** Its first listening address (with /p2p/). */
  addr: string;
  peerId: string;
  /** Its admin URL, when started with `--admin-port`. */
  admin?: string;
  manifestCid: string;
  /** The one fragment's CID. */
  fragmentCid: string;
  fragDir: string;
  /** A new libp2p host (client mode unless `clientMode` is false), stopped by `stop()`. */
  clientHost(clientMode?: boolean): Promise<GridHost>;
  /** Stops the client hosts and the supplier (SIGTERM, then whatever is left). */
  stop(): Promise<void>;
}

/** Writes the model under `dir`, cuts it into one fragment and starts a supplier of it (one onnxruntime thread) with `extraArgs`. */
export async function startWireTarget(dir: string, extraArgs: string[] = []): Promise<WireTarget> {
  const model = path.join(dir, 'gpt.onnx');
  await writeModel(buildModel(TARGET_GPT), model);
  const fragDir = path.join(dir, 'frags');
  await fragmentModel(model, fragDir, { parts: 1 });
  const proc = startGridpipe(['supply', '--data', path.join(dir, 's0'), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', '0', '--threads', '1', ...extraArgs, '--json']);
  const ready = (await proc.ready) as unknown as Ready;
  const hosts: GridHost[] = [];
  return {
    proc, addr: ready.addresses[0], peerId: ready.peerId, admin: ready.admin, manifestCid: ready.hosted[0].manifestCid, fragmentCid: ready.hosted[0].cid, fragDir,
    async clientHost(clientMode = true) {
      const h = await createGridHost({ network: 'local', clientMode, logger: testLogger() });
      hosts.push(h);
      return h;
    },
    async stop() {
      for (const h of hosts) await h.stop().catch(() => undefined);
      await proc.stop('SIGTERM');
      await killAll();
    },
  };
}
