/**
 * Capacity records: what a supplier offers (hardware, benchmark, hosted fragments, limits, price),
 * signed by the supplier's own libp2p key and stored in the DHT under `/gpcap/<peerId>`.
 *
 * Wire form (proto/capacity.proto): `SignedCapacityRecord { record, public_key, signature }`, where
 * `signature = sign(privateKey, "gridpipe-capacity-record:v1" || record)` over the exact record bytes
 * (never re-encoded, so fields added later keep old signatures valid).
 *
 * `openRecord` is the one place a record is checked; the DHT validator, the selector's inputs and
 * every reader go through it. It throws a `CapacityRecordError` whose `reason` says what was wrong.
 *
 * Stake binding: a record's `stakingAddress` counts only with a valid `stakeBinding`, the staking key's
 * EIP-712 signature that it operates this very peer until a time (contracts/eip712.ts). `openRecord`
 * returns a record whose binding is missing, wrong or expired with NO staking address (and no binding),
 * so discovery, routing, payment and disputes can never use an address the peer merely named.
 */
import { QUANT_SCHEMES } from '../../fragments/quantize/scheme.js';
import type { Manifest } from '../../fragments/manifest.js';
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPublicKey } from '@libp2p/peer-id';
import { wire, type gridpipe } from '../../proto/wire.js';
import { checkStakeBinding, type RecordStakeBinding } from './binding.js';
import { GridpipeError } from '../../errors/base.js';

export type { RecordStakeBinding } from './binding.js';

/** DHT namespace of capacity records: keys are `/gpcap/<peerId>`. */
export const CAPACITY_NAMESPACE = 'gpcap';
/** Domain separation prefix of the signature. */
export const CAPACITY_SIGNATURE_DOMAIN = 'gridpipe-capacity-record:v1';
/** Largest signed record (SignedCapacityRecord bytes) any node accepts. */
export const MAX_SIGNED_RECORD_BYTES = 16 * 1024;
/** Longest lifetime (expires - issued) a record may claim: bounds how long a replayed record lives. */
export const MAX_RECORD_LIFETIME_MS = 24 * 3600 * 1000;
/** How far in the future issued_at_ms may be (clock skew between suppliers and DHT nodes). */
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;

export interface Gpu { name: string; memoryTotalBytes: number; memoryFreeBytes: number; utilizationPercent: number }
export interface Hardware {
  gpus: Gpu[];
  cpuCores: number;
  cpuModel: string;
  memoryTotalBytes: number;
  memoryFreeBytes: number;
  /** Execution providers that created a session here, best first; always ends with 'cpu'. */
  executionProviders: string[];
  platform: string;
}
export interface Benchmark { matmulGflops: number; executionProvider: string; measuredAtMs: number }
export interface HostedFragment {
  cid: string;
  manifestCid: string;
  index: number;
  stepsPerSecond: number;
  load: number;
  activeSessions: number;
  /**
   * For an expert fragment of a cut mixture-of-experts layer: its layer's expert group (manifest.expertGroups
   * index) and the experts it computes, so clients find an expert's hosts by name (absent on other fragments).
   */
  experts?: { group: number; experts: number[] };
}
/** The advertised share limits (proto ShareLimits; node/limits.ts holds the live ones). */
export interface AdvertisedLimits {
  maxMemoryBytes: number;
  maxSessions: number;
  threads: number;
  gpuShare: number;
  hours: string;
  paused: boolean;
}

/** A capacity record as plain data (camelCase proto fields; uint64 as numbers). */
export interface CapacityRecord {
  peerId: string;
  addrs: string[];
  hardware?: Hardware;
  benchmark?: Benchmark;
  /** Price per GFLOP in the payment token's base units, a decimal integer string. */
  pricePerGflop: string;
  stakingAddress: string;
  fragments: HostedFragment[];
  softwareVersion: string;
  issuedAtMs: number;
  expiresAtMs: number;
  sequence: number;
  limits?: AdvertisedLimits;
  /** A tombstone: the supplier has left. */
  withdrawn: boolean;
  /**
   * The staking key's signed consent to stand behind this peer. After `openRecord`: present only when it
   * checked out, and `stakingAddress` is '' whenever it is absent.
   */
  stakeBinding?: RecordStakeBinding;
  /** Quantization schemes and wire encodings the supplier runs (SUPPLIER_SCHEMES); absent on older suppliers. */
  schemes?: string[];
}

