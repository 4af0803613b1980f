/** The devnet's child processes: suppliers and the gateway, started with `gridpipe` and stopped in order. */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { spawnGridpipe } from '../spawn.js';
import { GridpipeError } from '../../errors/base.js';

export const READY_TIMEOUT_MS = 90_000;

export interface RunningSupplier {
  child: ChildProcess;
  index: number;
  peerId: string;
  address: string;
  admin?: string;
  fragments: number[];
}

export interface RunningGateway { child: ChildProcess; url: string; explorer?: string }

/** Starts `gridpipe COMMAND ... --json`, waits for its ready line; a failure names `label`. */
async function startReady<T>(label: string, command: string, args: string[], env: NodeJS.ProcessEnv, logFile?: string): Promise<{ child: ChildProcess; ready: T }> {
  const proc = spawnGridpipe([command, ...args, '--json'], { readyTimeoutMs: READY_TIMEOUT_MS, errorLines: 3, env });
  if (logFile) keepLog(proc.child, logFile);
  try {
    return { child: proc.child, ready: (await proc.ready) as T };
  } catch (err) {
    throw new GridpipeError('DEVNET_START', `${label}: ${(err as Error).message}`, { cause: err });
  }
}

/** Appends a child's output (its pino log lines on stderr, its JSON lines on stdout) to `file` (mode 0600). */
function keepLog(child: ChildProcess, file: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const out = createWriteStream(file, { flags: 'a', mode: 0o600 });
  child.stdout?.on('data', (d: Buffer) => out.write(d));
  child.stderr?.on('data', (d: Buffer) => out.write(d));
  child.once('exit', () => out.end());
}

/** Starts one `gridpipe supply` process and waits for its ready line; its output goes to `logFile` when given. */
export async function startSupplier(index: number, args: string[], env: NodeJS.ProcessEnv, logFile?: string): Promise<RunningSupplier> {
  const { child, ready } = await startReady<{ peerId: string; addresses: string[]; admin?: string; hosted: { index: number }[] }>(`supplier ${index}`, 'supply', args, env, logFile);
  return { child, index, peerId: ready.peerId, address: ready.addresses[0], admin: ready.admin, fragments: ready.hosted.map((h) => h.index) };
}

/** Starts `gridpipe gateway` and waits for its ready line; its output goes to `logFile` when given. */
export async function startGatewayProcess(args: string[], env: NodeJS.ProcessEnv, logFile?: string): Promise<RunningGateway> {
  const { child, ready } = await startReady<{ url: string; explorer?: string }>('gateway', 'gateway', args, env, logFile);
  return { child, url: ready.url, explorer: ready.explorer };
}

/** Starts `gridpipe arbiter` (issue 21) and waits for its ready line; its output goes to `logFile` when given. */
export async function startArbiterProcess(args: string[], env: NodeJS.ProcessEnv, logFile?: string): Promise<{ child: ChildProcess; address: string }> {
  const { child, ready } = await startReady<{ arbiter: string }>('arbiter', 'arbiter', args, env, logFile);
  return { child, address: ready.arbiter };
}

/** Stops processes with SIGTERM (they withdraw records, redeem vouchers), then SIGKILL after `graceMs`. */
export async function stopProcesses(children: ChildProcess[], graceMs = 15_000): Promise<void> {
  await Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => { clearTimeout(kill); resolve(); });
    child.kill('SIGTERM');
  })));
}
