/**
 * `gridpipe model fragment --quantize` as a user runs it: bad options exit 2 with one line; the manifest's error
 * figures are what a fresh `model verify` measures, and an edited figure fails verify.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-quantize-cli-');
const model = path.join(tmp.dir, 'gpt.onnx');
beforeAll(async () => {
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 64, heads: 4, vocab: 256, kvCache: true, seed: 9 }), model);
});
afterAll(() => tmp.cleanup());

/** Bad input: exit 2, the problem named on stderr, no stack trace. */
function expectBadInput(result: { code: number; stderr: string }, pattern: RegExp): void {
  expect(result.code, result.stderr).toBe(2);
  expect(result.stderr).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

describe('gridpipe model fragment --quantize (CLI)', () => {
  it('rejects bad quantization options with exit 2', async () => {
    const out = path.join(tmp.dir, 'bad');
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--quantize', 'int3']), /argument 'int3' is invalid\. Allowed choices are int8, int4/);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--quantize', 'int8', '--block', '48']), /argument '48' is invalid\. Allowed choices are 32, 64, 128/);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--block', '64']), /^gridpipe: error: --block needs --quantize int8\|int4$/m);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--text', model]), /^gridpipe: error: --text needs --quantize int8\|int4$/m);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--quantize', 'int4', '--text', model]), /--text needs the model's tokenizer\.json/);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--calibrate', model]), /^gridpipe: error: --calibrate needs --quantize int8\|int4$/m);
    expectBadInput(await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--quantize', 'int4', '--calibrate', model]), /--calibrate needs the model's tokenizer\.json/);
  });

  it('writes quantized fragments whose manifest figures a fresh verify reproduces; an edited figure fails verify', async () => {
    const out = path.join(tmp.dir, 'int8');
    const made = await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--quantize', 'int8', '--block', '32', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const { manifest } = JSON.parse(made.stdout);
    expect(manifest.quantization).toMatchObject({ scheme: 'int8', bits: 8, block: 32 });
    expect(manifest.fragments[0].quantization.scheme).toBe('int8');

    const verified = await runCli(['model', 'verify', out]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/^ok {3}logits: max abs error \S+, mean \S+, relative \S+ \(bound 0\.05\)$/m);
    expect(verified.stdout).toMatch(/next-token agreement [\d.]+% over 256 positions/);
    expect(verified.stdout).toMatch(/verified: int8 fragments within bound, figures match the manifest/);

    const file = path.join(out, 'manifest.json');
    const edited = JSON.parse(readFileSync(file, 'utf8'));
    edited.quantization.figures.languageModel.tokenAgreement = 0.5;
    writeFileSync(file, JSON.stringify(edited));
    const failed = await runCli(['model', 'verify', out]);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/MISMATCH languageModel\.tokenAgreement: recorded 0\.5, measured /);
  });
});
