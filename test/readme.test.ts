/**
 * The README's commands stay true: every `gridpipe` command in its shell blocks names a real
 * subcommand and only options that subcommand has, every `npm run` names a script, every benchmark
 * named exists. (What the commands do is exercised by the suites of their parts and by the devnet
 * end-to-end test, which runs the commands the devnet prints.)
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { createProgram } from '../cli/main.js';
import { REPO_ROOT } from './helpers/cli.js';

const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

/** Shell lines of the README's ```sh blocks, continuation lines joined and comments dropped. */
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

const commands = shellLines(readme).flatMap(commandsOf);
const gridpipeCommands = commands.map(words).filter((w) => w[0] === 'gridpipe' || (w[0] === 'npx' && w[1] === 'gridpipe')).map((w) => (w[0] === 'npx' ? w.slice(1) : w));

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

describe('README commands', () => {
  it('has gridpipe commands to check', () => {
    expect(gridpipeCommands.length).toBeGreaterThan(10);
  });

  it.each(gridpipeCommands.map((w) => [w.join(' '), w] as const))('%s: subcommand and options exist', (_line, w) => {
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

  it('names only npm scripts that exist and benchmarks that exist', async () => {
    const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const benchSource = readFileSync(path.join(REPO_ROOT, 'bench', 'run.ts'), 'utf8');
    for (const w of commands.map(words).filter((x) => x[0] === 'npm' && x[1] === 'run')) {
      expect(pkg.scripts[w[2]], `npm script "${w[2]}"`).toBeDefined();
      if (w[2] === 'bench' && w[3] === '--') {
        for (const name of w.slice(4).filter((x) => !x.startsWith('-'))) expect(benchSource, `benchmark "${name}"`).toMatch(new RegExp(`\\b${name}: \\w+Bench`));
      }
    }
  });
});
