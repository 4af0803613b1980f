/**
 * `gridpipe gateway --verify-rate` end to end: a gateway process in front of real supplier processes checks the
 * work it routes (HTTP completions), reports the checks on /metrics, and condemns a supplier started with the
 * test-only GRIDPIPE_TEST_FAULT=noise, after which no request is routed to it.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { cidOfFile } from '../../fragments/cid.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';

const tmp = tempDir();
const procs: RunningProcess[] = [];
let url: string;
let modelId: string;
let cheater: string;
let gateway: RunningProcess;

async function supplier(name: string, host: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<{ peerId: string; address: string }> {
  const proc = startGridpipe(['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', host, '--fragments', '0,1', '--json', ...extra], env);
  procs.push(proc);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  return { peerId: ready.peerId, address: ready.addresses[0] };
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** The feed's replayed events of one type (GET /v1/feed replays the recent ones first), read until `enough` holds. */
async function feedEvents(type: string, enough: (events: Record<string, unknown>[]) => boolean): Promise<Record<string, unknown>[]> {
  const abort = new AbortController();
  const res = await fetch(`${url}/v1/feed`, { signal: abort.signal });
  const reader = res.body!.getReader();
  let text = '';
  const parse = (): Record<string, unknown>[] => text.split('\n\n').filter((b) => b.startsWith(`event: ${type}\n`)).map((b) => JSON.parse(b.split('\ndata: ')[1]) as Record<string, unknown>);
  try {
    while (!enough(parse())) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    return parse();
  } finally {
    abort.abort();
  }
}

async function complete(): Promise<string[]> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: modelId, prompt: [5, 6, 7, 8], max_tokens: 6, temperature: 0 }),
  });
  expect(res.status).toBe(200);
  const body = await res.json() as { gridpipe?: { route?: { peerId: string }[] } };
  const route = (body.gridpipe?.route ?? []).map((r) => r.peerId);
  expect(route.length).toBeGreaterThan(0);
  return route;
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: true, seed: 8 }), modelPath);
  const fragDir = path.join(tmp.dir, 'frags');
  await fragmentModel(modelPath, fragDir, { parts: 2 });
  const manifestCid = await cidOfFile(path.join(fragDir, 'manifest.json'));
  const first = await supplier('a', fragDir);
  const join = ['--bootstrap', first.address];
  await supplier('b', manifestCid, {}, join);
  cheater = (await supplier('cheat', manifestCid, { GRIDPIPE_TEST_FAULT: 'noise' }, join)).peerId;
  gateway = startGridpipe(['gateway', '--port', '0', '--bootstrap', first.address, '--model', fragDir, '--data', path.join(tmp.dir, 'gw'), '--verify-rate', '1', '--json']);
  procs.push(gateway);
  url = ((await gateway.ready) as { url: string }).url;
  await waitFor(async () => {
    const models = await (await fetch(`${url}/v1/models`)).json() as { data: { id: string }[] };
    modelId = models.data[0]?.id;
    return Boolean(modelId);
  }, 'the model listed', 30_000, 250);
}, 120_000);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGTERM')));
  await killAll();
  tmp.cleanup();
});

describe('gridpipe gateway --verify-rate 1', () => {
  it('checks routed work, reports it on /metrics, condemns the noisy supplier and stops routing to it', async () => {
    // Checks run after each response, off the request's path, one at a time.
    for (let i = 0; i < 15 && !(await metric('gridpipe_verify_condemned_total')); i++) await complete();
    await waitFor(async () => (await metric('gridpipe_verify_condemned_total')) >= 1, 'the cheater condemned', 60_000, 250);
    const condemned = await metric('gridpipe_verify_condemned_total');
    expect(condemned).toBe(1);
    // The cheater is condemned whether it served the step (supplier) or was asked to check an honest one (checker).
    expect(await metric('gridpipe_verify_checks_total{result="supplier-condemned"}') + await metric('gridpipe_verify_checks_total{result="checker-condemned"}')).toBe(1);
    const warning = gateway.output().split('\n').find((l) => l.includes('returned wrong outputs'));
    expect(warning).toContain(cheater);
    expect(await metric('gridpipe_verify_checked_steps_total')).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) expect(await complete()).not.toContain(cheater);
    // The verdicts are on the public feed too (issue 21): the condemnation names the cheater; agreements are there.
    const isCondemning = (v: Record<string, unknown>): boolean => v.result === 'supplier-condemned' || v.result === 'checker-condemned';
    const verdicts = await feedEvents('verify.verdict', (events) => events.some(isCondemning) && events.some((v) => v.result === 'agree'));
    const condemning = verdicts.filter(isCondemning);
    expect(condemning).toHaveLength(1);
    expect([condemning[0].supplier, condemning[0].checker]).toContain(cheater);
    expect(verdicts.some((v) => v.result === 'agree')).toBe(true);
    expect(verdicts.every((v) => !('key' in v))).toBe(true);
  });
});