/** What a supplier says about itself; `buildRecord` adds the peer id, times and sequence. */
export type CapacityRecordFields = Partial<Omit<CapacityRecord, 'peerId' | 'issuedAtMs' | 'expiresAtMs' | 'sequence'>>;

export type CapacityRecordRejection =
  | 'OVERSIZED'
  | 'MALFORMED'
  | 'BAD_SIGNATURE'
  | 'PEER_MISMATCH'
  | 'KEY_MISMATCH'
  | 'EXPIRED'
  | 'NOT_YET_VALID'
  | 'BAD_LIFETIME'
  /** Refused by a node's storage quota (net/capacity/quota.ts), not by what it says. */
  | 'QUOTA';

/** A record that failed `openRecord`; `reason` is a stable code (also the metrics label). */
export class CapacityRecordError extends GridpipeError<CapacityRecordRejection> {
  override readonly name = 'CapacityRecordError';
  constructor(readonly reason: CapacityRecordRejection, message: string, options: { cause?: unknown } = {}) {
    super(reason, message, options);
  }
}

/** A verified record, with the bytes it came from. */
export interface OpenedRecord {
  /** The record; its `stakingAddress` is '' unless the stake binding checked out. */
  record: CapacityRecord;
  /** Whether the named staking address is bound to the peer, and when not, why (for logs and metrics). */
  stake: { bound: boolean; claimed: string; reason?: string };
  /** The SignedCapacityRecord bytes as stored in the DHT. */
  signed: Uint8Array;
}

const RecordType = wire.CapacityRecord;
const SignedType = wire.SignedCapacityRecord;
const DOMAIN_BYTES = new TextEncoder().encode(CAPACITY_SIGNATURE_DOMAIN);

/** What a record says of fragment `index` of `manifest` beyond its CID: the experts it computes, when it is an expert fragment. */
export function expertsOfFragment(manifest: Pick<Manifest, 'fragments'>, index: number): Pick<HostedFragment, 'experts'> {
  const moe = manifest.fragments[index]?.moe;
  return moe?.role === 'experts' && moe.experts?.length ? { experts: { group: moe.group, experts: [...moe.experts] } } : {};
}

// ---------------------------------------------------------------- keys

/** `/gpcap/<peerId>` */
export function capacityKeyString(peerId: string | { toString(): string }): string {
  return `/${CAPACITY_NAMESPACE}/${peerId.toString()}`;
}

/** The DHT key (UTF-8 of `/gpcap/<peerId>`). */
export function capacityKey(peerId: string | { toString(): string }): Uint8Array {
  return new TextEncoder().encode(capacityKeyString(peerId));
}

/** The peer id string a `/gpcap/<peerId>` key names; throws KEY_MISMATCH on any other shape. */
export function peerIdFromCapacityKey(key: Uint8Array | string): string {
  const text = typeof key === 'string' ? key : new TextDecoder().decode(key);
  const parts = text.split('/');
  if (parts.length !== 3 || parts[0] !== '' || parts[1] !== CAPACITY_NAMESPACE || parts[2] === '') {
    throw new CapacityRecordError('KEY_MISMATCH', `not a capacity record key: ${JSON.stringify(text.slice(0, 120))}`);
  }
  return parts[2];
}

// ---------------------------------------------------------------- encode / decode

/** A decoded number field as a number (uint64 fields decode as a Long past 2^53; exact to 2^53). */
function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (typeof v === 'number') return v;
  return v ? v.toNumber() : 0;
}

/** Encodes a record (no signature). */
export function encodeRecord(record: CapacityRecord): Uint8Array {
  const wireForm = { ...record, fragments: record.fragments.map(({ experts, ...f }) => (experts ? { ...f, experts: experts.experts, expertGroup: experts.group } : f)) };
  const err = RecordType.verify(wireForm);
  if (err) throw new TypeError(`invalid capacity record: ${err}`);
  return RecordType.encode(RecordType.fromObject(wireForm)).finish();
}

