/**
 * Where a model's tokenizer files come from, for every process that serves text with them (the gateway,
 * `gridpipe generate --prompt`): the model's own folder when it was given as one (a copy is used only when
 * its bytes match the manifest's CID), else the grid: fetched by CID, first from the model's hosts (they keep
 * its tokenizer files with its fragments), then from whoever the DHT says provides it; verified and size-capped.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { cidOfBytes } from '../../fragments/cid.js';
import { MAX_TOKENIZER_BYTES, type FragmentStore } from '../../net/store/fragment-store.js';
import { fetchByCid, type FetchNode } from '../../net/store/fetcher.js';
import { TokenizerUnavailableError } from './index.js';
import type { TokenizerFile, TokenizerFileReader } from './text-tokenizer.js';

export interface TokenizerFilesOptions {
  /** The model's fragment folder, when the model was given as one. */
  sourceDir?: string;
  /** Fetches a file from the grid by CID (see fetchTokenizerFile): used when the folder has no matching copy. */
  fetch(file: TokenizerFile): Promise<Uint8Array>;
}

/** A reader of the model's tokenizer files: its folder first, else the grid; a TokenizerUnavailableError says why neither worked. */
export function tokenizerFileReader(options: TokenizerFilesOptions): TokenizerFileReader {
  return async (f) => {
    let local: string | undefined;
    if (options.sourceDir) {
      try {
        const bytes = await readFile(path.join(options.sourceDir, path.basename(f.file)));
        if (cidOfBytes(bytes) === f.cid) return bytes;
        local = `${f.file} in ${options.sourceDir} does not match its CID in the manifest`;
      } catch (err) {
        local = `${f.file} in ${options.sourceDir}: ${(err as Error).message}`;
      }
    }
    try {
      return await options.fetch(f);
    } catch (err) {
      throw new TokenizerUnavailableError(`${local ? `${local}; ` : ''}${f.file} (${f.cid}) could not be fetched from the grid: ${(err as Error).message}`, { cause: err });
    }
  };
}

/**
 * One tokenizer file fetched by CID into `store` (verified, at most MAX_TOKENIZER_BYTES), asking `hosts` (the
 * model's suppliers; their addresses are added to the peer store so they can be dialled) before the DHT's providers.
 */
export async function fetchTokenizerFile(node: FetchNode, store: FragmentStore, f: TokenizerFile, hosts: readonly { peerId: string; addrs: readonly string[] }[]): Promise<Uint8Array> {
  const fetched = await fetchByCid(node, store, f.cid, {
    provide: false, signal: AbortSignal.timeout(15_000), maxBytes: MAX_TOKENIZER_BYTES,
    expectedSize: Number.isSafeInteger(f.bytes) ? f.bytes : undefined, peers: await hostPeers(node, hosts),
  });
  return readFile(fetched.path);
}

async function hostPeers(node: FetchNode, hosts: readonly { peerId: string; addrs: readonly string[] }[]): Promise<PeerId[]> {
  const self = node.peerId.toString();
  const peers = new Map<string, PeerId>();
  for (const host of hosts) {
    if (peers.has(host.peerId) || host.peerId === self) continue;
    try {
      const id = peerIdFromString(host.peerId);
      if (host.addrs.length) await node.peerStore.merge(id, { multiaddrs: host.addrs.map((a) => multiaddr(a)) }).catch(() => undefined);
      peers.set(host.peerId, id);
    } catch {
      // not a peer id: the DHT lookup will do
    }
  }
  return [...peers.values()];
}
