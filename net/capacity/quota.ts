/**
 * A quota on the capacity records a DHT node stores for others: at most `maxRecords` `/gpcap/` records,
 * so fresh keys (free to make) cannot fill a node's disk and every reader's sweep. Beyond the quota a
 * new record is stored only when it outranks one already held (bound to a staking key beats unbound,
 * bound and staked beats merely bound, when the node can check stake), the lowest-ranked, soonest
 * expiring one making room; otherwise the PUT_VALUE is refused (the sender sees an error). Expired
 * records are dropped first. Updates of a record already held always go through.
 *
 * Why a datastore wrapper and not per sender: in kad-dht 16 the PUT_VALUE handler knows the sending peer
 * but passes only (key, value) to the validator and only (dsKey, bytes) to the datastore
 * (rpc/handlers/put-value.js), so nothing we can plug in sees who sent a record. A record's own signer is
 * one peer id per key already, which is exactly what a Sybil multiplies. So the bound is on the total,
 * with the ranking above keeping bound (and staked) records in.
 *
 * Costs: an index of the stored records in memory (about 200 bytes each); on each PUT one more ed25519
 * check of the record (about 0.3 ms) and, for a record carrying a binding never seen before, one
 * secp256k1 recovery (about 5 ms; cached by what was signed); no work on reads.
 */
import { Record as Libp2pRecord } from '@libp2p/kad-dht';
import { Key, type Datastore } from 'interface-datastore';
import { base32 } from 'multiformats/bases/base32';
import type { Logger } from 'pino';
import type { CapacityMetrics } from './metrics.js';
import { CAPACITY_NAMESPACE, CapacityRecordError, openRecord, peekRecord } from './record.js';

/** Default most capacity records a node stores for others (16 KiB each at most: 64 MiB). */
export const DEFAULT_MAX_CAPACITY_RECORDS = 4096;

export interface CapacityQuotaOptions {
  /** Most `/gpcap/` records stored (default DEFAULT_MAX_CAPACITY_RECORDS). */
  maxRecords?: number;
  /** kad-dht's datastore prefix (default '/dht'). */
  datastorePrefix?: string;
  /** Whether a staking address is staked (when this node reaches the chain); ranks bound+staked records highest. */
  stakeCheck?: { isListed(address: string): Promise<boolean> };
  /** This node's own peer id: its own record is always stored (kad-dht's `put` stores locally first). */
  selfPeerId?: string;
  metrics?: CapacityMetrics;
  logger?: Logger;
  now?: () => number;
}

interface Held { expiresAtMs: number; rank: number }

