/**
 * Capacity records (net/capacity/record.ts) field by field and refusal by refusal, written so that a changed
 * line is seen (issue 21, mutation testing): a record with every field set survives encode → sign → open
 * unchanged (64-bit numbers included), a stake binding that checks out keeps its address and one that does not
 * is stripped, each refusal has its reason and message, and the probe's fields are copied, not shared.
 * test/net/capacity-record-bounds.test.ts covers the time bounds; this file the rest.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys';
import type { Ed25519PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import {
  CAPACITY_NAMESPACE, CAPACITY_SIGNATURE_DOMAIN, CapacityRecordError, DEFAULT_RECORD_TTL_MS, MAX_SIGNED_RECORD_BYTES, SUPPLIER_SCHEMES, buildRecord,
  capacityKey, capacityKeyString, decodeRecord, encodeRecord, fieldsFromProbe, openRecord, peekRecord, peerIdFromCapacityKey, signRecord, signRecordBytes,
  type CapacityRecord,
} from '../../net/capacity/record.js';
import { makeStakeBinding, recordBinding } from '../../net/capacity/binding.js';
import { wire } from '../../proto/wire.js';

const NOW = 1_800_000_000_000;
const REGISTRY = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
let key: Ed25519PrivateKey;
let other: Ed25519PrivateKey;
let peerId: string;

beforeAll(async () => {
  key = await generateKeyPair('Ed25519');
  other = await generateKeyPair('Ed25519');
  peerId = peerIdFromPrivateKey(key).toString();
});

/** Every field set, 64-bit counts past 2^32 and 2^53 − 1 where the proto says uint64. */
function fullRecord(): CapacityRecord {
  return buildRecord(peerId, {
    addrs: ['/ip4/10.0.0.1/tcp/4001', '/ip4/10.0.0.2/tcp/4002'],
    hardware: {
      gpus: [{ name: 'H200', memoryTotalBytes: 2 ** 40 + 7, memoryFreeBytes: 2 ** 33 + 1, utilizationPercent: 37 }],
      cpuCores: 16, cpuModel: 'Xeon', memoryTotalBytes: 2 ** 37 + 3, memoryFreeBytes: 2 ** 36 + 5,
      executionProviders: ['cuda', 'cpu'], platform: 'linux-x64',
    },
    benchmark: { matmulGflops: 1234.5, executionProvider: 'cuda', measuredAtMs: NOW - 5 },
    pricePerGflop: '123456789012345678901234567890',
    stakingAddress: '',
    fragments: [
      { cid: 'bafy-a', manifestCid: 'bafy-m', index: 3, stepsPerSecond: 12.5, load: 0.25, activeSessions: 4 },
      { cid: 'bafy-b', manifestCid: 'bafy-m', index: 4, stepsPerSecond: 6.25, load: 0.5, activeSessions: 1 },
    ],
    softwareVersion: '0.1.0',
    limits: { maxMemoryBytes: 2 ** 34 + 9, maxSessions: 32, threads: 8, gpuShare: 0.5, hours: '08-20', paused: true },
    withdrawn: true,
    schemes: ['int8', 'wire-fp16'],
  }, { now: NOW, ttlMs: 60_000, sequence: 2 ** 40 + 11 });
}

async function refusal(p: Promise<unknown>): Promise<{ reason: string; message: string }> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CapacityRecordError);
    return { reason: (err as CapacityRecordError).reason, message: (err as Error).message };
  }
  throw new Error('accepted');
}

const SignedType = wire.SignedCapacityRecord;

