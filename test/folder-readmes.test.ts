/**
 * "Each folder has a short README" (README, "Working on gridpipe": what the folder offers and what it may
 * import) stays true: every folder that holds a git-tracked file has a README.md, unless it is listed below
 * with the reason it needs none, and a README's tables name only files that are there (a row whose first cell
 * is a backticked file name fails once the file is gone or renamed), so the map a newcomer reads does not rot
 * as files move.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/cli.js';

/**
 * Folders without a README of their own, each with why. Kept short: pure data, and folders that a parent's
 * README describes whole.
 */
const EXCEPTIONS: Record<string, string> = {
  '.ci': 'one script, the CI entry point; its first comment says what it does',
  docs: 'the guides themselves, linked from README.md and checked by test/readme.test.ts',
  'bench/results': 'the JSON the benchmarks write (bench/report.ts), described in bench/README.md',
  'bench/results/h200': 'the JSON of one pipeline run on a lent GPU machine, described in bench/README.md and docs/benchmarks.md',
  'models/demo/target': 'an exported model (ONNX and tokenizer files), described in models/demo/README.md',
  'models/demo/draft': 'an exported model (ONNX and tokenizer files), described in models/demo/README.md',
  'models/demo/tokenizer': 'the trained tokenizer files, described in models/demo/README.md',
  'test/fixtures/moe': 'test data (a PyTorch-exported block and the script that made it), described in test/README.md',
};

/** Sub-folders of test/ are described by test/README.md, which must name each one (checked below). */
const DESCRIBED_BY_TEST_README = (folder: string): boolean => /^test\/[^/]+$/.test(folder);

function trackedFolders(): string[] {
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    .split('\0').filter(Boolean);
  return [...new Set(files.map((f) => path.posix.dirname(f)))].sort();
}

/** A backticked token that reads as a file or folder name: a name with an extension, or ending in `/`. */
const FILE_NAME = /^(?:[\w@-][\w.@-]*\/)*[\w@-][\w.@-]*(?:\.[A-Za-z][A-Za-z0-9]*|\/)$/;

/** The file names in the first cell of each table row of a README (header and separator rows hold none). */
function namedFiles(readme: string): { line: number; name: string }[] {
  const named: { line: number; name: string }[] = [];
  readme.split('\n').forEach((text, i) => {
    if (!text.startsWith('|')) return;
    const first = text.split('|')[1] ?? '';
    for (const m of first.matchAll(/`([^`]+)`/g)) {
      if (FILE_NAME.test(m[1])) named.push({ line: i + 1, name: m[1] });
    }
  });
  return named;
}

const folders = trackedFolders();

describe('folder READMEs', () => {
  it('every folder with a tracked file has a README.md, or an exception with a reason', () => {
    const missing = folders.filter((f) => !EXCEPTIONS[f] && !DESCRIBED_BY_TEST_README(f) && !existsSync(path.join(REPO_ROOT, f, 'README.md')));
    expect(missing, `folders without a README.md: write one (see net/capacity/README.md), or list the folder in EXCEPTIONS with why`).toEqual([]);
  });

  it('every exception is a folder that still holds tracked files and still has no README', () => {
    for (const folder of Object.keys(EXCEPTIONS)) {
      expect(folders, `exception ${folder}: no tracked file there any more, drop it`).toContain(folder);
      expect(existsSync(path.join(REPO_ROOT, folder, 'README.md')), `exception ${folder}: it has a README now, drop it`).toBe(false);
    }
  });

  it('test/README.md names each sub-folder of test/', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'test', 'README.md'), 'utf8');
    const unnamed = folders.filter(DESCRIBED_BY_TEST_README).map((f) => path.posix.basename(f)).filter((name) => !readme.includes(`\`${name}/\``));
    expect(unnamed, 'sub-folders of test/ that test/README.md does not name as `name/`').toEqual([]);
  });

  it("a README's tables name only files that are in its folder", () => {
    const stale: string[] = [];
    for (const folder of folders) {
      const readme = path.join(REPO_ROOT, folder, 'README.md');
      if (!existsSync(readme)) continue;
      for (const { line, name } of namedFiles(readFileSync(readme, 'utf8'))) {
        if (!existsSync(path.join(REPO_ROOT, folder, name))) stale.push(`${path.posix.join(folder, 'README.md')}:${line} \`${name}\``);
      }
    }
    expect(stale, 'table rows naming a file that is not there').toEqual([]);
  });
});