const NAMESPACE_PREFIX = new TextEncoder().encode(`/${CAPACITY_NAMESPACE}/`);

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.byteLength < prefix.byteLength) return false;
  for (let i = 0; i < prefix.byteLength; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** The capacity quota of one node: wraps its datastore (see module doc). */
export class CapacityQuota {
  private readonly held = new Map<string, Held>();
  private loaded?: Promise<void>;
  private readonly max: number;
  private readonly recordPrefix: string;
  private readonly now: () => number;
  private readonly ownKey?: string;
  /** Set later when the node learns how to check stake (a paid supplier opens the chain after its host). */
  stakeCheck?: CapacityQuotaOptions['stakeCheck'];

  constructor(private readonly inner: Datastore, private readonly options: CapacityQuotaOptions = {}) {
    this.max = options.maxRecords ?? DEFAULT_MAX_CAPACITY_RECORDS;
    if (!(Number.isSafeInteger(this.max) && this.max > 0)) throw new RangeError(`maxRecords must be a positive integer, got ${this.max}`);
    this.recordPrefix = `${options.datastorePrefix ?? '/dht'}/record/`;
    this.now = options.now ?? Date.now;
    this.stakeCheck = options.stakeCheck;
    const id = options.selfPeerId;
    this.ownKey = id ? `${this.recordPrefix}${base32.baseEncode(new TextEncoder().encode(`/${CAPACITY_NAMESPACE}/${id}`))}` : undefined;
  }

  /** How many capacity records are held now. */
  get size(): number { return this.held.size; }

  /** The datastore to give libp2p: the inner one, with `put` and `delete` of capacity records watched. */
  datastore(): Datastore {
    const put = async (key: Key, value: Uint8Array, options?: unknown): Promise<Key> => {
      const k = key.toString();
      if (this.isCapacityKey(k)) await this.admit(k, value);
      return (this.inner.put as (key: Key, value: Uint8Array, options?: unknown) => Promise<Key>).call(this.inner, key, value, options);
    };
    const del = async (key: Key, options?: unknown): Promise<void> => {
      await (this.inner.delete as (key: Key, options?: unknown) => Promise<void>).call(this.inner, key, options);
      this.held.delete(key.toString());
    };
    return new Proxy(this.inner, {
      get: (target, prop, receiver) => {
        if (prop === 'put') return put;
        if (prop === 'delete') return del;
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  private isCapacityKey(k: string): boolean {
    if (!k.startsWith(this.recordPrefix)) return false;
    try {
      return startsWith(base32.baseDecode(k.slice(this.recordPrefix.length)), NAMESPACE_PREFIX);
    } catch {
      return false;
    }
  }

  /** Rank of stored bytes: 0 unbound (or unreadable), 1 bound, 2 bound and staked. */
  private async rankOf(value: Uint8Array): Promise<Held> {
    try {
      // The stored bytes are kad-dht's record envelope (@libp2p/record: key = 1, value = 2), decoded by its own codec.
      const envelope = Libp2pRecord.deserialize(value);
      // The validator checked the signature; the binding's recovery runs only for records that carry one.
      const { record, stake } = await openRecord(envelope.value, { allowExpired: true, now: this.now(), checkStake: peekRecord(envelope.value)?.stakeBinding !== undefined });
      let rank = stake.bound ? 1 : 0;
      if (stake.bound && this.stakeCheck && await this.isListed(record.stakingAddress)) rank = 2;
      return { expiresAtMs: record.expiresAtMs, rank };
    } catch {
      return { expiresAtMs: 0, rank: 0 };
    }
  }

  private readonly listed = new Map<string, { listed: boolean; at: number }>();

  /** The stake check, cached per address for a minute (a chain read per PUT would be a free amplifier). */
  private async isListed(address: string): Promise<boolean> {
    const key = address.toLowerCase();
    const hit = this.listed.get(key);
    if (hit && this.now() - hit.at < 60_000) return hit.listed;
    let listed: boolean;
    try {
      listed = await this.stakeCheck!.isListed(address);
    } catch {
      listed = hit?.listed ?? false;
    }
    if (this.listed.size >= 4 * this.max) this.listed.clear();
    this.listed.set(key, { listed, at: this.now() });
    return listed;
  }

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      for await (const { key, value } of this.inner.query({ prefix: this.recordPrefix.slice(0, -1) })) {
        const k = key.toString();
        if (this.isCapacityKey(k)) this.held.set(k, await this.rankOf(value));
      }
    })();
    return this.loaded;
  }

  /** Makes room for a new record or throws QUOTA (see module doc). */
  private async admit(k: string, value: Uint8Array): Promise<void> {
    await this.load();
    const incoming = await this.rankOf(value);
    if (this.held.has(k) || this.held.size < this.max || k === this.ownKey) {
      this.held.set(k, incoming);
      return;
    }
    const now = this.now();
    for (const [key, h] of this.held) {
      if (h.expiresAtMs <= now) await this.drop(key);
    }
    if (this.held.size >= this.max) {
      let victim: [string, Held] | undefined;
      for (const entry of this.held) {
        const h = entry[1];
        if (h.rank >= incoming.rank) continue;
        if (!victim || h.rank < victim[1].rank || (h.rank === victim[1].rank && h.expiresAtMs < victim[1].expiresAtMs)) victim = entry;
      }
      if (!victim) {
        this.options.metrics?.recordRejected('QUOTA');
        this.options.logger?.debug({ held: this.held.size, rank: incoming.rank }, 'capacity record refused: quota full');
        throw new CapacityRecordError('QUOTA', `this node holds its quota of ${this.max} capacity records and the new one does not outrank any of them`);
      }
      await this.drop(victim[0]);
    }
    this.held.set(k, incoming);
  }

  private async drop(k: string): Promise<void> {
    try {
      await this.inner.delete(new Key(k, false));
    } catch (err) {
      this.options.logger?.debug({ err: (err as Error).message }, 'could not drop a capacity record');
    }
    this.held.delete(k);
  }
}