describe('a record, field by field', () => {
  it('survives encode and decode whole, 64-bit counts included', () => {
    const r = fullRecord();
    expect(decodeRecord(encodeRecord(r))).toEqual(r);
    expect(r).toMatchObject({ peerId, issuedAtMs: NOW, expiresAtMs: NOW + 60_000, sequence: 2 ** 40 + 11 });
  });

  it('decodes a minimal record with no optional parts and numbers absent as 0', () => {
    const bare = decodeRecord(new Uint8Array(0));
    expect(bare).toEqual({ peerId: '', addrs: [], pricePerGflop: '', stakingAddress: '', fragments: [], softwareVersion: '', issuedAtMs: 0, expiresAtMs: 0, sequence: 0, withdrawn: false });
    const noSchemes = decodeRecord(encodeRecord({ ...buildRecord(peerId, {}, { now: NOW }), schemes: [] }));
    expect('schemes' in noSchemes).toBe(false);
  });

  it('refuses bytes that are not a record as MALFORMED, and encodeRecord refuses a field of the wrong type', async () => {
    expect(() => decodeRecord(Uint8Array.from([0x0a, 0x05, 0x61]))).toThrow(CapacityRecordError);
    try { decodeRecord(Uint8Array.from([0x0a, 0x05, 0x61])); } catch (err) {
      expect((err as CapacityRecordError).reason).toBe('MALFORMED');
      expect((err as Error).message).toMatch(/^capacity record does not decode: /);
    }
    expect(() => encodeRecord({ ...fullRecord(), cpuCores: 1, addrs: 'x' } as unknown as CapacityRecord)).toThrow(/^invalid capacity record: /);
  });

  it('buildRecord: defaults, fields, the caller\'s peer id, times and sequence win over the fields', () => {
    const r = buildRecord({ toString: () => peerId }, { peerId: 'someone-else', issuedAtMs: 1, sequence: 99 } as never, { now: NOW });
    expect(r).toEqual({ addrs: [], pricePerGflop: '0', stakingAddress: '', fragments: [], softwareVersion: '', withdrawn: false, peerId, issuedAtMs: NOW, expiresAtMs: NOW + DEFAULT_RECORD_TTL_MS, sequence: 0 });
    expect(DEFAULT_RECORD_TTL_MS).toBe(600_000);
    expect(buildRecord(peerId, { pricePerGflop: '5' }, { now: NOW }).pricePerGflop).toBe('5');
    const before = Date.now();
    const live = buildRecord(peerId, {});
    expect(live.issuedAtMs).toBeGreaterThanOrEqual(before);
    expect(live.issuedAtMs).toBeLessThanOrEqual(Date.now());
    expect(() => buildRecord(peerId, {}, { ttlMs: 0 })).toThrow('record ttl must be in (0, 86400000] ms, got 0');
  });

  it('fieldsFromProbe copies the probe (no shared arrays or objects) and names the schemes every supplier runs', () => {
    const probe = {
      gpus: [{ name: 'g', memoryTotalBytes: 1, memoryFreeBytes: 2, utilizationPercent: 3 }], cpuCores: 2, cpuModel: 'c', memoryTotalBytes: 4, memoryFreeBytes: 5,
      executionProviders: ['cpu'], platform: 'p', benchmark: { matmulGflops: 9, executionProvider: 'cpu', measuredAtMs: 7 }, softwareVersion: 'v',
    };
    const f = fieldsFromProbe(probe);
    expect(f).toEqual({
      schemes: [...SUPPLIER_SCHEMES],
      hardware: { gpus: [{ name: 'g', memoryTotalBytes: 1, memoryFreeBytes: 2, utilizationPercent: 3 }], cpuCores: 2, cpuModel: 'c', memoryTotalBytes: 4, memoryFreeBytes: 5, executionProviders: ['cpu'], platform: 'p' },
      benchmark: { matmulGflops: 9, executionProvider: 'cpu', measuredAtMs: 7 },
      softwareVersion: 'v',
    });
    expect(f.hardware!.gpus[0]).not.toBe(probe.gpus[0]);
    expect(f.hardware!.executionProviders).not.toBe(probe.executionProviders);
    expect(f.benchmark).not.toBe(probe.benchmark);
    expect(f.schemes).not.toBe(SUPPLIER_SCHEMES);
    expect(SUPPLIER_SCHEMES).toEqual(expect.arrayContaining(['wire-fp16', 'wire-int8']));
  });
});

