/**
 * Issue 19, direct-return chain mode, on 127.0.0.1 with supplier processes: each server forwards its outputs to
 * the next server's session and the last one answers the client. Tokens equal the star and the monolithic
 * onnxruntime run (greedy and sampled); a supplier killed mid-generation fails over with exactly the same
 * tokens (its replacement is replayed through the star, the junctions that still allow it stay chained).
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import type { RouteMode } from '../../policy/route-mode.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { localTokens } from '../helpers/local-run.js';
import { waitFor } from '../helpers/swarm.js';

const tmp = tempDir();
let modelPath: string;
let manifest: Manifest;
const suppliers = new Map<string, { proc: RunningProcess; span: string }>();
let client: GridClient;
let model: OpenModel;
const PROMPT = [72, 101, 108, 108, 111, 32, 99, 104, 97, 105, 110];
const MAX_TOKENS = 12;

function options(extra: Partial<GenerateOptions> = {}): GenerateOptions {
  return {
    promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true,
    inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
    ...extra,
  };
}

async function local(extra: Partial<GenerateOptions> = {}): Promise<number[]> {
  return localTokens(modelPath, manifest.statefulPairs, options(extra));
}

async function start(name: string, fragments: string, hostArg: string, extra: string[] = []): Promise<string> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', hostArg, '--fragments', fragments, '--json', ...extra]);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  suppliers.set(ready.peerId, { proc, span: fragments });
  return ready.addresses[0];
}

beforeAll(async () => {
  modelPath = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed: 41 }), modelPath);
  const fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 4 })).manifest;
  const bootstrap = await start('a', '0', fragDir);
  const manifestCid = await (await import('../../fragments/cid.js')).cidOfFile(path.join(fragDir, 'manifest.json'));
  await Promise.all([
    start('b', '1,2', manifestCid, ['--bootstrap', bootstrap]),
    start('c', '3', manifestCid, ['--bootstrap', bootstrap]),
    start('d', '1,2', manifestCid, ['--bootstrap', bootstrap]),
  ]);
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 } });
  model = await client.openModel(fragDir);
  await waitFor(async () => model.discovery.current.length === 4 || (await model.discovery.refresh()).length === 4, 'all four suppliers in the swarm view', 30_000, 250);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await Promise.all([...suppliers.values()].map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

interface GridRun { tokens: number[]; failovers: number; chained: number; route: string[] }

async function onGrid(routeMode: RouteMode, extra: Partial<GenerateOptions> = {}, onToken?: (n: number, route: string[]) => Promise<void> | void): Promise<GridRun> {
  const session = client.session(model, PROMPT.length + MAX_TOKENS, { routeMode });
  const tokens: number[] = [];
  try {
    for await (const t of generate(session, options(extra))) {
      tokens.push(t.id);
      await onToken?.(tokens.length, session.route.map((r) => r.peerId));
    }
    return { tokens, failovers: session.failovers, chained: session.chainedSteps, route: session.route.map((r) => r.peerId) };
  } finally {
    await session.close();
  }
}

describe('direct-return chain mode (4 supplier processes: 0 | 1,2 twice | 3)', () => {
  let expected: number[];

  it('chain tokens equal the star\'s and the monolithic run\'s; every decode step after the prefill ran as one chain', async () => {
    expected = await local();
    const star = await onGrid('star');
    const chain = await onGrid('chain');
    expect(star.tokens).toEqual(expected);
    expect(star.chained).toBe(0);
    expect(chain.tokens).toEqual(expected);
    expect(chain.route).toHaveLength(3);
    // the prefill opens the route (fresh sessions: the star); every later step is one chain of all three
    expect(chain.chained).toBe(MAX_TOKENS - 1);
  });

  it('sampled decoding: the last server of the chain draws each token, the same tokens as the local run', async () => {
    const sampled = { temperature: 0.9, topP: 0.95, seed: 7 };
    const want = await local(sampled);
    const chain = await onGrid('chain', sampled);
    expect(chain.tokens).toEqual(want);
    expect(chain.chained).toBeGreaterThan(0);
  });

  it('SIGKILL of the middle supplier mid-generation: the same tokens, the replacement replayed, the chain resumed', async () => {
    let killed = '';
    const run = await onGrid('chain', {}, async (n, route) => {
      if (n === 4) {
        killed = route[1];
        suppliers.get(killed)!.proc.child.kill('SIGKILL');
        await suppliers.get(killed)!.proc.exited;
      }
    });
    expect(killed).not.toBe('');
    expect(run.tokens).toEqual(expected);
    expect(run.failovers).toBeGreaterThanOrEqual(1);
    expect(run.route).not.toContain(killed);
    // after the failover the first junction (its replacement was opened accepting the first server) chains again
    expect(run.chained).toBeGreaterThan(4);
    suppliers.delete(killed);
  });
});
