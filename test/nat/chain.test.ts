/**
 * Issue 19: chain mode (direct return) across emulated internet links, in network namespaces
 * (bench/wan-net.ts, the WAN bench's topology): four suppliers, one fragment each, and a spare of fragment 1,
 * each in its own namespace; the client (`gridpipe generate`) in another. Every connection crosses one shaped
 * link (5 ms each way here: the bench uses 25).
 * - Star and chain give the tokens of the local onnxruntime run, and the chain's decode steps ran chained.
 * - A chained server SIGKILLed mid-generation: the session fails over to the spare and replays, with the same
 *   tokens (exact failover).
 * Skips, saying why, where the kernel (or the user) cannot make namespaces.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { createWanTopology, generateInside, type WanTopology } from '../../bench/wan-net.js';
import type { GridpipeProcess } from '../../cli/spawn.js';
import { netnsUnsupportedReason } from '../helpers/netns.js';
import { tempDir } from '../helpers/tmp.js';
import { localTokens } from '../helpers/local-run.js';

const unsupported = netnsUnsupportedReason();
if (unsupported) console.warn(`[nat chain] SKIPPED: ${unsupported}`);

const STAGES = 4;
const SPARE = STAGES + 1; // host of the spare of fragment 1
const PORT = 4001;
const PROMPT = [72, 101, 108, 108, 111, 32, 99, 104, 97, 105, 110];
const TOKENS = 16;

describe.skipIf(unsupported !== undefined)('chain mode across emulated links (network namespaces)', () => {
  const tmp = tempDir();
  let topology: WanTopology;
  let fragDir: string;
  let expected: number[];
  let bootstrap: string;
  const suppliers = new Map<number, { proc: GridpipeProcess; peerId: string }>();

  beforeAll(async () => {
    const modelPath = path.join(tmp.dir, 'gpt.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 64, heads: 4, kvCache: true, seed: 39 }), modelPath);
    fragDir = path.join(tmp.dir, 'frags');
    const { manifest } = await fragmentModel(modelPath, fragDir, { parts: STAGES });
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    expected = await localTokens(modelPath, manifest.statefulPairs, { promptIds: PROMPT, maxTokens: TOKENS, kvCache: true, inputNames });

    topology = createWanTopology(SPARE + 1);
    await topology.startLinks(Array.from({ length: SPARE }, (_, s) => ({ host: s + 1, port: PORT })), { delayMs: 5 });
    const start = (host: number, fragment: number, extra: string[]): Promise<void> => {
      const proc = topology.gridpipe(host, ['supply', '--data', path.join(tmp.dir, `s${host}`), '--listen', `/ip4/${topology.hostIp(host)}/tcp/${PORT}`,
        '--announce', `/ip4/${topology.linkIp(host)}/tcp/${PORT}`, '--host', fragDir, '--fragments', String(fragment), '--network', 'local', '--json', ...extra]);
      return proc.ready.then((r) => { suppliers.set(host, { proc, peerId: (r as { peerId: string }).peerId }); });
    };
    await start(1, 0, []);
    bootstrap = `/ip4/${topology.linkIp(1)}/tcp/${PORT}/p2p/${suppliers.get(1)!.peerId}`;
    // The spare advertises a tiny compute rate: routes take host 2 for fragment 1 while it lives.
    await Promise.all([
      ...Array.from({ length: STAGES - 1 }, (_, s) => start(s + 2, s + 1, ['--bootstrap', bootstrap])),
      start(SPARE, 1, ['--bootstrap', bootstrap, '--gflops', '0.0001']),
    ]);
  });

  afterAll(() => {
    for (const { proc } of suppliers.values()) proc.child.kill('SIGKILL');
    topology?.destroy();
    tmp.cleanup();
  });

  const args = (mode: string): string[] => ['--manifest', fragDir, '--prompt-ids', PROMPT.join(','), '--max-tokens', String(TOKENS), '--bootstrap', bootstrap,
    '--network', 'local', '--wait', '60', '--route-mode', mode];

  it('star and chain give the tokens of the local run; the chain\'s decode steps ran chained', async () => {
    const star = await generateInside(topology.hosts[0], args('star'));
    expect(star.code, star.stderr).toBe(0);
    expect(star.tokens).toEqual(expected);
    const chain = await generateInside(topology.hosts[0], args('chain'));
    expect(chain.code, chain.stderr).toBe(0);
    expect(chain.tokens).toEqual(expected);
    expect(chain.summary?.route.map((r) => r.peerId)).toEqual([1, 2, 3, 4].map((h) => suppliers.get(h)!.peerId));
    expect(chain.summary?.chainedSteps).toBe(TOKENS - 1);
  });

  it('a chained server killed mid-generation fails over to the spare: the same tokens', async () => {
    const victim = suppliers.get(2)!;
    let killed = false;
    const run = await generateInside(topology.hosts[0], args('chain'), (n) => {
      if (n === 4 && !killed) {
        killed = true;
        victim.proc.child.kill('SIGKILL');
      }
    });
    expect(killed).toBe(true);
    expect(run.code, run.stderr).toBe(0);
    expect(run.tokens).toEqual(expected);
    expect(run.summary?.failovers).toBeGreaterThanOrEqual(1);
    const route = run.summary?.route.map((r) => r.peerId) ?? [];
    expect(route).toContain(suppliers.get(SPARE)!.peerId);
    expect(route).not.toContain(victim.peerId);
    expect(run.summary?.chainedSteps ?? 0).toBeGreaterThan(0);
  });
});
