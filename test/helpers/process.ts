/** Long-running `gridpipe` processes for integration tests: start, wait for their JSON ready line, stop. */
import { readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { spawnGridpipe, type GridpipeProcess } from '../../cli/spawn.js';
import { CLI, REPO_ROOT } from './cli.js';

export type RunningProcess = GridpipeProcess;

const running = new Set<ChildProcess>();

/** Starts the built `gridpipe ...args` in the background (under `prefix`, e.g. `ip netns exec NS`), tracked for killAll. */
export function startGridpipe(args: string[], env: NodeJS.ProcessEnv = {}, prefix?: string[]): RunningProcess {
  const proc = spawnGridpipe(args, { cli: CLI, cwd: REPO_ROOT, env: { GRIDPIPE_LOG_LEVEL: 'warn', ...env }, prefix });
  running.add(proc.child);
  void proc.exited.then(() => running.delete(proc.child));
  return proc;
}

/** Kills every process still running (afterAll safety net). */
export async function killAll(): Promise<void> {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** Whether a process with this pid is still running. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resident memory of a process, bytes (Linux /proc/PID/status VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}