/** Decodes record bytes into plain data; throws MALFORMED. */
export function decodeRecord(bytes: Uint8Array): CapacityRecord {
  let o: gridpipe.v1.CapacityRecord;
  try {
    o = RecordType.decode(bytes);
  } catch (err) {
    throw new CapacityRecordError('MALFORMED', `capacity record does not decode: ${(err as Error).message}`, { cause: err });
  }
  const { hardware: hw, benchmark: bench, limits, stakeBinding: binding } = o;
  return {
    peerId: o.peerId,
    addrs: [...o.addrs],
    ...(hw ? {
      hardware: {
        gpus: hw.gpus.map((g) => ({
          name: g.name,
          memoryTotalBytes: toNumber(g.memoryTotalBytes),
          memoryFreeBytes: toNumber(g.memoryFreeBytes),
          utilizationPercent: g.utilizationPercent,
        })),
        cpuCores: hw.cpuCores,
        cpuModel: hw.cpuModel,
        memoryTotalBytes: toNumber(hw.memoryTotalBytes),
        memoryFreeBytes: toNumber(hw.memoryFreeBytes),
        executionProviders: [...hw.executionProviders],
        platform: hw.platform,
      },
    } : {}),
    ...(bench ? {
      benchmark: {
        matmulGflops: bench.matmulGflops,
        executionProvider: bench.executionProvider,
        measuredAtMs: toNumber(bench.measuredAtMs),
      },
    } : {}),
    pricePerGflop: o.pricePerGflop,
    stakingAddress: o.stakingAddress,
    fragments: o.fragments.map((f) => ({
      cid: f.cid,
      manifestCid: f.manifestCid,
      index: f.index,
      stepsPerSecond: f.stepsPerSecond,
      load: f.load,
      activeSessions: f.activeSessions,
      ...(f.experts?.length ? { experts: { group: f.expertGroup, experts: [...f.experts] } } : {}),
    })),
    softwareVersion: o.softwareVersion,
    issuedAtMs: toNumber(o.issuedAtMs),
    expiresAtMs: toNumber(o.expiresAtMs),
    sequence: toNumber(o.sequence),
    ...(limits ? {
      limits: {
        maxMemoryBytes: toNumber(limits.maxMemoryBytes),
        maxSessions: limits.maxSessions,
        threads: limits.threads,
        gpuShare: limits.gpuShare,
        hours: limits.hours,
        paused: limits.paused,
      },
    } : {}),
    withdrawn: o.withdrawn,
    ...(o.schemes?.length ? { schemes: [...o.schemes] } : {}),
    ...(binding ? {
      stakeBinding: {
        chainId: toNumber(binding.chainId),
        stakeRegistry: binding.stakeRegistry,
        until: toNumber(binding.until),
        signature: Uint8Array.from(binding.signature),
      },
    } : {}),
  };
}

// ---------------------------------------------------------------- build / sign

export interface BuildOptions {
  /** Issue time (default Date.now()). */
  now?: number;
  /** Lifetime in ms (default 10 min). */
  ttlMs?: number;
  /** Sequence number (default 0); `CapacityPublisher` counts it up. */
  sequence?: number;
}

export const DEFAULT_RECORD_TTL_MS = 10 * 60 * 1000;

/** A record for `peerId` with the given fields, issued now and expiring after `ttlMs`. */
export function buildRecord(peerId: string | { toString(): string }, fields: CapacityRecordFields, options: BuildOptions = {}): CapacityRecord {
  const now = options.now ?? Date.now();
  const ttl = options.ttlMs ?? DEFAULT_RECORD_TTL_MS;
  if (!(ttl > 0) || ttl > MAX_RECORD_LIFETIME_MS) throw new RangeError(`record ttl must be in (0, ${MAX_RECORD_LIFETIME_MS}] ms, got ${ttl}`);
  return {
    addrs: [],
    pricePerGflop: '0',
    stakingAddress: '',
    fragments: [],
    softwareVersion: '',
    withdrawn: false,
    ...fields,
    peerId: peerId.toString(),
    issuedAtMs: now,
    expiresAtMs: now + ttl,
    sequence: options.sequence ?? 0,
  };
}

