/**
 * Which suppliers are online right now. A capacity record stays in the DHT until it expires (hours) even when
 * its supplier was killed, so the record alone cannot say; the explorer pings each supplier it knows over
 * libp2p (the grid's own ping protocol, on the connection routing already holds when there is one) and calls
 * it offline when the last ping failed. Pings run only while someone looks (`active`), a few per period.
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';

/** What pinging needs: a libp2p node with the ping service (net/host.ts GridHost's `node` has it). */
export interface PingNode {
  /** The node's own peer id: a supplier serving the explorer is online to itself (libp2p does not dial itself). */
  peerId?: { toString(): string };
  services: { ping: { ping(target: Multiaddr | Multiaddr[], options?: { signal?: AbortSignal }): Promise<number> } };
}

export interface PeerLiveness { online: boolean; lastSeenMs?: number; pingMs?: number; checkedMs: number }

export interface LivenessOptions {
  /** Time between two rounds of pings (default 3 s). */
  everyMs?: number;
  /** A ping's deadline (default 2.5 s). */
  timeoutMs?: number;
  logger?: Logger;
}

/** A record's addresses as dialable multiaddrs ending in /p2p/<peerId>. */
export function dialTargets(peerId: string, addrs: string[]): Multiaddr[] {
  const out: Multiaddr[] = [];
  for (const a of addrs) {
    try {
      out.push(multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`));
    } catch {
      // an address this node cannot parse is skipped; the others may still answer
    }
  }
  return out;
}

export class Liveness {
  private readonly state = new Map<string, PeerLiveness>();
  private peers = new Map<string, string[]>();
  private timer?: ReturnType<typeof setInterval>;
  private round?: Promise<void>;
  private readonly everyMs: number;
  private readonly timeoutMs: number;

  constructor(private readonly node: PingNode, private readonly options: LivenessOptions = {}) {
    this.everyMs = options.everyMs ?? 3000;
    this.timeoutMs = options.timeoutMs ?? 2500;
  }

  /** The suppliers to watch (peer id → record addresses), from the latest sweep. */
  watch(peers: Map<string, string[]>): void {
    this.peers = peers;
    for (const id of this.state.keys()) if (!peers.has(id)) this.state.delete(id);
  }

  /** What is known of a peer (undefined before its first ping). */
  of(peerId: string): PeerLiveness | undefined { return this.state.get(peerId); }

  /** Pings every watched peer once (concurrent callers share the round). */
  check(): Promise<void> {
    this.round ??= Promise.all([...this.peers].map(([id, addrs]) => this.ping(id, addrs))).then(() => undefined).finally(() => { this.round = undefined; });
    return this.round;
  }

  /** Keeps pinging every period (someone is looking); `stop` ends it. */
  start(): void {
    if (this.timer) return;
    void this.check();
    this.timer = setInterval(() => { void this.check(); }, this.everyMs);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async ping(peerId: string, addrs: string[]): Promise<void> {
    const before = this.state.get(peerId);
    if (peerId === this.node.peerId?.toString()) {
      this.state.set(peerId, { online: true, lastSeenMs: Date.now(), pingMs: 0, checkedMs: Date.now() });
      return;
    }
    const targets = dialTargets(peerId, addrs);
    try {
      if (!targets.length) throw new Error('no dialable address');
      const ms = await this.node.services.ping.ping(targets, { signal: AbortSignal.timeout(this.timeoutMs) });
      this.state.set(peerId, { online: true, lastSeenMs: Date.now(), pingMs: ms, checkedMs: Date.now() });
    } catch (err) {
      if (before?.online) this.options.logger?.info({ peer: peerId, err: (err as Error).message }, 'explorer: supplier stopped answering pings');
      this.state.set(peerId, { online: false, lastSeenMs: before?.lastSeenMs, pingMs: before?.pingMs, checkedMs: Date.now() });
    }
  }
}
