/**
 * The supplier's guard against peers that flood or send garbage (issue 21): the exec and blob protocols tell
 * it of every stream a peer opens and every malformed message it sends; past the limits of
 * policy/peer-penalties.ts the peer is hung up on (all its libp2p connections closed), its new connections are
 * closed as they open and its streams aborted until the back-off ends. Each penalty is one pino warn line and
 * counted in prom-client (`gridpipe_peer_penalties_total{kind}`, `gridpipe_peer_refusals_total{what}`,
 * `gridpipe_peers_refused`). Why here and not in each protocol: one peer's garbage on the exec protocol must
 * also close its blob streams, and the rule is the same for both.
 */
import type { Connection, Libp2p, PeerId } from '@libp2p/interface';
import type { Logger } from 'pino';
import { peerIdFromString } from '@libp2p/peer-id';
import { Counter, Gauge, Registry } from 'prom-client';
import { PeerPenalties, type OffenceKind, type Penalty, type PeerPenaltiesOptions } from '../policy/peer-penalties.js';

/** What the guard needs of a libp2p node: hang a peer up, hear of new connections. */
export type GuardedNode = Pick<Libp2p, 'hangUp' | 'addEventListener' | 'removeEventListener'>;

export interface PeerGuardOptions extends PeerPenaltiesOptions {
  registry?: Registry;
  logger?: Logger;
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  // several guards (nodes in one test process) may share a registry: reuse the metric
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export class PeerGuard {
  readonly penalties: PeerPenalties;
  private readonly log?: Logger;
  private readonly now: () => number;
  private readonly penaltyCount: Counter<'kind'>;
  private readonly refusalCount: Counter<'what'>;
  private readonly onConnection = (evt: CustomEvent<Connection>): void => {
    const connection = evt.detail;
    if (!this.penalties.isRefused(connection.remotePeer.toString())) return;
    this.refusalCount.inc({ what: 'connection' });
    void connection.close().catch(() => connection.abort(new Error('peer refused')));
  };

  constructor(private readonly node: GuardedNode, options: PeerGuardOptions = {}) {
    this.penalties = new PeerPenalties(options);
    this.now = options.now ?? Date.now;
    this.log = options.logger?.child({ component: 'peer-guard' });
    const registers = [options.registry ?? new Registry()];
    const registry = registers[0];
    this.penaltyCount = metric(registry, 'gridpipe_peer_penalties_total', () => new Counter({
      name: 'gridpipe_peer_penalties_total', help: 'Peers hung up on and refused for a while, by what they did (garbage: malformed messages; streams: too many streams).', labelNames: ['kind'], registers,
    }));
    this.refusalCount = metric(registry, 'gridpipe_peer_refusals_total', () => new Counter({
      name: 'gridpipe_peer_refusals_total', help: 'Connections and streams of refused peers closed as they opened.', labelNames: ['what'], registers,
    }));
    const penalties = this.penalties;
    metric(registry, 'gridpipe_peers_refused', () => new Gauge({
      name: 'gridpipe_peers_refused', help: 'Peers refused right now for flooding or sending garbage.', registers,
      collect() { this.set(penalties.refused().length); },
    }));
    node.addEventListener('connection:open', this.onConnection);
  }

  /** Stops closing refused peers' new connections. */
  stop(): void {
    this.node.removeEventListener('connection:open', this.onConnection);
  }

  /**
   * A peer opened a stream: false when it must be refused (it is refused already, or this stream is one too
   * many: then it is hung up on). The caller aborts the stream.
   */
  admitStream(peer: PeerId | string): boolean {
    const id = peer.toString();
    if (this.penalties.isRefused(id)) {
      this.refusalCount.inc({ what: 'stream' });
      return false;
    }
    return !this.offend(id, 'streams', 'opened too many streams');
  }

  /** A peer sent a malformed message (`what`: which, for the log); past the limit it is hung up on. */
  garbage(peer: PeerId | string, what: string): void {
    this.offend(peer.toString(), 'garbage', what);
  }

  isRefused(peer: PeerId | string): boolean {
    return this.penalties.isRefused(peer.toString());
  }

  /** Counts an offence; true when it got the peer refused (and hung up on). */
  private offend(id: string, kind: OffenceKind, what: string): boolean {
    const penalty = this.penalties.record(id, kind);
    if (!penalty) return false;
    this.penalise(penalty, what);
    return true;
  }

  private penalise(p: Penalty, what: string): void {
    this.penaltyCount.inc({ kind: p.kind });
    const seconds = Math.round((p.until - this.now()) / 1000);
    this.log?.warn({ peer: p.peerId, kind: p.kind, count: p.count, repeat: p.repeat, refusedUntil: new Date(p.until).toISOString() },
      `peer ${p.peerId} ${p.kind === 'garbage' ? `sent ${p.count} malformed messages (last: ${what})` : `opened ${p.count} streams`} within the window: hung up on and refused for ${seconds} s`);
    void this.hangUp(p.peerId);
  }

  private async hangUp(id: string): Promise<void> {
    try {
      await this.node.hangUp(peerIdFromString(id));
    } catch (err) {
      this.log?.debug({ peer: id, err: (err as Error).message }, 'hang-up failed');
    }
  }
}
