/**
 * `gridpipe model` end to end (build, inspect, fragment, verify) as a user runs it, and its refusals: a tampered
 * fragment, a file that is not ONNX, a truncated model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, truncateSync, unlinkSync, writeFileSync, statSync, appendFileSync } from 'node:fs';
import path from 'node:path';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
const dir = tmp.dir;
const tiny = path.join(dir, 'tiny.onnx');

beforeAll(async () => {
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, kvCache: true, seed: 3 }), tiny);
});
afterAll(() => tmp.cleanup());

/** Bad input: exit 2 and exactly one error line on stderr that says what is wrong. */
function expectOneLineError(result: { code: number; stderr: string }, pattern: RegExp): void {
  expect(result.code).toBe(2);
  const errors = result.stderr.trim().split('\n').filter((line) => line.startsWith('gridpipe: '));
  expect(errors, result.stderr).toHaveLength(1);
  expect(errors[0]).toMatch(/^gridpipe: error: /);
  expect(errors[0]).toMatch(pattern);
  // Nothing else but progress lines: no stack trace.
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

describe('gridpipe model (CLI)', () => {
  it('builds, inspects, fragments and verifies a model end to end', async () => {
    const built = await runCli(['model', 'build', '--arch', 'llama', '--layers', '2', '--d-model', '32', '--heads', '4', '--kv-heads', '2', '--kv-cache', '--seed', '5', '--out', path.join(dir, 'llama.onnx'), '--json']);
    expect(built.code, built.stderr).toBe(0);
    expect(JSON.parse(built.stdout).inputs).toContain('past_key_values.0.key');

    const inspected = await runCli(['model', 'inspect', path.join(dir, 'llama.onnx'), '--json']);
    expect(inspected.code, inspected.stderr).toBe(0);
    const info = JSON.parse(inspected.stdout);
    expect(info.statefulPairs).toBe(4);
    expect(info.cutPoints).toBeGreaterThan(3);
    expect(info.parameters).toBeGreaterThan(0);

    const out = path.join(dir, 'llama-frags');
    const fragmented = await runCli(['model', 'fragment', path.join(dir, 'llama.onnx'), '--parts', '3', '--out', out, '--json']);
    expect(fragmented.code, fragmented.stderr).toBe(0);
    const { manifest, manifestCid } = JSON.parse(fragmented.stdout);
    expect(manifest.fragments).toHaveLength(3);
    expect(manifestCid).toMatch(/^b/);

    const verified = await runCli(['model', 'verify', out, '--tolerance', '1e-5', '--json']);
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout).ok).toBe(true);

    const human = await runCli(['model', 'verify', out, '--dim', 'past_sequence_length=5', '--dim', 'sequence_length=2']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/verified/);
    expect(human.stdout).toMatch(/input_ids\[1×2\]/);
  });

  it('verify fails when a fragment file was tampered with', async () => {
    const out = path.join(dir, 'tamper');
    expect((await runCli(['model', 'fragment', tiny, '--parts', '2', '--out', out])).code).toBe(0);
    appendFileSync(path.join(out, 'fragment-1.onnx'), Buffer.from([0]));
    expectOneLineError(await runCli(['model', 'verify', out]), /fragment 1: fragment-1\.onnx does not match its CID/);
  });

  it('rejects a file that is not ONNX', async () => {
    const bad = path.join(dir, 'notes.onnx');
    writeFileSync(bad, '{"this is": "json, not onnx"}\n');
    expectOneLineError(await runCli(['model', 'fragment', bad, '--parts', '2', '--out', path.join(dir, 'x')]), /not an ONNX model/);
    expectOneLineError(await runCli(['model', 'inspect', bad]), /not an ONNX model/);
  });

  it('rejects a truncated model', async () => {
    const cut = path.join(dir, 'cut.onnx');
    writeFileSync(cut, readFileSync(tiny));
    truncateSync(cut, Math.floor(statSync(cut).size / 2));
    expectOneLineError(await runCli(['model', 'fragment', cut, '--parts', '2', '--out', path.join(dir, 'y')]), /truncated/);
  });

  it('rejects a model whose external data is missing or short', async () => {
    const ext = path.join(dir, 'ext.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 1, dModel: 32, heads: 2, seed: 1 }), ext, { externalData: 'always' });
    truncateSync(`${ext}.data`, 100);
    expectOneLineError(await runCli(['model', 'inspect', ext]), /external data file .* is truncated/);
    unlinkSync(`${ext}.data`);
    expectOneLineError(await runCli(['model', 'fragment', ext, '--parts', '2', '--out', path.join(dir, 'z')]), /external data file .*ext\.onnx\.data is missing/);
  });

  it('rejects more parts than the model has cut points', async () => {
    expectOneLineError(await runCli(['model', 'fragment', tiny, '--parts', '500', '--out', path.join(dir, 'w')]), /cannot cut into 500 parts: the graph has only \d+ possible cut points/);
  });

  it('rejects bad arguments with exit 2', async () => {
    const zero = await runCli(['model', 'fragment', tiny, '--parts', '0', '--out', path.join(dir, 'v')]);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/--parts.*positive integer/);
    const both = await runCli(['model', 'fragment', tiny, '--out', path.join(dir, 'v')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/exactly one of --parts K or --max-bytes N/);
    const missing = await runCli(['model', 'inspect', path.join(dir, 'nope.onnx')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no such file/);
  });

  it('cuts by --max-bytes', async () => {
    const out = path.join(dir, 'maxbytes');
    const result = await runCli(['model', 'fragment', tiny, '--max-bytes', '40KiB', '--out', out, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const { manifest } = JSON.parse(result.stdout);
    expect(manifest.fragments.length).toBeGreaterThan(1);
    for (const f of manifest.fragments) expect(f.weightBytes).toBeLessThanOrEqual(40 * 1024);
  });
});
