/**
 * GRIDPIPE_STEP_TRACE (net/step-trace.ts) and the pipeline bench's split of a chain token (bench/pipeline-trace.ts):
 * - on made-up lines, the split's parts are the differences of consecutive marks, they add up to the step's time,
 *   and a step whose servers are not all in the trace is left out;
 * - on 127.0.0.1 with 3 supplier processes, a chain generation with tracing on leaves one client line per chained
 *   step and one server line per step each server ran, and the split finds every chained step with all its servers.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate } from '../../scheduler/generate.js';
import type { StepTraceLine } from '../../net/step-trace.js';
import { chainTraceMetrics, readStepTraces, splitChainSteps } from '../../bench/pipeline-trace.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';

describe('splitting a traced chain step', () => {
  const server = (receivedAt: number, steppedAt: number, computeMs: number, forwardedAt: number | undefined, repliedAt: number): StepTraceLine =>
    ({ role: 'server', pid: 1, stepId: '1', receivedAt, steppedAt, computeMs, ...(forwardedAt === undefined ? {} : { forwardedAt }), repliedAt });

  it('gives each part as the gap between its marks, and the parts add up to the step', () => {
    const lines: StepTraceLine[] = [
      { role: 'client', pid: 9, startedAt: 100, replyAt: [112, 125, 140] },
      server(101, 110, 8, 110.5, 111),
      server(111.25, 123, 10, 123.75, 124),
      server(124.5, 138, 12, undefined, 138.5),
    ];
    const [split] = splitChainSteps(lines);
    expect(split.firstSendMs).toBe(1);
    expect(split.serverOutsideRunMs).toEqual([1, 1.75, 1.5]);
    expect(split.computeMs).toEqual([8, 10, 12]);
    expect(split.forwardMs).toEqual([0.5, 0.75]);
    expect(split.transitMs).toEqual([0.75, 0.75]);
    expect(split.lastReplyMs).toBe(2);
    expect(split.totalMs).toBe(40);
    const parts = split.firstSendMs + [...split.serverOutsideRunMs, ...split.computeMs, ...split.forwardMs, ...split.transitMs].reduce((a, b) => a + b, 0) + split.lastReplyMs;
    expect(parts).toBeCloseTo(split.totalMs, 9);
  });

  it('leaves out a step with a server missing from the trace, or a middle server that did not forward', () => {
    const client: StepTraceLine = { role: 'client', pid: 9, startedAt: 100, replyAt: [112, 125, 140] };
    expect(splitChainSteps([client, server(101, 110, 8, 110.5, 111), server(124.5, 138, 12, undefined, 138.5)])).toEqual([]);
    expect(splitChainSteps([client, server(101, 110, 8, undefined, 111), server(111.25, 123, 10, 123.75, 124), server(124.5, 138, 12, undefined, 138.5)])).toEqual([]);
  });
});

describe('GRIDPIPE_STEP_TRACE on a chain of 3 supplier processes (127.0.0.1)', () => {
  const tmp = tempDir();
  const traceDir = path.join(tmp.dir, 'trace');
  const PROMPT = [72, 101, 108, 108, 111];
  const MAX_TOKENS = 8;
  const procs: RunningProcess[] = [];
  let manifest: Manifest;
  let client: GridClient;
  let model: OpenModel;
  const before = process.env.GRIDPIPE_STEP_TRACE;

  beforeAll(async () => {
    mkdirSync(traceDir);
    const modelPath = path.join(tmp.dir, 'gpt.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 3, dModel: 32, heads: 2, kvCache: true, seed: 43 }), modelPath);
    const fragDir = path.join(tmp.dir, 'frags');
    manifest = (await fragmentModel(modelPath, fragDir, { parts: 3 })).manifest;
    const start = async (name: string, fragment: string, bootstrap?: string): Promise<string> => {
      const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', fragDir, '--fragments', fragment, '--json', ...(bootstrap ? ['--bootstrap', bootstrap] : [])], { GRIDPIPE_STEP_TRACE: traceDir });
      procs.push(proc);
      return ((await proc.ready) as { addresses: string[] }).addresses[0];
    };
    const bootstrap = await start('a', '0');
    await Promise.all([start('b', '1', bootstrap), start('c', '2', bootstrap)]);
    process.env.GRIDPIPE_STEP_TRACE = traceDir; // the client's sessions read it when made
    client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 } });
    model = await client.openModel(fragDir);
    await waitFor(async () => model.discovery.current.length === 3 || (await model.discovery.refresh()).length === 3, 'all three suppliers in the swarm view', 30_000, 250);
  }, 120_000);

  afterAll(async () => {
    if (before === undefined) delete process.env.GRIDPIPE_STEP_TRACE;
    else process.env.GRIDPIPE_STEP_TRACE = before;
    await client?.close();
    await Promise.all(procs.map((p) => p.stop('SIGTERM')));
    await killAll();
    tmp.cleanup();
  });

  it('logs every step on both ends, and the split finds every chained step with its 3 servers', async () => {
    const session = client.session(model, PROMPT.length + MAX_TOKENS, { routeMode: 'chain' });
    const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
    let tokens = 0;
    try {
      for await (const _ of generate(session, { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames })) tokens++;
    } finally {
      await session.close();
    }
    expect(tokens).toBe(MAX_TOKENS);
    const chained = session.chainedSteps;
    expect(chained).toBe(MAX_TOKENS - 1); // the prefill opens the route through the star
    const lines = await readStepTraces(traceDir);
    const clients = lines.filter((l) => l.role === 'client');
    const servers = lines.filter((l) => l.role === 'server');
    expect(clients).toHaveLength(chained);
    expect(new Set(servers.map((l) => l.pid)).size).toBe(3);
    expect(servers).toHaveLength(3 * MAX_TOKENS); // every server ran the prefill and each decode step
    const splits = splitChainSteps(lines);
    expect(splits).toHaveLength(chained);
    for (const s of splits) {
      expect(s.computeMs).toHaveLength(3);
      expect(s.forwardMs).toHaveLength(2);
      expect(s.computeMs.every((ms) => ms > 0)).toBe(true);
    }
    expect(chainTraceMetrics(splits).chain_trace_steps).toBe(chained);
  });
});