function signedPayload(recordBytes: Uint8Array): Uint8Array {
  const payload = new Uint8Array(DOMAIN_BYTES.byteLength + recordBytes.byteLength);
  payload.set(DOMAIN_BYTES, 0);
  payload.set(recordBytes, DOMAIN_BYTES.byteLength);
  return payload;
}

/**
 * Signs raw record bytes with any key, without checking what they say. The building block of
 * `signRecord`; tests use it to forge records that every node must reject.
 */
export async function signRecordBytes(privateKey: PrivateKey, recordBytes: Uint8Array): Promise<Uint8Array> {
  const signature = await privateKey.sign(signedPayload(recordBytes));
  return SignedType.encode(SignedType.fromObject({
    record: recordBytes,
    publicKey: publicKeyToProtobuf(privateKey.publicKey),
    signature,
  })).finish();
}

/** Encodes and signs a record; refuses a record that names another peer than the key's. */
export async function signRecord(privateKey: PrivateKey, record: CapacityRecord): Promise<Uint8Array> {
  const signer = peerIdFromPublicKey(privateKey.publicKey).toString();
  if (record.peerId !== signer) throw new CapacityRecordError('PEER_MISMATCH', `record names peer ${record.peerId} but the key belongs to ${signer}`);
  const bytes = await signRecordBytes(privateKey, encodeRecord(record));
  if (bytes.byteLength > MAX_SIGNED_RECORD_BYTES) {
    throw new CapacityRecordError('OVERSIZED', `signed capacity record is ${bytes.byteLength} bytes; the limit is ${MAX_SIGNED_RECORD_BYTES} (advertise fewer fragments or addresses)`);
  }
  return bytes;
}

// ---------------------------------------------------------------- open / verify

export interface OpenOptions {
  /** The time to check expiry against (default Date.now()). */
  now?: number;
  /** The peer the record must be for (e.g. from the DHT key); KEY_MISMATCH otherwise. */
  expectedPeerId?: string;
  /** Accept expired records (to inspect them); signature and peer checks still apply. */
  allowExpired?: boolean;
  /**
   * Check the stake binding (default true). False skips its signature recovery where nothing depends on
   * it (the DHT validator only decides whether to store); the record then comes back unbound.
   */
  checkStake?: boolean;
}

