/** How to reach a supplier of a hosted span: its advertised addresses (with its peer id), else the peer id alone. */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import type { HostedSpan } from './discovery.js';

/** The dial target of a hosted span's supplier (pipeline sessions, expert calls and the verifier all dial this way). */
export function dialTargetOf(span: Pick<HostedSpan, 'addrs' | 'peerId'>): Multiaddr[] | ReturnType<typeof peerIdFromString> {
  const addrs = span.addrs.map((a) => (a.includes('/p2p/') ? a : `${a}/p2p/${span.peerId}`));
  return addrs.length ? addrs.map((a) => multiaddr(a)) : peerIdFromString(span.peerId);
}