describe('signing and opening', () => {
  it('opens what it signed: the same record and bytes; the signature covers the domain and the exact record bytes', async () => {
    const r = fullRecord();
    const signed = await signRecord(key, r);
    const opened = await openRecord(signed, { now: NOW });
    expect(opened.record).toEqual(r);
    expect(opened.signed).toBe(signed);
    expect(opened.stake).toEqual({ bound: false, claimed: '', reason: 'NO_ADDRESS' });
    const outer = SignedType.decode(signed);
    const payload = new Uint8Array([...new TextEncoder().encode(CAPACITY_SIGNATURE_DOMAIN), ...outer.record]);
    expect(await key.publicKey.verify(payload, outer.signature)).toBe(true);
    expect(CAPACITY_SIGNATURE_DOMAIN).toBe('gridpipe-capacity-record:v1');
    expect(peekRecord(signed)).toEqual(r);
  });

  it('a stake binding that checks out keeps the address; expired, for another peer or missing: stripped with the reason', async () => {
    const wallet = Wallet.createRandom();
    const statement = await makeStakeBinding(wallet, peerId, { chainId: 31337, stakeRegistry: REGISTRY }, 3600, NOW);
    const bound = { ...buildRecord(peerId, { stakingAddress: wallet.address, stakeBinding: recordBinding(statement) }, { now: NOW }) };
    const opened = await openRecord(await signRecord(key, bound), { now: NOW });
    expect(opened.stake).toEqual({ bound: true, claimed: wallet.address });
    expect(opened.record.stakingAddress).toBe(wallet.address);
    expect(opened.record.stakeBinding).toEqual({ chainId: 31337, stakeRegistry: statement.stakeRegistry, until: statement.until, signature: Uint8Array.from(statement.signature) });
    // the same record opened after the binding's end, or without checking it
    const late = await openRecord(await signRecord(key, { ...bound, issuedAtMs: NOW + 7200_000, expiresAtMs: NOW + 7200_000 + 60_000 }), { now: NOW + 7200_000 });
    expect(late.stake.bound).toBe(false);
    expect(late.record.stakingAddress).toBe('');
    expect(late.record.stakeBinding).toBeUndefined();
    const unchecked = await openRecord(await signRecord(key, bound), { now: NOW, checkStake: false });
    expect(unchecked.stake).toEqual({ bound: false, claimed: wallet.address, reason: 'UNCHECKED' });
    expect(unchecked.record.stakingAddress).toBe('');
    const missing = await openRecord(await signRecord(key, { ...bound, stakeBinding: undefined }), { now: NOW });
    expect(missing.stake).toEqual({ bound: false, claimed: wallet.address, reason: 'MISSING' });
  });

  it('signRecord refuses another peer\'s record and an oversized one', async () => {
    const theirs = buildRecord(peerIdFromPrivateKey(other).toString(), {}, { now: NOW });
    expect(await refusal(signRecord(key, theirs))).toEqual({ reason: 'PEER_MISMATCH', message: `record names peer ${theirs.peerId} but the key belongs to ${peerId}` });
    const big = buildRecord(peerId, { addrs: Array.from({ length: 400 }, (_, i) => `/ip4/10.0.${i >> 8}.${i & 255}/tcp/4001/p2p/${peerId}`) }, { now: NOW });
    const r = await refusal(signRecord(key, big));
    expect(r.reason).toBe('OVERSIZED');
    expect(r.message).toMatch(/^signed capacity record is \d+ bytes; the limit is 16384 \(advertise fewer fragments or addresses\)$/);
    expect(MAX_SIGNED_RECORD_BYTES).toBe(16 * 1024);
  });

  it('openRecord names each refusal', async () => {
    const r = buildRecord(peerId, {}, { now: NOW });
    const recordBytes = encodeRecord(r);
    const good = await signRecordBytes(key, recordBytes);
    const outer = SignedType.decode(good);
    const rewrap = (o: { record?: Uint8Array; publicKey?: Uint8Array; signature?: Uint8Array }): Uint8Array =>
      SignedType.encode(SignedType.fromObject({ record: outer.record, publicKey: outer.publicKey, signature: outer.signature, ...o })).finish();

    expect(await refusal(openRecord(new Uint8Array(MAX_SIGNED_RECORD_BYTES + 1)))).toEqual({ reason: 'OVERSIZED', message: `signed capacity record is ${MAX_SIGNED_RECORD_BYTES + 1} bytes; the limit is ${MAX_SIGNED_RECORD_BYTES}` });
    const bad = await refusal(openRecord(Uint8Array.from([0x0a, 0x09, 0x01])));
    expect(bad.reason).toBe('MALFORMED');
    expect(bad.message).toMatch(/^signed capacity record does not decode: /);
    for (const missing of [{ record: new Uint8Array(0) }, { publicKey: new Uint8Array(0) }, { signature: new Uint8Array(0) }]) {
      expect(await refusal(openRecord(rewrap(missing), { now: NOW }))).toEqual({ reason: 'MALFORMED', message: 'signed capacity record lacks its record, public key or signature' });
    }
    const badKey = await refusal(openRecord(rewrap({ publicKey: Uint8Array.from([1, 2, 3]) }), { now: NOW }));
    expect(badKey.reason).toBe('MALFORMED');
    expect(badKey.message).toMatch(/^signer public key does not decode: /);
    const garbledRecord = await refusal(openRecord(rewrap({ record: Uint8Array.from([0x0a, 0x05, 0x61]) }), { now: NOW }));
    expect(garbledRecord.reason).toBe('MALFORMED');
    const noPeer = await signRecordBytes(key, encodeRecord({ ...r, peerId: '' }));
    expect(await refusal(openRecord(noPeer, { now: NOW }))).toEqual({ reason: 'MALFORMED', message: 'capacity record has no peer id' });
    const theirs = peerIdFromPrivateKey(other).toString();
    expect(await refusal(openRecord(await signRecordBytes(other, recordBytes), { now: NOW }))).toEqual({ reason: 'PEER_MISMATCH', message: `capacity record for ${peerId} is signed by ${theirs}` });
    expect(await refusal(openRecord(good, { now: NOW, expectedPeerId: theirs }))).toEqual({ reason: 'KEY_MISMATCH', message: `capacity record for ${peerId} stored under the key of ${theirs}` });
    expect((await openRecord(good, { now: NOW, expectedPeerId: peerId })).record.peerId).toBe(peerId);
    const flipped = Uint8Array.from(outer.signature);
    flipped[0] ^= 1;
    expect(await refusal(openRecord(rewrap({ signature: flipped }), { now: NOW }))).toEqual({ reason: 'BAD_SIGNATURE', message: `capacity record for ${peerId} has an invalid signature` });
    expect(await refusal(openRecord(rewrap({ signature: Uint8Array.from([1]) }), { now: NOW }))).toEqual({ reason: 'BAD_SIGNATURE', message: `capacity record for ${peerId} has an invalid signature` });
    // a signature over the record without the domain prefix is not valid
    const noDomain = rewrap({ signature: await key.sign(outer.record) });
    expect((await refusal(openRecord(noDomain, { now: NOW }))).reason).toBe('BAD_SIGNATURE');
    // times: the messages give the figures
    const long = await signRecordBytes(key, encodeRecord({ ...r, expiresAtMs: r.issuedAtMs + 86_400_001 }));
    expect(await refusal(openRecord(long, { now: NOW }))).toEqual({ reason: 'BAD_LIFETIME', message: `capacity record for ${peerId} claims a lifetime of 86400001 ms (allowed: 1..86400000)` });
    expect(await refusal(openRecord(good, { now: NOW - 300_001 }))).toEqual({ reason: 'NOT_YET_VALID', message: `capacity record for ${peerId} is issued 300001 ms in the future (clock skew?)` });
    expect(await refusal(openRecord(good, { now: NOW + 600_005 }))).toEqual({ reason: 'EXPIRED', message: `capacity record for ${peerId} expired 5 ms ago` });
    // the default clock is now: a record issued now opens, one from NOW (2027) is not yet valid
    expect((await openRecord(await signRecord(key, buildRecord(peerId, {}))))).toBeDefined();
    expect((await refusal(openRecord(good))).reason).toBe(Date.now() < NOW - 300_000 ? 'NOT_YET_VALID' : 'EXPIRED');
  });

  it('peekRecord reads without checking, and gives undefined for bytes that do not decode', async () => {
    const r = buildRecord(peerId, { softwareVersion: 'x' }, { now: NOW });
    const forged = await signRecordBytes(other, encodeRecord(r));
    expect(peekRecord(forged)).toEqual(r);
    expect(peekRecord(Uint8Array.from([0x0a, 0x09, 0x01]))).toBeUndefined();
    expect(peekRecord(SignedType.encode(SignedType.fromObject({ record: Uint8Array.from([0x0a, 0x05, 0x61]), publicKey: publicKeyToProtobuf(key.publicKey), signature: new Uint8Array(1) })).finish())).toBeUndefined();
  });
});

