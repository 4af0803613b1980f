/**
 * A model handed over as an export folder (model.onnx + tokenizer.json + tokenizer_config.json +
 * generation_config.json), as `gridpipe model fragment DIR` takes it: the files travel in the manifest, and a
 * broken one is refused at fragment time with exit 2 and a message naming the file (never at serve time).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import type { Manifest } from '../../fragments/manifest.js';

const tmp = tempDir('gridpipe-model-folder-');
afterAll(() => tmp.cleanup());
const DEMO = path.join(REPO_ROOT, 'models', 'demo', 'target');
const FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'];

/** A copy of the demo export folder (the model linked, not copied) with `change` applied to one of its files. */
function folderWith(name: string, change?: { file: string; text: string }): string {
  const dir = path.join(tmp.dir, name);
  mkdirSync(dir);
  symlinkSync(path.join(DEMO, 'model.onnx'), path.join(dir, 'model.onnx'));
  for (const f of FILES) copyFileSync(path.join(DEMO, f), path.join(dir, f));
  if (change) writeFileSync(path.join(dir, change.file), change.text);
  return dir;
}

const configWith = (patch: Record<string, unknown>): string => JSON.stringify({ ...JSON.parse(readFileSync(path.join(DEMO, 'tokenizer_config.json'), 'utf8')), ...patch });

describe('gridpipe model fragment DIR (an export folder)', () => {
  it('carries the tokenizer, its config (chat template) and the generation defaults in the manifest', async () => {
    const out = path.join(tmp.dir, 'frag');
    const r = await runCli(['model', 'fragment', folderWith('good'), '--parts', '2', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.name).toBe('kjv-demo');
    expect(manifest.tokenizer).toMatchObject({ kind: 'hf', file: 'tokenizer.json', config: { file: 'tokenizer_config.json' } });
    expect(readFileSync(path.join(out, 'tokenizer.json'))).toEqual(readFileSync(path.join(DEMO, 'tokenizer.json')));
    expect(manifest.generation).toEqual({ eosTokenIds: [0], temperature: 0.8, topP: 0.95 });
    expect(manifest.model.contextLength).toBe(256);
    expect(manifest.statefulPairs).toHaveLength(8);
  });

  const cases: [string, { file: string; text: string }, RegExp][] = [
    ['a tokenizer.json that is not JSON', { file: 'tokenizer.json', text: '{"model": {"type": "BPE"' }, /tokenizer\.json: not valid JSON/],
    ['a tokenizer.json that is no tokenizer', { file: 'tokenizer.json', text: '{"version": "1.0"}' }, /tokenizer\.json: not a Hugging Face tokenizer/],
    ['a tokenizer.json the library cannot load', { file: 'tokenizer.json', text: '{"model": {"type": "BPE", "vocab": 7}}' }, /tokenizer\.json: the tokenizer does not load/],
    ['a chat template with a syntax error', { file: 'tokenizer_config.json', text: configWith({ chat_template: '{% for m in messages %}{{ m.content }' }) }, /tokenizer_config\.json: the chat template fails to render/],
    ['a chat template that raises', { file: 'tokenizer_config.json', text: configWith({ chat_template: "{{ raise_exception('roles must alternate') }}" }) }, /tokenizer_config\.json: the chat template fails to render .*roles must alternate/],
    ['a generation_config.json with a bad eos id', { file: 'generation_config.json', text: '{"eos_token_id": "eos"}' }, /generation_config\.json: "eos_token_id" must be a token id/],
    ['a generation_config.json with top_p 3', { file: 'generation_config.json', text: '{"top_p": 3}' }, /generation_config\.json: "top_p" must be/],
  ];
  for (const [what, change, message] of cases) {
    it(`refuses ${what}, naming the file, with exit 2 and nothing written`, async () => {
      const dir = folderWith(what.replace(/\W+/g, '-'), change);
      const out = path.join(dir, 'out');
      const r = await runCli(['model', 'fragment', dir, '--parts', '2', '--out', out]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain(path.join(dir, change.file));
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(() => readFileSync(path.join(out, 'manifest.json'))).toThrow();
    });
  }

  it('refuses a folder with no ONNX file', async () => {
    const dir = path.join(tmp.dir, 'empty');
    mkdirSync(dir);
    const r = await runCli(['model', 'fragment', dir, '--parts', '2', '--out', path.join(dir, 'out')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`gridpipe: error: ${dir} holds no .onnx file`);
  });
});
