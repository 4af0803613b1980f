/**
 * Wire compression negotiated per exec session: both ends encode and decode, exact sessions stay exact, and an
 * encoding the server does not run falls back to exact.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type ort from 'onnxruntime-node';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ExecClient } from '../../net/exec/client.js';
import { WireEncoding, type WireEncodingCode } from '../../net/exec/wire-compression.js';
import { ExecServer } from '../../node/exec/index.js';
import { ShareLimits } from '../../node/limits.js';
import { gptInputs } from '../helpers/decoder-inputs.js';
import { testLogger } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-wire-session-');
const logger = testLogger();
const hosts: GridHost[] = [];
let server: ExecServer;
let serverHost: GridHost;
let client: GridHost;
let manifest: Manifest;
let manifestCid: string;
const execClient = new ExecClient({ stepTimeoutMs: 60_000 });

beforeAll(async () => {
  const model = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 128, heads: 4, vocab: 128, maxPositions: 64, kvCache: false, seed: 7 }), model);
  const made = await fragmentModel(model, path.join(tmp.dir, 'gpt'), { parts: 2 });
  manifest = made.manifest;
  manifestCid = made.manifestCid;
  const files = new Map(manifest.fragments.map((f) => [f.cid, path.join(made.dir, f.file)]));
  files.set(manifestCid, path.join(made.dir, 'manifest.json'));
  serverHost = await createGridHost({ network: 'local', logger });
  client = await createGridHost({ network: 'local', logger });
  hosts.push(serverHost, client);
  server = new ExecServer({ logger, limits: new ShareLimits({}, { memoryBytes: 1 << 30, cores: 2 }), resolve: (cid) => files.get(cid) });
  await server.start(serverHost.node);
});

afterAll(async () => {
  await server.stop().catch(() => undefined);
  await Promise.allSettled(hosts.map((h) => h.stop()));
  tmp.cleanup();
});

async function run(index: number, inputs: Record<string, ort.Tensor>, wireEncoding?: WireEncodingCode): Promise<{ outputs: Record<string, ort.Tensor>; accepted: number }> {
  const session = await execClient.openSession(client.node, serverHost.node.getMultiaddrs(), {
    fragments: [{ cid: manifest.fragments[index].cid, manifestCid, index }], wireEncoding,
  });
  try {
    const { outputs } = await session.step(inputs, { position: 0 });
    return { outputs, accepted: session.wireEncoding };
  } finally {
    await session.close();
  }
}

/** Largest |a − b| over the largest |a|. */
function relative(a: ort.Tensor, b: ort.Tensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
    scale = Math.max(scale, Math.abs(x[i]));
  }
  return diff / scale;
}

describe('wire compression negotiated per session', () => {
  it('encodes float activations on both ends, decodes them on both ends, and leaves exact sessions exact', async () => {
    const tokens = [3, 14, 15, 9, 2, 6, 5, 35];
    const first = await run(0, gptInputs(tokens, 0));
    expect(first.accepted).toBe(WireEncoding.EXACT);
    const hiddenName = manifest.fragments[1].inputs.find((i) => i.from === 0 && i.dtype === 'float')!.name;
    const secondInputs = Object.fromEntries(manifest.fragments[1].inputs.map((i) => [i.name, i.from === 'graph' ? gptInputs(tokens, 0)[i.name] : first.outputs[i.name]]));
    const exact = await run(1, secondInputs);

    for (const [name, encoding, bound] of [['fp16', WireEncoding.FP16, 2e-3], ['int8', WireEncoding.INT8_BLOCKS, 0.05]] as const) {
      // Server → client: fragment 0's hidden state comes back encoded and is decoded to float32 by the client.
      const hidden = await run(0, gptInputs(tokens, 0), encoding);
      expect(hidden.accepted, name).toBe(encoding);
      expect(hidden.outputs[hiddenName].type).toBe('float32');
      const hiddenError = relative(first.outputs[hiddenName], hidden.outputs[hiddenName]);
      expect(hiddenError, name).toBeGreaterThan(0);
      expect(hiddenError, name).toBeLessThanOrEqual(encoding === WireEncoding.FP16 ? 2 ** -11 : 0.5 / 127 + 2 ** -10);
      // Client → server → client: the exact hidden state sent encoded, the server decodes it, runs, and encodes the logits.
      const logits = await run(1, secondInputs, encoding);
      const error = relative(exact.outputs.logits, logits.outputs.logits);
      expect(error, name).toBeGreaterThan(0);
      expect(error, name).toBeLessThan(bound);
    }
    // The same session exact again: identical to the first exact run.
    expect(relative(exact.outputs.logits, (await run(1, secondInputs)).outputs.logits)).toBe(0);
  });

  it('falls back to exact when asked for an encoding the server does not run', async () => {
    const r = await run(0, gptInputs([1, 2, 3], 0), 9 as WireEncodingCode);
    expect(r.accepted).toBe(WireEncoding.EXACT);
  });
});
