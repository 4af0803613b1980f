/**
 * Capacity records in the Kad-DHT: the `gpcap` validator and selector every node registers, publishing
 * (with a count of the peers that really stored the record), a publisher that keeps a supplier's record
 * alive and withdraws it on shutdown, and discovery of every supplier.
 *
 * Discovery: each supplier `provide`s one well-known CID (the CID of the bytes "gridpipe-suppliers-v1");
 * `findAllRecords` finds its providers and fetches `/gpcap/<peer>` for each, verified.
 *
 * Notes on kad-dht 16 behaviour this code relies on (see node_modules/@libp2p/kad-dht):
 * - `put` stores locally WITHOUT validating and overwrites remote copies (remote nodes validate but do
 *   not compare with what they hold), so an old-but-unexpired record can be replayed over a newer one;
 *   the selector only runs on `get`. Short record lives (default 10 min) bound that window and every
 *   republish repairs it.
 * - `get` validates every remote answer and the local copy, picks the best with the selector and sends
 *   it to peers that answered with an older one ("correction"); it throws if a correction is refused,
 *   after the answers have streamed past, so `findRecord` collects answers itself.
 * - `findProviders` stops after k (20) providers; `findAllRecords` also reads the full provider lists
 *   remote peers return.
 */
import type { KadDHT, QueryEvent, SelectFn, ValidateFn } from '@libp2p/kad-dht';
import type { PeerId, PrivateKey } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { CID } from 'multiformats/cid';
import type { Logger } from 'pino';
import { cidOfBytes } from '../../fragments/cid.js';
import type { CapacityMetrics } from './metrics.js';
import {
  CAPACITY_NAMESPACE,
  CapacityRecordError,
  DEFAULT_RECORD_TTL_MS,
  MAX_RECORD_LIFETIME_MS,
  buildRecord,
  capacityKey,
  capacityKeyString,
  compareRecords,
  openRecord,
  peekRecord,
  peerIdFromCapacityKey,
  signRecord,
  type CapacityRecord,
  type CapacityRecordFields,
} from './record.js';

/** The bytes whose CID every supplier provides. */
export const SUPPLIERS_DISCOVERY_TEXT = 'gridpipe-suppliers-v1';
/** The well-known CID every supplier provides (raw codec, SHA-256 of SUPPLIERS_DISCOVERY_TEXT). */
export const SUPPLIERS_CID: CID = CID.parse(cidOfBytes(new TextEncoder().encode(SUPPLIERS_DISCOVERY_TEXT)));

/** What the functions here need of a node; a `GridHost` (net/host.ts) is one. */
export interface CapacityNode {
  node: {
    peerId: PeerId;
    services: { dht: KadDHT };
    getMultiaddrs(): Multiaddr[];
    /** libp2p's 'self:peer:update' (the node's addresses changed), for re-publishing them. */
    addEventListener?(type: 'self:peer:update', listener: () => void): void;
    removeEventListener?(type: 'self:peer:update', listener: () => void): void;
  };
  capacityMetrics?: CapacityMetrics;
  logger?: Logger;
}

// ---------------------------------------------------------------- validator and selector

export interface CapacityValidatorOptions {
  metrics?: CapacityMetrics;
  /** Clock (default Date.now). */
  now?: () => number;
  logger?: Logger;
}

/**
 * The DHT validator of `/gpcap/<peerId>` records: a signed record for that very peer, signed by its
 * key, unexpired, at most 16 KiB. Throws (a CapacityRecordError) to reject; counts rejections.
 */
export function capacityValidator(options: CapacityValidatorOptions = {}): ValidateFn {
  const now = options.now ?? Date.now;
  return async (key, value) => {
    try {
      // Storing or not does not depend on the stake binding: its check (a recovery) is left to readers and the quota.
      await openRecord(value, { expectedPeerId: peerIdFromCapacityKey(key), now: now(), checkStake: false });
    } catch (err) {
      const reason = err instanceof CapacityRecordError ? err.reason : 'UNKNOWN';
      options.metrics?.recordRejected(reason);
      options.logger?.debug({ reason, key: new TextDecoder().decode(key).slice(0, 120), err: (err as Error).message }, 'rejected capacity record');
      throw err;
    }
  };
}

/** The DHT selector: the newest record (issued_at_ms, then sequence); undecodable ones rank last. */
export const capacitySelector: SelectFn = (_key, records) => {
  let best = -1;
  let bestRecord: CapacityRecord | undefined;
  records.forEach((bytes, i) => {
    const r = peekRecord(bytes);
    if (!r) return;
    if (!bestRecord || compareRecords(r, bestRecord) > 0) {
      best = i;
      bestRecord = r;
    }
  });
  return best < 0 ? 0 : best;
};

