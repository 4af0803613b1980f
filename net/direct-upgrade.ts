/**
 * Waiting, briefly, for a direct connection to a peer reached through a relay. When a client dials a supplier
 * behind NAT through its relay, the supplier's DCUtR service answers the relayed connection by dialling the
 * client directly where it can (or by punching a hole) and then closes the relayed one. A session opened on
 * the relayed connection in that window dies with it: the client would fail over for no fault of the
 * supplier. So before opening a long-lived stream, a client that holds only a limited (relayed) connection
 * gives the upgrade a moment; if no direct connection comes, the stream runs relayed, within the relay's limits.
 */
import type { Connection, Libp2p, PeerId } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';

/** How long a client waits for DCUtR by default: a few round trips and a TCP + Noise handshake. */
export const DIRECT_UPGRADE_WAIT_MS = 3000;

export type UpgradeAwareNode = Pick<Libp2p, 'dial' | 'getConnections' | 'addEventListener' | 'removeEventListener'>;

function isDirect(c: Connection): boolean {
  return c.status === 'open' && c.limits == null && !c.remoteAddr.toString().includes('/p2p-circuit');
}

/**
 * Dials `peer` (the relay path if that is all there is) and, when only a limited connection results, waits
 * up to `waitMs` for a direct one to the same peer. Resolves with 'direct' or 'relayed'; never throws for the
 * wait itself (a failed dial throws as `dial` does).
 */
export async function dialPreferringDirect(node: UpgradeAwareNode, peer: PeerId | Multiaddr | Multiaddr[], options: { waitMs?: number; signal?: AbortSignal } = {}): Promise<'direct' | 'relayed'> {
  const first = await node.dial(peer, { signal: options.signal });
  if (first.limits == null) return 'direct';
  const remote = first.remotePeer.toString();
  const mine = (): boolean => node.getConnections(first.remotePeer).some(isDirect);
  if (mine()) return 'direct';
  return new Promise((resolve) => {
    const done = (how: 'direct' | 'relayed'): void => {
      clearTimeout(timer);
      node.removeEventListener('connection:open', onOpen);
      options.signal?.removeEventListener('abort', onAbort);
      resolve(how);
    };
    const onOpen = (evt: CustomEvent<Connection>): void => {
      if (evt.detail.remotePeer.toString() === remote && isDirect(evt.detail)) done('direct');
    };
    const onAbort = (): void => done('relayed');
    const timer = setTimeout(() => done(mine() ? 'direct' : 'relayed'), options.waitMs ?? DIRECT_UPGRADE_WAIT_MS);
    node.addEventListener('connection:open', onOpen);
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
