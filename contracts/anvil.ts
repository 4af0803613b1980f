/**
 * A real local EVM node for tests, benchmarks and the devnet: Foundry's anvil, from npm
 * (`@foundry-rs/anvil-<platform>-<arch>`), started directly (not through the npm wrapper, whose death
 * would leave the binary running) on a free loopback port. `stop()` ends it for sure (SIGTERM, then
 * SIGKILL), and every anvil still running is killed when this process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { GridpipeError } from '../errors/base.js';

export interface AnvilOptions {
  /** Chain id (default 31337). */
  chainId?: number;
  /** Funded dev accounts (default 10). */
  accounts?: number;
  /** Ether per dev account (default 10000). */
  balanceEth?: number;
  /** Seconds between blocks; default: a block per transaction (automine). */
  blockTime?: number;
  /** Genesis timestamp (unix seconds). */
  timestamp?: number;
  /** Extra anvil arguments. */
  args?: string[];
  /** How long to wait for it to answer (default 30 s). */
  startTimeoutMs?: number;
  /** The anvil binary (default: the one from the platform's npm package, or $GRIDPIPE_ANVIL). */
  binary?: string;
}

export interface DevAccount {
  address: string;
  /** Anvil's well-known dev key: public knowledge, for local chains only. */
  privateKey: string;
}