/** The `validators`/`selectors` to pass to kadDHT() on every node. */
export function capacityDhtRecords(options: CapacityValidatorOptions = {}): { validators: Record<string, ValidateFn>; selectors: Record<string, SelectFn> } {
  return {
    validators: { [CAPACITY_NAMESPACE]: capacityValidator(options) },
    selectors: { [CAPACITY_NAMESPACE]: capacitySelector },
  };
}

// ---------------------------------------------------------------- publishing

export interface PublishOptions {
  signal?: AbortSignal;
  /** Gives up on the DHT query after this long (default 30 s); the peers reached by then count. */
  timeoutMs?: number;
  /** Fewest peers that must store the record for `ok` (default 1). */
  minAccepted?: number;
}

export interface PublishResult {
  key: string;
  record: CapacityRecord;
  /** Peers that stored the record (answered PUT_VALUE with the same value). */
  accepted: string[];
  /** Peers that were sent the record and refused it or failed. */
  failed: { peer: string; error: string }[];
  ok: boolean;
  /** Set when the query itself failed or timed out. */
  error?: string;
}

function timeoutSignal(timeoutMs: number, signal?: AbortSignal): AbortSignal {
  const t = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, t]) : t;
}

/**
 * Puts a signed record into the DHT under its `/gpcap/<peerId>` key and reports which peers stored it.
 * (kad-dht's `put` resolves even when nobody stored it.) Throws only when `signed` does not verify
 * here or when `options.signal` aborts.
 */
