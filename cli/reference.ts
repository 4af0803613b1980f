/**
 * docs/cli.md, the command reference, written from the CLI's own definitions (`createProgram()`): each
 * command's usage, description, arguments and options with their defaults, so the page cannot drift from
 * the code. `npm run docs:cli` rewrites it; test/readme.test.ts fails when the file differs from what this
 * would write. Defaults are shown as a fresh machine sees them: the home folder as `~` and no GRIDPIPE_*
 * variable set (an API key in the environment must never land in the docs).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command, Help, Option } from 'commander';
import { createProgram } from './main.js';

const HEADER = `# Command reference

Generated from the CLI's own definitions by \`npm run docs:cli\` (cli/reference.ts); do not edit by hand:
test/readme.test.ts fails when this page differs from what the script writes. Defaults are shown as on a
fresh machine (home folder as \`~\`, no \`GRIDPIPE_*\` variables set). Every command also takes
\`-h, --help\`. Bad input exits with code 2 and one line on stderr; other expected failures exit 1.
`;

/** The program as a fresh machine builds it: without the GRIDPIPE_* variables some defaults read. */
function pristineProgram(): Command {
  const saved = Object.entries(process.env).filter(([k]) => k.startsWith('GRIDPIPE_'));
  for (const [k] of saved) delete process.env[k];
  try {
    return createProgram();
  } finally {
    for (const [k, v] of saved) process.env[k] = v;
  }
}

/** Text for a table cell: the home folder as `~`, pipes escaped, on one line. */
function cell(text: string): string {
  const home = os.homedir();
  const portable = home.length > 1 ? text.split(home).join('~') : text;
  return portable.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The commands under `cmd`, depth first, with their full names. */
function walk(cmd: Command, prefix: string[] = []): Array<{ name: string; command: Command }> {
  const out: Array<{ name: string; command: Command }> = [];
  for (const sub of cmd.commands) {
    const name = [...prefix, sub.name()];
    out.push({ name: name.join(' '), command: sub });
    out.push(...walk(sub, name));
  }
  return out;
}

/** What an option's default reads as in the table ("required" for a mandatory option). */
function defaultOf(option: Option): string {
  if (option.mandatory) return 'required';
  if (option.defaultValueDescription) return option.defaultValueDescription;
  if (option.defaultValue === undefined || option.defaultValue === false) return '';
  if (Array.isArray(option.defaultValue)) return option.defaultValue.length ? option.defaultValue.join(', ') : '';
  return String(option.defaultValue);
}

/** One option's description with its choices, as the help would show them (without the default). */
function describeOption(option: Option): string {
  const extra = [option.argChoices ? `choices: ${option.argChoices.join(', ')}` : '', option.envVar ? `env: ${option.envVar}` : ''].filter(Boolean);
  return extra.length ? `${option.description} (${extra.join('; ')})` : option.description;
}

function section(help: Help, name: string, command: Command): string {
  const lines = [`## gridpipe ${name}`, '', command.description(), '', '```text', `gridpipe ${name} ${command.usage()}`.trimEnd(), '```', ''];
  const args = help.visibleArguments(command);
  if (args.length) {
    lines.push('| Argument | Description |', '|---|---|');
    for (const a of args) lines.push(`| \`${help.argumentTerm(a)}\` | ${cell(help.argumentDescription(a))} |`);
    lines.push('');
  }
  const options = help.visibleOptions(command).filter((o) => o.long !== '--help');
  if (options.length) {
    lines.push('| Option | Description | Default |', '|---|---|---|');
    for (const o of options) lines.push(`| \`${o.flags}\` | ${cell(describeOption(o))} | ${cell(defaultOf(o))} |`);
    lines.push('');
  }
  const subs = command.commands.map((c) => `\`gridpipe ${name} ${c.name()}\``);
  if (subs.length) lines.push(`Subcommands: ${subs.join(', ')}.`, '');
  return lines.join('\n');
}

/** The whole of docs/cli.md. */
export function commandReference(): string {
  const program = pristineProgram();
  const help = program.createHelp();
  const commands = walk(program);
  const index = commands.map(({ name, command }) => `- [\`gridpipe ${name}\`](#${`gridpipe ${name}`.replace(/\s+/g, '-')}): ${cell(command.description())}`);
  const rootOptions = help.visibleOptions(program).filter((o) => o.long !== '--help').map((o) => `\`${o.flags}\` (${o.description})`);
  return [
    HEADER,
    `\`gridpipe [options] [command]\`: ${program.description()}. Options: ${rootOptions.join(', ')}.`,
    '',
    ...index,
    '',
    ...commands.map(({ name, command }) => section(help, name, command)),
  ].join('\n').replace(/\n+$/, '\n');
}

/** Where the page lives (docs/cli.md in the source tree, also when run from dist/). */
export function referencePath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, '..', '..') : path.resolve(here, '..');
  return path.join(root, 'docs', 'cli.md');
}

/** `--check`: exit 1 when docs/cli.md is stale; otherwise rewrite it. */
function run(): void {
  const file = referencePath();
  const text = commandReference();
  if (process.argv.includes('--check')) {
    let current = '';
    try { current = readFileSync(file, 'utf8'); } catch { /* missing: stale */ }
    if (current !== text) {
      process.stderr.write(`${file} is stale: run npm run docs:cli\n`);
      process.exitCode = 1;
    }
    return;
  }
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) run();
