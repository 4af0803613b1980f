/**
 * Real network stacks on one machine for the NAT tests: Linux network namespaces joined by veth pairs
 * (iproute2), one of them a home router. Everything lives inside namespaces the test makes (the veth pairs
 * are created straight inside them; the root namespace gets no interface, address or route), so nothing
 * outside is reachable or targeted.
 *
 *   pub  (100.128.0.2/24)  ── wan0 ─ veth ─ wan0 ──  rtr (100.128.0.1/24 │ 10.78.0.1/24)  ── lan0 ─ veth ─ lan0 ──  home (10.78.0.2/24)
 *
 * `pub` is the public internet: its address is outside every range libp2p counts as private (so DCUtR and
 * the public DHT's address filter treat it as public, as on the real internet); the namespace has no uplink,
 * so it reaches nothing but the router. `home` sits behind the router with a default route through it.
 * The router does NAT in user space (netns-router.ts, netns-link.ts: this kernel has no netem, and Debian's
 * iptables is not installed on these machines): policy routing makes every public address local to the
 * router for packets that come from the home side (an AnyIP `local` route, looked up only for `iif lan0`),
 * so the router's process accepts them and re-opens each connection from 100.128.0.1 with the link's delay.
 * The public side has no route to 10.78.0.0/24: nothing can open a connection inward.
 *
 * `createNatTopology({ nat: 'kernel' })` makes the same three namespaces with the kernel's NAT instead: the
 * router forwards (ip_forward) and masquerades everything leaving wan0 (`iptables -t nat ... MASQUERADE`), and
 * its FORWARD chain lets in from wan0 only packets of connections home opened (conntrack ESTABLISHED). That is
 * a home router as shipped: Linux keeps a connection's source port where it is free (port-preserving, a
 * cone-like mapping), filters by connection, and has no delay of its own (this kernel has no netem).
 * `firewall(port)` makes a port of `pub` refuse new connections from the router (a client behind a firewall).
 *
 * Namespaces are named `gp-<pid>-<n>-<role>`: removed by `destroy()`, at the test process's exit, and, for
 * a process that died before it could, by the next topology made on this machine.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { spawnGridpipe } from '../../cli/spawn.js';
import { startGridpipe, alive, type RunningProcess } from './process.js';
import { REPO_ROOT } from './cli.js';
import type { LinkShape } from './netns-link.js';

export const PUBLIC_SUBNET = '100.128.0';
export const HOME_SUBNET = '10.78.0';
/** The public host's address (every process in `pub` shares it, on its own port). */
export const PUBLIC_IP = `${PUBLIC_SUBNET}.2`;
/** The router's public address: what the public side sees of every home connection. */
export const ROUTER_PUBLIC_IP = `${PUBLIC_SUBNET}.1`;
export const HOME_IP = `${HOME_SUBNET}.2`;

const ROUTER_SCRIPT = path.join(REPO_ROOT, 'test', 'helpers', 'netns-router.ts');

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Whether this machine lets the test make network namespaces: undefined when it does, else why not (not
 * root, no iproute2, a kernel or container that refuses `ip netns add`). Tests skip with that reason.
 */
export function netnsUnsupportedReason(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the NAT tests as root, as CI does)';
  const probe = `gp-${process.pid}-probe`;
  try {
    ip('netns', 'add', probe);
  } catch (err) {
    const why = (err as { stderr?: string; message: string }).stderr?.trim() || (err as Error).message;
    return `the kernel refuses network namespaces here (ip netns add: ${why})`;
  }
  try { ip('netns', 'del', probe); } catch { /* gone already */ }
  return undefined;
}

/**
 * Whether the kernel NAT topology can be made here: undefined when it can, else why not (no namespaces, no
 * iptables, or a kernel without the nat table). Tests of the kernel NAT skip with that reason.
 */
export function kernelNatUnsupportedReason(): string | undefined {
  const netns = netnsUnsupportedReason();
  if (netns) return netns;
  const probe = `gp-${process.pid}-natprobe`;
  try {
    ip('netns', 'add', probe);
    execFileSync('ip', ['netns', 'exec', probe, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'lo', '-j', 'MASQUERADE'], { stdio: ['ignore', 'pipe', 'pipe'] });
    return undefined;
  } catch (err) {
    const why = (err as { stderr?: Buffer | string; message: string }).stderr?.toString().trim() || (err as Error).message;
    return `no kernel NAT here (iptables -t nat ... MASQUERADE in a namespace: ${why}; Debian's iptables package provides it)`;
  } finally {
    try { ip('netns', 'del', probe); } catch { /* never made */ }
  }
}

/** Removes namespaces left by test processes that died before their cleanup ran. */
function removeStaleNamespaces(): void {
  let list: string;
  try { list = ip('netns', 'list'); } catch { return; }
  for (const line of list.split('\n')) {
    const m = /^(gp-(\d+)-\S+)/.exec(line);
    if (!m || Number(m[2]) === process.pid || alive(Number(m[2]))) continue;
    try { ip('netns', 'del', m[1]); } catch { /* raced with its owner */ }
  }
}

const live = new Set<string>();
let exitHookInstalled = false;
let made = 0;

function deleteNamespaces(names: Iterable<string>): void {
  for (const ns of [...names]) {
    try { ip('netns', 'del', ns); } catch { /* already gone */ }
    live.delete(ns);
  }
}