describe('keys', () => {
  it('/gpcap/<peer> both ways, from a string or a peer id object, bytes or text', () => {
    expect(CAPACITY_NAMESPACE).toBe('gpcap');
    expect(capacityKeyString(peerId)).toBe(`/gpcap/${peerId}`);
    expect(capacityKeyString({ toString: () => 'abc' })).toBe('/gpcap/abc');
    expect(new TextDecoder().decode(capacityKey(peerId))).toBe(`/gpcap/${peerId}`);
    expect(peerIdFromCapacityKey(capacityKey(peerId))).toBe(peerId);
    expect(peerIdFromCapacityKey('/gpcap/abc')).toBe('abc');
    for (const bad of ['gpcap/abc', '/gpcap/', '/other/abc', '/gpcap/a/b', 'x/gpcap/abc', '']) {
      let err: unknown;
      try { peerIdFromCapacityKey(bad); } catch (e) { err = e; }
      expect(err, bad).toBeInstanceOf(CapacityRecordError);
      expect((err as CapacityRecordError).reason).toBe('KEY_MISMATCH');
      expect((err as Error).message).toBe(`not a capacity record key: ${JSON.stringify(bad)}`);
    }
    const long = `/x/${'a'.repeat(300)}`;
    expect(() => peerIdFromCapacityKey(long)).toThrow(`not a capacity record key: ${JSON.stringify(long.slice(0, 120))}`);
  });
});
