/**
 * The README's and the guides' (docs/*.md) commands stay true: every `gridpipe` command in their shell
 * blocks names a real subcommand and only options that subcommand has, every `npm run` names a script,
 * every benchmark named exists, every link to a file in the repository (and to a heading in it) resolves,
 * and docs/cli.md is exactly what cli/reference.ts writes from the CLI's own definitions. (What the
 * commands do is exercised by the suites of their parts and by the devnet end-to-end test, which runs the
 * commands the devnet prints.)
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { createProgram } from '../cli/main.js';
import { commandReference } from '../cli/reference.js';
import { REPO_ROOT } from './helpers/cli.js';

/** README.md and every page of docs/, as paths from the repository root. */
const PAGES = ['README.md', ...readdirSync(path.join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const read = (page: string): string => readFileSync(path.join(REPO_ROOT, page), 'utf8');

/** Shell lines of a page's ```sh blocks, continuation lines joined and comments dropped. */
function shellLines(markdown: string): string[] {
  const lines: string[] = [];
  for (const block of markdown.matchAll(/```(?:sh|bash)\n([\s\S]*?)```/g)) {
    const joined = block[1].replace(/\\\n\s*/g, ' ');
    for (const raw of joined.split('\n')) {
      const line = raw.replace(/\s+#\s.*$/, '').trim();
      if (line && !line.startsWith('#')) lines.push(line);
    }
  }
  return lines;
}

/** The commands of a line joined with && or |. */
const commandsOf = (line: string): string[] => line.split(/\s*(?:&&|\|\|?|;)\s*/).filter(Boolean);

/** Splits a command into words, keeping quoted strings whole. */
const words = (command: string): string[] => [...command.matchAll(/'[^']*'|"[^"]*"|\S+/g)].map((m) => m[0]);

const commandsIn = (page: string): string[] => shellLines(read(page)).flatMap(commandsOf);
const gridpipeCommandsIn = (page: string): string[][] => commandsIn(page).map(words)
  .filter((w) => w[0] === 'gridpipe' || (w[0] === 'npx' && w[1] === 'gridpipe')).map((w) => (w[0] === 'npx' ? w.slice(1) : w));

const ALL_GRIDPIPE = PAGES.flatMap((page) => gridpipeCommandsIn(page).map((w) => [page, w.join(' '), w] as const));

function findCommand(program: Command, args: string[]): { command: Command; rest: string[] } {
  let command = program;
  let rest = args;
  for (;;) {
    const sub = command.commands.find((c) => c.name() === rest[0] || c.aliases().includes(rest[0]));
    if (!sub) return { command, rest };
    command = sub;
    rest = rest.slice(1);
  }
}

/** A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as dashes. */
const slug = (heading: string): string => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');

/** The anchors of a page's headings (outside code blocks). */
function anchorsOf(markdown: string): Set<string> {
  const text = markdown.replace(/```[\s\S]*?```/g, '');
  return new Set([...text.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => slug(m[1])));
}

/** Links of a page to places in the repository: [text](target), not web addresses, outside code blocks. */
function localLinks(markdown: string): string[] {
  const text = markdown.replace(/```[\s\S]*?```/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]).filter((t) => !/^[a-z]+:/i.test(t));
}

describe('README and docs commands', () => {
  it('has gridpipe commands to check, in the README and in the guides', () => {
    expect(ALL_GRIDPIPE.length).toBeGreaterThan(40);
    expect(gridpipeCommandsIn('README.md').length).toBeGreaterThan(0);
    expect(PAGES).toEqual(expect.arrayContaining(['docs/devnet.md', 'docs/supplier.md', 'docs/api.md', 'docs/models.md', 'docs/payments.md', 'docs/cli.md', 'docs/configuration.md', 'docs/architecture.md', 'docs/benchmarks.md']));
  });

  it.each(ALL_GRIDPIPE)('%s: %s: subcommand and options exist', (_page, _line, w) => {
    const program = createProgram();
    const { command, rest } = findCommand(program, w.slice(1));
    expect(command, `no subcommand for "${w.slice(1, 3).join(' ')}"`).not.toBe(program);
    // A group is fine when it also runs on its own arguments (`stake AMOUNT` beside `stake bind`).
    expect(command.commands.length === 0 || command.registeredArguments.length > 0, `"${w.join(' ')}" stops at a command group`).toBe(true);
    const longs = new Set(command.options.flatMap((o) => [o.long, o.negate ? o.long : undefined]).filter(Boolean));
    longs.add('--help');
    for (const word of rest) {
      if (!word.startsWith('--')) continue;
      const flag = word.split('=')[0];
      expect(longs.has(flag), `"${command.name()}" has no option ${flag}`).toBe(true);
    }
  });

  it.each(PAGES)('%s names only npm scripts that exist and benchmarks that exist', (page) => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    const benchSource = read('bench/run.ts');
    for (const w of commandsIn(page).map(words).filter((x) => x[0] === 'npm' && x[1] === 'run')) {
      expect(pkg.scripts[w[2]], `npm script "${w[2]}"`).toBeDefined();
      if (w[2] === 'bench' && w[3] === '--') {
        for (const name of w.slice(4).filter((x) => !x.startsWith('-'))) expect(benchSource, `benchmark "${name}"`).toMatch(new RegExp(`\\b${name}'?: \\w+Bench`));
      }
    }
  });

  it.each(PAGES)('%s links only to files and headings that exist', (page) => {
    const markdown = read(page);
    for (const link of localLinks(markdown)) {
      const [target, anchor] = link.split('#');
      const file = target ? path.resolve(path.dirname(path.join(REPO_ROOT, page)), decodeURIComponent(target)) : path.join(REPO_ROOT, page);
      expect(existsSync(file), `${page} links to ${link}: no such file`).toBe(true);
      if (anchor && file.endsWith('.md') && statSync(file).isFile()) {
        expect(anchorsOf(readFileSync(file, 'utf8')).has(anchor), `${page} links to ${link}: no such heading`).toBe(true);
      }
    }
  });

  it('README stays a short page (under 200 lines)', () => {
    expect(read('README.md').split('\n').length).toBeLessThan(200);
  });

  it('docs/cli.md is what the CLI\'s definitions generate (run npm run docs:cli after changing a command)', () => {
    expect(read('docs/cli.md')).toBe(commandReference());
  });
});