export interface NatTopology {
  /** Namespace names. */
  pub: string;
  rtr: string;
  home: string;
  /** The prefix that runs a command inside namespace `ns`. */
  inside(ns: string): string[];
  /** Starts `gridpipe ...args` inside `ns` (tracked for killAll). */
  gridpipe(ns: string, args: string[], env?: NodeJS.ProcessEnv): RunningProcess;
  /**
   * Starts the router's NAT for these public ports, the home uplink shaped by `up` and the downlink by
   * `down` (the public side reaches nothing at home either way).
   */
  startRouter(ports: number[], shape?: { up?: LinkShape; down?: LinkShape }): Promise<RunningProcess>;
  /** Kernel NAT only: new connections from the internet (the router's address) to `port` of `pub` are dropped. */
  firewall(port: number): void;
  /** Kills the router's process (the rest are the caller's, see killAll) and deletes the namespaces. Safe to call twice. */
  destroy(): void;
}

/** How the router translates: in user space (a symmetric NAT with shaped links) or by the kernel (masquerade). */
export type NatKind = 'user-space' | 'kernel';

/** Makes the pub / router / home namespaces and their links (see the module comment). */
export function createNatTopology(options: { nat?: NatKind } = {}): NatTopology {
  const kernel = options.nat === 'kernel';
  removeStaleNamespaces();
  const base = `gp-${process.pid}-${made++}`;
  const pub = `${base}-pub`;
  const rtr = `${base}-rtr`;
  const home = `${base}-home`;
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => deleteNamespaces(live));
  }
  const mine = [pub, rtr, home];
  try {
    for (const ns of mine) {
      ip('netns', 'add', ns);
      live.add(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    ip('link', 'add', 'wan0', 'netns', pub, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', rtr);
    ip('link', 'add', 'lan0', 'netns', rtr, 'type', 'veth', 'peer', 'name', 'lan0', 'netns', home);
    ip('-n', pub, 'addr', 'add', `${PUBLIC_IP}/24`, 'dev', 'wan0');
    ip('-n', rtr, 'addr', 'add', `${ROUTER_PUBLIC_IP}/24`, 'dev', 'wan0');
    ip('-n', rtr, 'addr', 'add', `${HOME_SUBNET}.1/24`, 'dev', 'lan0');
    ip('-n', home, 'addr', 'add', `${HOME_IP}/24`, 'dev', 'lan0');
    for (const [ns, dev] of [[pub, 'wan0'], [rtr, 'wan0'], [rtr, 'lan0'], [home, 'lan0']]) ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', home, 'route', 'add', 'default', 'via', `${HOME_SUBNET}.1`);
    if (kernel) {
      const inRouter = (...args: string[]): void => { execFileSync('ip', ['netns', 'exec', rtr, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }); };
      inRouter('sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward');
      inRouter('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan0', '-j', 'MASQUERADE');
      inRouter('iptables', '-A', 'FORWARD', '-i', 'lan0', '-o', 'wan0', '-j', 'ACCEPT');
      inRouter('iptables', '-A', 'FORWARD', '-i', 'wan0', '-o', 'lan0', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
      inRouter('iptables', '-P', 'FORWARD', 'DROP');
      return topologyOf(pub, rtr, home, mine);
    }
    // The router owns the public range for packets from home (AnyIP) but routes its own traffic there.
    // The `local` route must sit in table local (the kernel checks a reply's source address there), so
    // the rule order does the rest: home's packets see table local first; the router's own see main.
    ip('-n', rtr, 'route', 'add', 'local', `${PUBLIC_SUBNET}.0/24`, 'dev', 'lo', 'table', 'local');
    ip('-n', rtr, 'rule', 'add', 'pref', '100', 'iif', 'lan0', 'lookup', 'local');
    ip('-n', rtr, 'rule', 'add', 'pref', '150', 'to', `${ROUTER_PUBLIC_IP}/32`, 'lookup', 'local');
    ip('-n', rtr, 'rule', 'add', 'pref', '200', 'to', `${PUBLIC_SUBNET}.0/24`, 'lookup', 'main');
    ip('-n', rtr, 'rule', 'add', 'pref', '300', 'lookup', 'local');
    ip('-n', rtr, 'rule', 'del', 'pref', '0');
  } catch (err) {
    deleteNamespaces(mine);
    throw err;
  }
  return topologyOf(pub, rtr, home, mine);
}

function topologyOf(pub: string, rtr: string, home: string, mine: string[]): NatTopology {
  const inside = (ns: string): string[] => ['ip', 'netns', 'exec', ns];
  const routers: RunningProcess[] = [];
  return {
    pub, rtr, home, inside,
    firewall: (port) => {
      execFileSync('ip', ['netns', 'exec', pub, 'iptables', '-A', 'INPUT', '-s', ROUTER_PUBLIC_IP, '-p', 'tcp', '--dport', String(port),
        '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP'], { stdio: ['ignore', 'pipe', 'pipe'] });
    },
    gridpipe: (ns, args, env = {}) => startGridpipe(args, env, inside(ns)),
    startRouter: async (ports, shape = {}) => {
      const proc = spawnGridpipe([JSON.stringify({ ports, publicAddress: ROUTER_PUBLIC_IP, up: shape.up, down: shape.down })], {
        cli: ROUTER_SCRIPT, cwd: REPO_ROOT, env: { NODE_OPTIONS: '--import tsx' }, prefix: inside(rtr), readyTimeoutMs: 30_000,
      });
      routers.push(proc);
      await proc.ready;
      return proc;
    },
    destroy: () => {
      for (const r of routers) r.child.kill('SIGKILL');
      deleteNamespaces(mine);
    },
  };
}
