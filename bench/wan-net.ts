/**
 * Emulated internet links between several hosts on one machine, for the WAN bench and chain mode's namespace
 * test (issue 19; root and iproute2 needed, as for test/nat/):
 * every host in its own network namespace, each joined by a veth pair to one hub namespace that does not
 * route between them (ip_forward off). Host i (0-based) is 10.99.<i+1>.2, the hub's side of its link
 * 10.99.<i+1>.1. A host listens on its own address and announces the hub's side; a shaped forwarder in the hub
 * (test/helpers/netns-hub.ts, netns-link.ts) accepts there and connects on to the host with the link's delay and rate each
 * way. So every connection between two hosts crosses exactly one emulated link (the listener's), whoever
 * dials it, and nothing reaches a host's own address from outside: it cannot be bypassed.
 *
 * Namespaces are named `gp-<pid>-w<n>-<role>`, removed by `destroy()` and at the test process's exit. Only
 * addresses inside them are used; they have no uplink.
 */
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnGridpipe, type GridpipeProcess } from '../cli/spawn.js';

/** The repository (this file runs from bench/ under tsx, or from dist/bench/). */
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.basename(path.dirname(HERE)) === 'dist' ? path.resolve(HERE, '..', '..') : path.resolve(HERE, '..');
/** The built command (tests and the bench both run it). */
const CLI = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
/** The hub's forwarders: the NAT tests' link emulator (test/helpers/netns-link.ts), run by tsx. */
const HUB_SCRIPT = path.join(REPO_ROOT, 'test', 'helpers', 'netns-hub.ts');

/** One direction of an emulated link (test/helpers/netns-link.ts LinkShape). */
export interface LinkShape { delayMs?: number; jitterMs?: number; lossRate?: number; rateBitsPerS?: number }
type RunningProcess = GridpipeProcess;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface WanTopology {
  hub: string;
  /** Host namespaces, in order. */
  hosts: string[];
  /** Host i's own address (reachable only through its link). */
  hostIp(i: number): string;
  /** The hub's side of host i's link: what host i announces. */
  linkIp(i: number): string;
  /** The prefix that runs a command inside namespace `ns`. */
  inside(ns: string): string[];
  /** Starts `gridpipe ...args` inside host i's namespace (the caller stops it). */
  gridpipe(i: number, args: string[], env?: NodeJS.ProcessEnv): RunningProcess;
  /**
   * Starts the hub's forwarders: for each (host, port), linkIp:port → hostIp:port shaped by `shape` each way;
   * with `traceFile`, every chunk they carry is logged there (bench/wan-trace.ts reads it).
   */
  startLinks(listeners: { host: number; port: number }[], shape: LinkShape, traceFile?: string): Promise<RunningProcess>;
  /** Kills the hub's process and deletes the namespaces. Safe to call twice. */
  destroy(): void;
}

const live = new Set<string>();
let exitHook = false;
let made = 0;

function remove(names: Iterable<string>): void {
  for (const ns of [...names]) {
    try { ip('netns', 'del', ns); } catch { /* gone */ }
    live.delete(ns);
  }
}

/** Makes the hub and `count` host namespaces and their links (see the module comment). */
export function createWanTopology(count: number): WanTopology {
  const base = `gp-${process.pid}-w${made++}`;
  const hub = `${base}-hub`;
  const hosts = Array.from({ length: count }, (_, i) => `${base}-h${i}`);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => remove(live));
  }
  const mine = [hub, ...hosts];
  const hostIp = (i: number): string => `10.99.${i + 1}.2`;
  const linkIp = (i: number): string => `10.99.${i + 1}.1`;
  try {
    for (const ns of mine) {
      ip('netns', 'add', ns);
      live.add(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    // the hub routes nothing between hosts: each reaches only the hub's own addresses
    execFileSync('ip', ['netns', 'exec', hub, 'sh', '-c', 'echo 0 > /proc/sys/net/ipv4/ip_forward']);
    hosts.forEach((ns, i) => {
      ip('link', 'add', `l${i}`, 'netns', hub, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('-n', hub, 'addr', 'add', `${linkIp(i)}/24`, 'dev', `l${i}`);
      ip('-n', ns, 'addr', 'add', `${hostIp(i)}/24`, 'dev', 'eth0');
      ip('-n', hub, 'link', 'set', `l${i}`, 'up');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'route', 'add', 'default', 'via', linkIp(i));
    });
  } catch (err) {
    remove(mine);
    throw err;
  }
  const inside = (ns: string): string[] => ['ip', 'netns', 'exec', ns];
  const hubs: RunningProcess[] = [];
  return {
    hub, hosts, hostIp, linkIp, inside,
    gridpipe: (i, args, env = {}) => spawnGridpipe(args, { cli: CLI, cwd: REPO_ROOT, env: { GRIDPIPE_LOG_LEVEL: 'warn', ...env }, prefix: inside(hosts[i]), readyTimeoutMs: 120_000 }),
    startLinks: async (listeners, shape, traceFile) => {
      const entries = listeners.map(({ host, port }) => ({ host: linkIp(host), port, target: { host: hostIp(host), port }, up: shape, down: shape }));
      const proc = spawnGridpipe([JSON.stringify(entries)], { cli: HUB_SCRIPT, cwd: REPO_ROOT, env: { NODE_OPTIONS: '--import tsx', ...(traceFile ? { GRIDPIPE_LINK_TRACE: traceFile } : {}) }, prefix: inside(hub), readyTimeoutMs: 30_000 });
      hubs.push(proc);
      await proc.ready;
      return proc;
    },
    destroy: () => {
      for (const h of hubs) h.child.kill('SIGKILL');
      remove(mine);
    },
  };
}

/** A `gridpipe generate --json` run: each token's id and when its line arrived (ms, performance.now()). */
export interface TimedGeneration { tokens: number[]; at: number[]; summary?: { tokens: number[]; route: { peerId: string }[]; failovers: number; chainedSteps?: number }; code: number | null; stderr: string }

/** Runs `gridpipe generate ...args --json` inside namespace `ns`, timing each token line as it arrives. */
export function generateInside(ns: string, args: string[], onToken?: (n: number) => void): Promise<TimedGeneration> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CLI, 'generate', ...args, '--json'], { cwd: REPO_ROOT, env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const run: TimedGeneration = { tokens: [], at: [], code: null, stderr: '' };
  let buffered = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const now = performance.now();
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      const msg = JSON.parse(line) as { token?: number; done?: boolean };
      if (msg.done) run.summary = msg as TimedGeneration['summary'];
      else if (msg.token !== undefined) {
        run.tokens.push(msg.token);
        run.at.push(now);
        onToken?.(run.tokens.length);
      }
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => { run.stderr += chunk; });
  return new Promise((resolve) => child.on('close', (code) => { run.code = code; resolve(run); }));
}