export interface AnvilNode {
  rpcUrl: string;
  port: number;
  chainId: number;
  pid: number;
  /** The funded dev accounts anvil created, in order. */
  accounts: DevAccount[];
  /** Kills the node (SIGTERM, SIGKILL after 3 s) and resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

export class AnvilError extends GridpipeError<'ANVIL'> {
  override name = 'AnvilError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('ANVIL', message, options);
  }
}

const PLATFORM_PACKAGES: Record<string, string> = {
  'linux-x64': '@foundry-rs/anvil-linux-amd64',
  'linux-arm64': '@foundry-rs/anvil-linux-arm64',
  'darwin-x64': '@foundry-rs/anvil-darwin-amd64',
  'darwin-arm64': '@foundry-rs/anvil-darwin-arm64',
  'win32-x64': '@foundry-rs/anvil-win32-amd64',
};

/** The path of the anvil binary for this platform. */
export function anvilBinary(): string {
  const fromEnv = process.env.GRIDPIPE_ANVIL;
  if (fromEnv) return fromEnv;
  const pkg = PLATFORM_PACKAGES[`${process.platform}-${process.arch}`];
  if (!pkg) throw new AnvilError(`no anvil package for ${process.platform}-${process.arch}; set GRIDPIPE_ANVIL to an anvil binary`);
  const require = createRequire(import.meta.url);
  let dir: string;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new AnvilError(`${pkg} is not installed (it comes with @foundry-rs/anvil); set GRIDPIPE_ANVIL to an anvil binary`);
  }
  const bin = path.join(dir, 'bin', process.platform === 'win32' ? 'anvil.exe' : 'anvil');
  if (!existsSync(bin)) throw new AnvilError(`anvil binary missing at ${bin}`);
  return bin;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllSync(): void {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  running.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllSync);
  // A signal that would end this process without 'exit' (no other handler): kill the nodes, then
  // let the signal do what it would have done.
  for (const signal of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    const handler = (): void => {
      // Someone else handles this signal (e.g. the devnet, which stops its nodes in order): leave it to them.
      if (process.listenerCount(signal) > 1) return;
      killAllSync();
      {
        process.removeListener(signal, handler);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, handler);
  }
}

/** Starts anvil on 127.0.0.1 with an OS-chosen free port and waits until it answers JSON-RPC. */
export async function startAnvil(options: AnvilOptions = {}): Promise<AnvilNode> {
  const chainId = options.chainId ?? 31337;
  const args = [
    '--host', '127.0.0.1',
    '--port', '0',
    '--chain-id', String(chainId),
    '--accounts', String(options.accounts ?? 10),
    '--balance', String(options.balanceEth ?? 10000),
    '--color', 'never',
  ];
  if (options.blockTime !== undefined) args.push('--block-time', String(options.blockTime));
  if (options.timestamp !== undefined) args.push('--timestamp', String(options.timestamp));
  if (options.args) args.push(...options.args);

  installExitHook();
  const child = spawn(options.binary ?? anvilBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
  running.add(child);
  let exited = child.exitCode !== null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      running.delete(child);
      resolve();
    });
    child.once('error', () => {
      exited = true;
      running.delete(child);
      resolve();
    });
  });

  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!exited) child.kill('SIGKILL');
    }, 3000);
    await exitPromise;
    clearTimeout(timer);
  };

  // Keep a tail of its output for error messages; the rest is drained and dropped.
  let head = '';
  let tail = '';
  let started = false;
  const collect = (d: Buffer): void => {
    const s = d.toString();
    if (!started && head.length < 64 * 1024) head += s;
    tail = (tail + s).slice(-4096);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new AnvilError(`anvil did not start within ${options.startTimeoutMs ?? 30_000} ms: ${tail}`)), options.startTimeoutMs ?? 30_000);
      const onData = (): void => {
        const m = /Listening on 127\.0\.0\.1:(\d+)/.exec(head);
        if (m) {
          clearTimeout(timeout);
          resolve(Number(m[1]));
        }
      };
      child.stdout?.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timeout);
        reject(new AnvilError(`cannot run anvil: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timeout);
        reject(new AnvilError(`anvil exited during start (code ${code}, signal ${signal}): ${tail}`));
      });
    });
    const rpcUrl = `http://127.0.0.1:${port}`;
    const answered = await rpc<string>(rpcUrl, 'eth_chainId', []);
    if (Number(answered) !== chainId) throw new AnvilError(`anvil answered chain id ${answered}, expected ${chainId}`);
    const accounts = parseAccounts(head);
    started = true;
    head = '';
    return { rpcUrl, port, chainId, pid: child.pid ?? -1, accounts, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Runs `fn` with a fresh anvil and stops it afterwards, whatever happens. */
export async function withAnvil<T>(fn: (node: AnvilNode) => Promise<T>, options?: AnvilOptions): Promise<T> {
  const node = await startAnvil(options);
  try {
    return await fn(node);
  } finally {
    await node.stop();
  }
}

/** One JSON-RPC call over HTTP (used for readiness and anvil's dev methods). */
export async function rpc<T>(rpcUrl: string, method: string, params: unknown[]): Promise<T> {
  const res = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const body = (await res.json()) as { result?: T; error?: { code: number; message: string } };
  if (body.error) throw new AnvilError(`${method} failed: ${body.error.message}`);
  return body.result as T;
}

/** Moves the chain's clock forward by `seconds` and mines a block (anvil/hardhat dev methods). */
export async function increaseTime(rpcUrl: string, seconds: number): Promise<void> {
  await rpc(rpcUrl, 'evm_increaseTime', [seconds]);
  await rpc(rpcUrl, 'evm_mine', []);
}

/** Takes a snapshot of the chain; `revertSnapshot` returns to it (once per snapshot). */
export function snapshot(rpcUrl: string): Promise<string> {
  return rpc<string>(rpcUrl, 'evm_snapshot', []);
}

export async function revertSnapshot(rpcUrl: string, id: string): Promise<void> {
  const ok = await rpc<boolean>(rpcUrl, 'evm_revert', [id]);
  if (!ok) throw new AnvilError(`evm_revert ${id} failed`);
}

function parseAccounts(banner: string): DevAccount[] {
  const section = (title: string): string[] => {
    const start = banner.indexOf(title);
    if (start < 0) return [];
    const lines = banner.slice(start).split('\n').slice(2);
    const out: string[] = [];
    for (const line of lines) {
      const m = /^\((\d+)\)\s+(0x[0-9a-fA-F]+)/.exec(line.trim());
      if (m) out.push(m[2]);
      else if (line.trim() !== '' || out.length) break;
    }
    return out;
  };
  const addresses = section('Available Accounts');
  const keys = section('Private Keys');
  return addresses.map((address, i) => ({ address, privateKey: keys[i] ?? '' })).filter((a) => a.privateKey);
}
