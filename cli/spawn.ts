/** Running `gridpipe` commands as child processes and waiting for their `{"ready":true,...}` line (devnet, benches, tests). */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI beside this module (dist/cli/main.js). */
export const CLI_ENTRY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

export interface GridpipeProcess {
  child: ChildProcess;
  /** The first JSON line on stdout that says `"ready":true`. */
  ready: Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
  /** Everything it printed so far. */
  output(): string;
  /** Sends a signal (default SIGTERM) unless it has exited, and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface SpawnOptions {
  /** The CLI entry file (default: the built one beside this module). */
  cli?: string;
  cwd?: string;
  /** Added to the environment; GRIDPIPE_LOG_LEVEL defaults to 'warn'. */
  env?: NodeJS.ProcessEnv;
  /** Kill it and reject `ready` when no ready line came in this time (default: wait as long as it runs). */
  readyTimeoutMs?: number;
  /** Lines of its stderr quoted when it fails before ready (default 20). */
  errorLines?: number;
  /** A command that runs node for it, e.g. `['ip', 'netns', 'exec', NS]` (a test in network namespaces). */
  prefix?: string[];
}

/** Starts `gridpipe ...args` in the background. */
export function spawnGridpipe(args: string[], options: SpawnOptions = {}): GridpipeProcess {
  const command = [...(options.prefix ?? []), process.execPath, options.cli ?? CLI_ENTRY, ...args];
  const child = spawn(command[0], command.slice(1), {
    cwd: options.cwd,
    env: { ...process.env, GRIDPIPE_LOG_LEVEL: process.env.GRIDPIPE_LOG_LEVEL ?? 'warn', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const tail = (): string => err.trim().split('\n').slice(-(options.errorLines ?? 20)).join('\n');
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = options.readyTimeoutMs === undefined ? undefined : setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`gridpipe ${args[0]} was not ready after ${options.readyTimeoutMs! / 1000} s:\n${tail()}`));
    }, options.readyTimeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{') && l.includes('"ready":true'));
      if (!line) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as Record<string, unknown>);
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`gridpipe ${args[0]} exited (${code}) before it was ready:\n${tail()}`)); });
  });
  ready.catch(() => undefined);
  return {
    child, ready, exited,
    output: () => `${out}\n${err}`,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