export async function publishRecord(host: CapacityNode, signed: Uint8Array, options: PublishOptions = {}): Promise<PublishResult> {
  const metrics = host.capacityMetrics;
  let opened;
  try {
    opened = await openRecord(signed);
  } catch (err) {
    metrics?.publishFailed('invalid-record');
    throw err;
  }
  const { record } = opened;
  const keyString = capacityKeyString(record.peerId);
  const sentTo = new Set<string>();
  const accepted = new Set<string>();
  const failed = new Map<string, string>();
  let error: string | undefined;
  try {
    const signal = timeoutSignal(options.timeoutMs ?? 30_000, options.signal);
    for await (const event of host.node.services.dht.put(capacityKey(record.peerId), signed, { signal })) {
      countPutEvent(event, sentTo, accepted, failed);
    }
  } catch (err) {
    if (options.signal?.aborted) throw err;
    error = (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError' ? 'timed out' : (err as Error).message;
  }
  const minAccepted = options.minAccepted ?? 1;
  const ok = accepted.size >= minAccepted;
  if (ok) {
    metrics?.published.inc();
  } else {
    metrics?.publishFailed(error === 'timed out' ? 'timeout' : error ? 'error' : sentTo.size === 0 ? 'no-peers' : 'too-few-peers');
  }
  metrics?.storedBy.set(accepted.size);
  const result: PublishResult = {
    key: keyString,
    record,
    accepted: [...accepted],
    failed: [...failed].map(([peer, e]) => ({ peer, error: e })),
    ok,
    ...(error ? { error } : {}),
  };
  host.logger?.debug({ key: keyString, sequence: record.sequence, accepted: accepted.size, failed: failed.size, error }, 'published capacity record');
  return result;
}

function countPutEvent(event: QueryEvent, sentTo: Set<string>, accepted: Set<string>, failed: Map<string, string>): void {
  // put = getClosestPeers (FIND_NODE traffic) then PUT_VALUE to each closest peer; count only the latter.
  if (event.name === 'SEND_QUERY' && event.messageName === 'PUT_VALUE') {
    sentTo.add(event.to.toString());
  } else if (event.name === 'PEER_RESPONSE' && event.messageName === 'PUT_VALUE') {
    const peer = event.from.toString();
    if (!failed.has(peer)) accepted.add(peer);
  } else if (event.name === 'QUERY_ERROR') {
    const peer = event.from.toString();
    if (sentTo.has(peer)) {
      accepted.delete(peer);
      failed.set(peer, event.error?.message ?? 'error');
    }
  }
}

/** Announces this node as a supplier (provides SUPPLIERS_CID); returns how many peers took the provider record. */
export async function provideSupplier(host: CapacityNode, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<number> {
  const peers = new Set<string>();
  const signal = timeoutSignal(options.timeoutMs ?? 30_000, options.signal);
  try {
    for await (const event of host.node.services.dht.provide(SUPPLIERS_CID, { signal })) {
      if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') peers.add(event.from.toString());
    }
  } catch (err) {
    if (options.signal?.aborted) throw err;
    host.logger?.debug({ err: (err as Error).message }, 'provide of the suppliers key ended early');
  }
  return peers.size;
}

// ---------------------------------------------------------------- reading

export interface FindOptions {
  signal?: AbortSignal;
  /** Stops the DHT query after this long and uses the answers so far (default 10 s). */
  timeoutMs?: number;
  /** Clock for expiry checks (default Date.now()). */
  now?: number;
  /** Return tombstones (withdrawn records) too (default false: a withdrawn supplier is absent). */
  includeWithdrawn?: boolean;
}

/**
 * The newest valid capacity record of `peerId` in the DHT, or undefined (none, all invalid or expired,
 * or withdrawn unless `includeWithdrawn`).
 */
export async function findRecord(host: CapacityNode, peerId: string | PeerId, options: FindOptions = {}): Promise<CapacityRecord | undefined> {
  const id = peerId.toString();
  const candidates = new Map<string, Uint8Array>();
  const add = (bytes: Uint8Array): void => { candidates.set(Buffer.from(bytes).toString('base64'), bytes); };
  const signal = timeoutSignal(options.timeoutMs ?? 10_000, options.signal);
  try {
    for await (const event of host.node.services.dht.get(capacityKey(id), { signal })) {
      if (event.name === 'VALUE') add(event.value);
      else if (event.name === 'PEER_RESPONSE' && event.messageName === 'GET_VALUE' && event.record) add(event.record.value);
    }
  } catch (err) {
    if (options.signal?.aborted) throw err;
    // a refused correction or our own timeout: the answers gathered so far still count
    host.logger?.debug({ peer: id, err: (err as Error).message }, 'capacity record lookup ended early');
  }
  let best: CapacityRecord | undefined;
  for (const bytes of candidates.values()) {
    try {
      const { record } = await openRecord(bytes, { expectedPeerId: id, now: options.now });
      if (!best || compareRecords(record, best) > 0) best = record;
    } catch (err) {
      host.capacityMetrics?.recordRejected(err instanceof CapacityRecordError ? err.reason : 'UNKNOWN');
    }
  }
  if (best?.withdrawn && !options.includeWithdrawn) return undefined;
  return best;
}

export interface FindAllOptions extends FindOptions {
  /** How many record lookups run at once (default 8). */
  concurrency?: number;
}

/** Runs at most `n` of the given tasks at once. */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** Streams the peers that provide SUPPLIERS_CID (suppliers, present or recently gone), each once. */
async function* supplierPeers(host: CapacityNode, options: Pick<FindOptions, 'signal' | 'timeoutMs'>): AsyncGenerator<string> {
  const seen = new Set<string>();
  const signal = timeoutSignal(options.timeoutMs ?? 10_000, options.signal);
  try {
    for await (const event of host.node.services.dht.findProviders(SUPPLIERS_CID, { signal })) {
      // remote answers carry the full provider list; findProviders itself stops after k of them
      const found = event.name === 'PROVIDER' || (event.name === 'PEER_RESPONSE' && event.messageName === 'GET_PROVIDERS') ? event.providers : [];
      for (const p of found) {
        const id = p.id.toString();
        if (seen.has(id)) continue;
        seen.add(id);
        yield id;
      }
    }
  } catch (err) {
    if (options.signal?.aborted) throw err;
    host.logger?.debug({ err: (err as Error).message }, 'supplier discovery ended early');
  }
}

/** The peers that provide SUPPLIERS_CID (suppliers, present or recently gone), sorted. */
export async function findSupplierPeers(host: CapacityNode, options: Pick<FindOptions, 'signal' | 'timeoutMs'> = {}): Promise<string[]> {
  const peers: string[] = [];
  for await (const id of supplierPeers(host, options)) peers.push(id);
  return peers.sort();
}

/**
 * Every supplier's current, verified capacity record (withdrawn ones left out), sorted by peer id.
 * Record lookups start as providers stream in, at most `concurrency` at once.
 */
export async function findAllRecords(host: CapacityNode, options: FindAllOptions = {}): Promise<CapacityRecord[]> {
  const limit = limiter(options.concurrency ?? 8);
  const out: CapacityRecord[] = [];
  const lookups: Promise<void>[] = [];
  for await (const peer of supplierPeers(host, options)) {
    lookups.push(limit(() => findRecord(host, peer, options)).then((record) => { if (record) out.push(record); }));
  }
  await Promise.all(lookups);
  return out.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
}

// ---------------------------------------------------------------- the publisher

export type FieldsSource = CapacityRecordFields | (() => CapacityRecordFields | Promise<CapacityRecordFields>);

/** How long address changes may keep coming before the record is re-published with them. */
const ADDRESS_SETTLE_MS = 300;

export interface CapacityPublisherOptions {
  /** What the record says (hardware, fragments, price...); a function is called at every publish. */
  fields?: FieldsSource;
  /** Life of each record (default 10 min). */
  ttlMs?: number;
  /** Re-publish period (default: half the ttl). */
  republishEveryMs?: number;
  /** Retry delay after a publication too few peers stored (default: min(30 s, republish / 4)). */
  retryMs?: number;
  /** Fewest peers that must store a record for it to count as published (default 1). */
  minAccepted?: number;
  /** Per-publication DHT timeout (default 30 s, capped at the republish period). */
  publishTimeoutMs?: number;
  /** Fill `addrs` with the node's addresses when the fields give none (default true). */
  advertiseAddrs?: boolean;
  /** Provide SUPPLIERS_CID at every publication so discovery finds this node (default true). */
  provide?: boolean;
  /**
   * Shortest life of the tombstone `unpublish` publishes (default: ttlMs, so it also outlives records
   * a previous run of this supplier published with the same ttl).
   */
  tombstoneTtlMs?: number;
}

/**
 * Keeps a supplier's capacity record in the DHT: publishes at `start()`, re-publishes at half-life
 * (each time a fresh record: new issued_at_ms, sequence + 1) and sooner after a failure, and soon after
 * the node's own addresses change (a relay slot reserved behind NAT, an address AutoNAT confirmed), so the
 * record always says how to reach the node.
 *
 * Shutdown, two ways:
 * - `unpublish()` publishes a tombstone (withdrawn = true, newest issued_at_ms, expiring no earlier than
 *   any record this publisher published and at least `tombstoneTtlMs` (default ttlMs) from now, so it
 *   outranks every copy still out there until they expire) and stops re-providing the suppliers key.
 *   Readers see the supplier gone at once.
 * - `stop()` only stops the timers: the last record stays valid until it expires (up to `ttlMs`).
 */
export class CapacityPublisher {
  private readonly ttlMs: number;
  private readonly republishEveryMs: number;
  private readonly retryMs: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running = false;
  private chain: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private lastIssuedAtMs = 0;
  private maxExpiresAtMs = 0;
  private fields: FieldsSource;
  private lastRecord: CapacityRecord | undefined;
  private lastResultValue: PublishResult | undefined;
  private readonly log: Logger | undefined;
  private addressTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAddressChange = (): void => {
    if (!this.running || this.options.advertiseAddrs === false || this.addressTimer) return;
    // several updates come together (reservation, identify push, AutoNAT): publish once they settle
    this.addressTimer = setTimeout(() => {
      this.addressTimer = undefined;
      const now = this.host.node.getMultiaddrs().map((a) => a.toString()).sort();
      const said = [...(this.lastRecord?.addrs ?? [])].sort();
      if (!this.running || (now.length === said.length && now.every((a, i) => a === said[i]))) return;
      this.log?.info({ addrs: now }, 'addresses changed: re-publishing the capacity record');
      this.publishNow().catch((err) => this.log?.warn({ err: (err as Error).message }, 'capacity republish failed'));
    }, ADDRESS_SETTLE_MS);
    this.addressTimer.unref?.();
  };

  constructor(private readonly host: CapacityNode & { privateKey: PrivateKey }, private readonly options: CapacityPublisherOptions = {}) {
    this.ttlMs = options.ttlMs ?? DEFAULT_RECORD_TTL_MS;
    if (!(this.ttlMs > 0 && this.ttlMs <= MAX_RECORD_LIFETIME_MS)) throw new RangeError(`ttlMs must be in (0, ${MAX_RECORD_LIFETIME_MS}], got ${this.ttlMs}`);
    this.republishEveryMs = options.republishEveryMs ?? Math.floor(this.ttlMs / 2);
    if (!(this.republishEveryMs > 0 && this.republishEveryMs < this.ttlMs)) {
      throw new RangeError(`republishEveryMs (${this.republishEveryMs}) must be positive and below ttlMs (${this.ttlMs})`);
    }
    this.retryMs = options.retryMs ?? Math.min(30_000, Math.floor(this.republishEveryMs / 4));
    this.fields = options.fields ?? {};
    this.log = host.logger?.child({ component: 'capacity-publisher' });
  }

  /** The record last published (or tried). */
  get current(): CapacityRecord | undefined { return this.lastRecord; }
  /** The outcome of the last publication. */
  get lastResult(): PublishResult | undefined { return this.lastResultValue; }
  get isRunning(): boolean { return this.running; }

  /** Publishes now and keeps re-publishing; resolves with the first publication's outcome. */
  async start(): Promise<PublishResult> {
    this.running = true;
    this.host.node.addEventListener?.('self:peer:update', this.onAddressChange);
    return this.publishNow();
  }

  /** Replaces what the record says and publishes at once. */
  async setFields(fields: FieldsSource): Promise<PublishResult> {
    this.fields = fields;
    return this.publishNow();
  }

  /** Publishes a fresh record now (serialised with any publication under way) and re-arms the timer. */
  publishNow(): Promise<PublishResult> {
    const run = this.chain.then(() => this.publishOnce(false));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Stops re-publishing; the last record stays in the DHT until it expires. */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.addressTimer) clearTimeout(this.addressTimer);
    this.addressTimer = undefined;
    this.host.node.removeEventListener?.('self:peer:update', this.onAddressChange);
  }

  /** Stops, publishes a tombstone and stops providing the suppliers key. */
  async unpublish(): Promise<PublishResult> {
    this.stop();
    const run = this.chain.then(() => this.publishOnce(true));
    this.chain = run.catch(() => undefined);
    const result = await run;
    try {
      await this.host.node.services.dht.cancelReprovide(SUPPLIERS_CID);
    } catch (err) {
      this.log?.debug({ err: (err as Error).message }, 'cancelReprovide failed');
    }
    return result;
  }

  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.publishNow().catch((err) => this.log?.warn({ err: (err as Error).message }, 'capacity republish failed'));
    }, delayMs);
    this.timer.unref?.();
  }

  private async publishOnce(tombstone: boolean): Promise<PublishResult> {
    const now = Date.now();
    const issuedAt = Math.max(now, this.lastIssuedAtMs + 1);
    let result: PublishResult;
    try {
      let record: CapacityRecord;
      if (tombstone) {
        const expires = Math.min(issuedAt + MAX_RECORD_LIFETIME_MS, Math.max(this.maxExpiresAtMs, issuedAt + (this.options.tombstoneTtlMs ?? this.ttlMs)));
        record = buildRecord(this.host.node.peerId, { withdrawn: true, softwareVersion: this.lastRecord?.softwareVersion ?? '' }, { now: issuedAt, ttlMs: Math.max(1, expires - issuedAt), sequence: ++this.seq });
      } else {
        const fields = typeof this.fields === 'function' ? await this.fields() : this.fields;
        const addrs = fields.addrs?.length || this.options.advertiseAddrs === false
          ? fields.addrs ?? []
          : this.host.node.getMultiaddrs().map((a) => a.toString());
        record = buildRecord(this.host.node.peerId, { ...fields, addrs, withdrawn: false }, { now: issuedAt, ttlMs: this.ttlMs, sequence: ++this.seq });
      }
      this.lastIssuedAtMs = issuedAt;
      this.maxExpiresAtMs = Math.max(this.maxExpiresAtMs, record.expiresAtMs);
      this.lastRecord = record;
      const signed = await signRecord(this.host.privateKey, record);
      const timeoutMs = Math.min(this.options.publishTimeoutMs ?? 30_000, this.republishEveryMs);
      result = await publishRecord(this.host, signed, { timeoutMs, minAccepted: this.options.minAccepted });
      if (!tombstone && this.options.provide !== false && result.ok) {
        const providers = await provideSupplier(this.host, { timeoutMs });
        if (providers === 0) this.log?.warn('no peer took the supplier provider record; discovery may miss this node');
      }
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, tombstone ? 'capacity tombstone failed' : 'capacity publish failed');
      this.schedule(this.retryMs);
      throw err;
    }
    this.lastResultValue = result;
    if (result.ok) {
      this.log?.debug({ sequence: result.record.sequence, peers: result.accepted.length, tombstone }, tombstone ? 'capacity record withdrawn' : 'capacity record published');
    } else {
      this.log?.warn({ sequence: result.record.sequence, failed: result.failed.length, error: result.error }, 'capacity record stored by too few peers; retrying');
    }
    if (!tombstone) this.schedule(result.ok ? this.republishEveryMs : this.retryMs);
    return result;
  }
}
