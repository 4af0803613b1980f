/** Choosing the DHT flavour from the addresses a command was given. */
import { multiaddr } from '@multiformats/multiaddr';
import type { NetworkKind } from '../net/host.js';
import { UsageError } from './errors.js';

const PRIVATE = [/^\/ip4\/127\./, /^\/ip4\/10\./, /^\/ip4\/192\.168\./, /^\/ip4\/172\.(1[6-9]|2\d|3[01])\./, /^\/ip6\/::1\//, /^\/dns[46]?\/localhost\//, /^\/ip4\/0\.0\.0\.0\//];

/** 'local' when every address given is loopback or private (a devnet, a LAN), else 'public'. */
export function chooseNetwork(choice: string | undefined, addresses: string[]): NetworkKind {
  if (choice === 'local' || choice === 'public') return choice;
  if (choice && choice !== 'auto') throw new UsageError(`--network must be auto, local or public, got "${choice}"`);
  const given = addresses.filter(Boolean);
  if (given.length === 0) return 'public';
  return given.every((a) => PRIVATE.some((re) => re.test(a))) ? 'local' : 'public';
}

/** Collects a repeatable option into an array (an option parser: it lives in cli/args.ts). */
export { collect } from './args.js';

/** Checks each multiaddr of a repeatable flag; throws a UsageError naming the bad one. */
export function checkMultiaddrs(flag: string, values: string[], needPeerId = false): string[] {
  for (const v of values) {
    try {
      multiaddr(v);
    } catch (err) {
      throw new UsageError(`${flag} ${JSON.stringify(v)} is not a multiaddr (${(err as Error).message})`);
    }
    if (needPeerId && !/\/p2p\/[^/]+$/.test(v)) throw new UsageError(`${flag} ${v} must end with /p2p/<peer id>`);
  }
  return values;
}
