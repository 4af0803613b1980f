/** The page's side of the JSON API (/explorer/api/v1, same origin) and of the live stream. */
import type { ChainView, LiveView, ModelView, ModelsView, NetworkView, PeerView, RequestView, StatsBucket, TrafficEdge } from '../types.js';

const BASE = new URL('api/v1/', window.location.href.replace(/#.*$/, ''));

async function get<T>(path: string): Promise<T> {
  const res = await fetch(new URL(path, BASE));
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return await res.json() as T;
}

export const api = {
  network: () => get<NetworkView>('network'),
  /** One supplier and its edges, or undefined (from the Network view: an unknown id is no failed request in the console). */
  peer: async (id: string): Promise<{ peer: PeerView; edges: TrafficEdge[] } | undefined> => {
    const net = await get<NetworkView>('network');
    const peer = net.peers.find((p) => p.peerId === id);
    return peer && { peer, edges: net.edges.filter((e) => e.from === id || e.to === id) };
  },
  models: () => get<ModelsView>('models'),
  /** One model by manifest CID or name, or undefined. */
  model: async (id: string): Promise<ModelView | undefined> => (await get<ModelsView>('models')).models.find((m) => m.manifestCid === id || m.name === id),
  live: () => get<LiveView>('live'),
  chain: () => get<ChainView>('chain'),
};

/** Follows the live stream; returns the close function. */
export function followLive(handlers: { request(r: RequestView): void; stats(s: StatsBucket[]): void; state(open: boolean): void }): () => void {
  const source = new EventSource(new URL('live/stream', BASE));
  source.addEventListener('request', (e) => handlers.request(JSON.parse((e as MessageEvent<string>).data) as RequestView));
  source.addEventListener('stats', (e) => handlers.stats(JSON.parse((e as MessageEvent<string>).data) as StatsBucket[]));
  source.onopen = () => handlers.state(true);
  source.onerror = () => handlers.state(false);
  return () => source.close();
}
