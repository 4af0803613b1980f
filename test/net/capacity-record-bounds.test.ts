/**
 * Signed capacity records at the edges of every check (issue 21: clock-skew acceptance, zero lifetimes and
 * malformed keys were untested): records signed by a real Ed25519 peer key with times chosen one millisecond
 * either side of each bound, opened at a fixed time, and DHT keys of every wrong shape.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Ed25519PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import {
  MAX_CLOCK_SKEW_MS, MAX_RECORD_LIFETIME_MS, buildRecord, capacityKey, capacityKeyString, compareRecords, encodeRecord, openRecord,
  peerIdFromCapacityKey, signRecord, signRecordBytes, CapacityRecordError, type CapacityRecord,
} from '../../net/capacity/record.js';

const NOW = 1_800_000_000_000;
let key: Ed25519PrivateKey;
let peerId: string;

beforeAll(async () => {
  key = await generateKeyPair('Ed25519');
  peerId = peerIdFromPrivateKey(key).toString();
});

/** A record with exactly these times, signed without buildRecord's checks. */
async function signedAt(issuedAtMs: number, expiresAtMs: number): Promise<Uint8Array> {
  const r: CapacityRecord = { ...buildRecord(peerId, {}, { now: NOW }), issuedAtMs, expiresAtMs };
  return signRecordBytes(key, encodeRecord(r));
}

async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CapacityRecordError);
    return (err as CapacityRecordError).reason;
  }
  throw new Error('accepted');
}

describe('capacity record bounds', () => {
  it('accepts a record issued up to MAX_CLOCK_SKEW_MS in the future, not one millisecond more', async () => {
    const edge = NOW + MAX_CLOCK_SKEW_MS;
    await expect(openRecord(await signedAt(edge, edge + 1000), { now: NOW })).resolves.toMatchObject({ record: { peerId } });
    expect(await rejection(openRecord(await signedAt(edge + 1, edge + 1000), { now: NOW }))).toBe('NOT_YET_VALID');
  });

  it('needs a lifetime of 1 ms to MAX_RECORD_LIFETIME_MS: zero, negative and one more are refused', async () => {
    expect(await rejection(openRecord(await signedAt(NOW, NOW), { now: NOW }))).toBe('BAD_LIFETIME');
    expect(await rejection(openRecord(await signedAt(NOW, NOW - 1), { now: NOW }))).toBe('BAD_LIFETIME');
    await expect(openRecord(await signedAt(NOW - 10, NOW - 9), { now: NOW - 10 })).resolves.toBeDefined();
    await expect(openRecord(await signedAt(NOW, NOW + MAX_RECORD_LIFETIME_MS), { now: NOW })).resolves.toBeDefined();
    expect(await rejection(openRecord(await signedAt(NOW, NOW + MAX_RECORD_LIFETIME_MS + 1), { now: NOW }))).toBe('BAD_LIFETIME');
  });

  it('is expired at its expiry, valid one millisecond before; allowExpired opens it anyway', async () => {
    const bytes = await signedAt(NOW - 1000, NOW);
    expect(await rejection(openRecord(bytes, { now: NOW }))).toBe('EXPIRED');
    await expect(openRecord(bytes, { now: NOW - 1 })).resolves.toBeDefined();
    await expect(openRecord(bytes, { now: NOW, allowExpired: true })).resolves.toMatchObject({ record: { expiresAtMs: NOW } });
  });

  it('checks the key it is stored under, and refuses buildRecord lifetimes out of range', async () => {
    const bytes = await signRecord(key, buildRecord(peerId, {}, { now: NOW }));
    await expect(openRecord(bytes, { now: NOW, expectedPeerId: peerId })).resolves.toBeDefined();
    expect(await rejection(openRecord(bytes, { now: NOW, expectedPeerId: `${peerId}x` }))).toBe('KEY_MISMATCH');
    for (const ttl of [0, -1, MAX_RECORD_LIFETIME_MS + 1, Number.NaN]) expect(() => buildRecord(peerId, {}, { now: NOW, ttlMs: ttl })).toThrow(RangeError);
    expect(buildRecord(peerId, {}, { now: NOW, ttlMs: MAX_RECORD_LIFETIME_MS }).expiresAtMs).toBe(NOW + MAX_RECORD_LIFETIME_MS);
  });

  it('reads /gpcap/<peer> keys only', () => {
    expect(peerIdFromCapacityKey(capacityKey(peerId))).toBe(peerId);
    expect(peerIdFromCapacityKey(capacityKeyString(peerId))).toBe(peerId);
    for (const bad of ['', '/', '/gpcap', '/gpcap/', 'gpcap/x', '/gpcap/x/y', '/ipns/x', '//gpcap/x', `x/gpcap/${peerId}`]) {
      expect(() => peerIdFromCapacityKey(bad), bad).toThrow(CapacityRecordError);
      try { peerIdFromCapacityKey(bad); } catch (err) { expect((err as CapacityRecordError).reason).toBe('KEY_MISMATCH'); }
    }
  });

  it('orders records by issue time, then sequence', () => {
    expect(compareRecords({ issuedAtMs: 2, sequence: 0 }, { issuedAtMs: 1, sequence: 9 })).toBeGreaterThan(0);
    expect(compareRecords({ issuedAtMs: 1, sequence: 2 }, { issuedAtMs: 1, sequence: 1 })).toBeGreaterThan(0);
    expect(compareRecords({ issuedAtMs: 1, sequence: 1 }, { issuedAtMs: 1, sequence: 1 })).toBe(0);
    expect(compareRecords({ issuedAtMs: 1, sequence: 1 }, { issuedAtMs: 1, sequence: 2 })).toBeLessThan(0);
  });
});