/** Checks a signed record and returns its content; throws `CapacityRecordError`. */
export async function openRecord(signed: Uint8Array, options: OpenOptions = {}): Promise<OpenedRecord> {
  if (signed.byteLength > MAX_SIGNED_RECORD_BYTES) {
    throw new CapacityRecordError('OVERSIZED', `signed capacity record is ${signed.byteLength} bytes; the limit is ${MAX_SIGNED_RECORD_BYTES}`);
  }
  let outer: gridpipe.v1.SignedCapacityRecord;
  try {
    outer = SignedType.decode(signed);
  } catch (err) {
    throw new CapacityRecordError('MALFORMED', `signed capacity record does not decode: ${(err as Error).message}`, { cause: err });
  }
  if (outer.record.byteLength === 0 || outer.publicKey.byteLength === 0 || outer.signature.byteLength === 0) {
    throw new CapacityRecordError('MALFORMED', 'signed capacity record lacks its record, public key or signature');
  }
  let publicKey: ReturnType<typeof publicKeyFromProtobuf>;
  try {
    publicKey = publicKeyFromProtobuf(outer.publicKey);
  } catch (err) {
    throw new CapacityRecordError('MALFORMED', `signer public key does not decode: ${(err as Error).message}`, { cause: err });
  }
  const record = decodeRecord(outer.record);
  if (!record.peerId) throw new CapacityRecordError('MALFORMED', 'capacity record has no peer id');
  const signer = peerIdFromPublicKey(publicKey).toString();
  if (record.peerId !== signer) {
    throw new CapacityRecordError('PEER_MISMATCH', `capacity record for ${record.peerId} is signed by ${signer}`);
  }
  if (options.expectedPeerId !== undefined && options.expectedPeerId !== record.peerId) {
    throw new CapacityRecordError('KEY_MISMATCH', `capacity record for ${record.peerId} stored under the key of ${options.expectedPeerId}`);
  }
  let valid: boolean;
  try {
    valid = await publicKey.verify(signedPayload(outer.record), outer.signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new CapacityRecordError('BAD_SIGNATURE', `capacity record for ${record.peerId} has an invalid signature`);
  const now = options.now ?? Date.now();
  if (!(record.expiresAtMs > record.issuedAtMs) || record.expiresAtMs - record.issuedAtMs > MAX_RECORD_LIFETIME_MS) {
    throw new CapacityRecordError('BAD_LIFETIME', `capacity record for ${record.peerId} claims a lifetime of ${record.expiresAtMs - record.issuedAtMs} ms (allowed: 1..${MAX_RECORD_LIFETIME_MS})`);
  }
  if (record.issuedAtMs > now + MAX_CLOCK_SKEW_MS) {
    throw new CapacityRecordError('NOT_YET_VALID', `capacity record for ${record.peerId} is issued ${record.issuedAtMs - now} ms in the future (clock skew?)`);
  }
  if (!options.allowExpired && record.expiresAtMs <= now) {
    throw new CapacityRecordError('EXPIRED', `capacity record for ${record.peerId} expired ${now - record.expiresAtMs} ms ago`);
  }
  const claimed = record.stakingAddress;
  const binding = options.checkStake === false ? { bound: false, reason: 'UNCHECKED' as const } : checkStakeBinding(record, now);
  if (!binding.bound) {
    record.stakingAddress = '';
    delete record.stakeBinding;
  }
  return { record, signed, stake: { bound: binding.bound, claimed, ...(binding.reason ? { reason: binding.reason } : {}) } };
}

/** Orders records: newer issued_at_ms first wins, then higher sequence. Positive when `a` is newer. */
export function compareRecords(a: Pick<CapacityRecord, 'issuedAtMs' | 'sequence'>, b: Pick<CapacityRecord, 'issuedAtMs' | 'sequence'>): number {
  if (a.issuedAtMs !== b.issuedAtMs) return a.issuedAtMs - b.issuedAtMs;
  return a.sequence - b.sequence;
}

/**
 * The record part of signed bytes, without verifying anything (for the DHT selector, whose inputs
 * the validator has already checked). Undefined when the bytes do not decode.
 */
export function peekRecord(signed: Uint8Array): CapacityRecord | undefined {
  try {
    const outer = SignedType.decode(signed);
    return decodeRecord(outer.record);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- from the probe

/** What a capacity probe measures: node/probe.ts's ProbeResult is this plus its notes. */
export interface ProbeLike extends Hardware {
  benchmark: Benchmark;
  softwareVersion: string;
}

/**
 * What every supplier of this version runs besides full precision: fragments quantized int8 / int4 (onnxruntime's
 * MatMulNBits and GatherBlockQuantized, in every build) and exec sessions whose activations travel fp16 / int8.
 */
export const SUPPLIER_SCHEMES: readonly string[] = [...QUANT_SCHEMES, 'wire-fp16', 'wire-int8'];

/** Record fields (hardware, benchmark, software version, schemes it runs) from a capacity probe. */
export function fieldsFromProbe(probe: ProbeLike): Pick<CapacityRecord, 'hardware' | 'benchmark' | 'softwareVersion' | 'schemes'> {
  return {
    schemes: [...SUPPLIER_SCHEMES],
    hardware: {
      gpus: probe.gpus.map((g) => ({ ...g })),
      cpuCores: probe.cpuCores,
      cpuModel: probe.cpuModel,
      memoryTotalBytes: probe.memoryTotalBytes,
      memoryFreeBytes: probe.memoryFreeBytes,
      executionProviders: [...probe.executionProviders],
      platform: probe.platform,
    },
    benchmark: { ...probe.benchmark },
    softwareVersion: probe.softwareVersion,
  };
}
