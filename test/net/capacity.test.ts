/**
 * Capacity records (net/capacity/): signing and opening every field, typed refusals of forged, tampered, expired,
 * oversized and misplaced records, the DHT validator and selector, and records seen by every node of a 6-node DHT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Wallet } from 'ethers';
import { gridRoot } from '../../proto/grid.js';
import { makeStakeBinding, recordBinding } from '../../net/capacity/binding.js';
import {
  CapacityRecordError,
  MAX_SIGNED_RECORD_BYTES,
  buildRecord,
  capacityKey,
  capacityKeyString,
  compareRecords,
  decodeRecord,
  encodeRecord,
  fieldsFromProbe,
  openRecord,
  peerIdFromCapacityKey,
  signRecord,
  signRecordBytes,
  type CapacityRecordFields,
} from '../../net/capacity/record.js';
import {
  CapacityPublisher,
  SUPPLIERS_CID,
  capacitySelector,
  capacityValidator,
  findAllRecords,
  findRecord,
  publishRecord,
} from '../../net/capacity/dht.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { startSwarm, stopSwarm, testLogger, waitFor, type Swarm } from '../helpers/swarm.js';

const SignedType = gridRoot.lookupType('gridpipe.v1.SignedCapacityRecord');

const probe = {
  gpus: [{ name: 'NVIDIA GeForce RTX 4090', memoryTotalBytes: 24 * 2 ** 30, memoryFreeBytes: 20 * 2 ** 30, utilizationPercent: 3 }],
  cpuCores: 16,
  cpuModel: 'Test CPU',
  memoryTotalBytes: 64 * 2 ** 30,
  memoryFreeBytes: 40 * 2 ** 30,
  executionProviders: ['cuda', 'cpu'],
  platform: 'linux-x64',
  benchmark: { matmulGflops: 1234.5, executionProvider: 'cuda', measuredAtMs: 1_700_000_000_000 },
  softwareVersion: '0.1.0',
};

function supplierFields(i: number): CapacityRecordFields {
  return {
    ...fieldsFromProbe(probe),
    pricePerGflop: String(1000 + i),
    stakingAddress: `0x${String(i).padStart(40, '0')}`,
    fragments: [{ cid: `bafkfragment${i}`, manifestCid: 'bafkmanifest', index: i, stepsPerSecond: 12.5, load: 0.25, activeSessions: 1 }],
    limits: { maxMemoryBytes: 8 * 2 ** 30, maxSessions: 16, threads: 8, gpuShare: 0.5, hours: '', paused: false },
  };
}

async function newKey(): Promise<{ key: PrivateKey; id: string }> {
  const key = await generateKeyPair('Ed25519');
  return { key, id: peerIdFromPrivateKey(key).toString() };
}

/** Sends a value straight through one node's DHT put (no local checks) and counts who stored it. */
async function rawPut(host: GridHost, key: Uint8Array, value: Uint8Array): Promise<{ sent: Set<string>; stored: Set<string>; refused: Set<string> }> {
  const sent = new Set<string>();
  const stored = new Set<string>();
  const refused = new Set<string>();
  for await (const e of host.node.services.dht.put(key, value, { signal: AbortSignal.timeout(20_000) })) {
    if (e.name === 'SEND_QUERY' && e.messageName === 'PUT_VALUE') sent.add(e.to.toString());
    if (e.name === 'PEER_RESPONSE' && e.messageName === 'PUT_VALUE') stored.add(e.from.toString());
    if (e.name === 'QUERY_ERROR' && sent.has(e.from.toString())) refused.add(e.from.toString());
  }
  return { sent, stored, refused };
}

async function rejectedCount(host: GridHost, reason: string): Promise<number> {
  const m = await host.metrics.getSingleMetric('gridpipe_capacity_records_rejected_total')!.get();
  return m.values.filter((v) => v.labels.reason === reason).reduce((s, v) => s + v.value, 0);
}

async function counter(host: GridHost, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await host.metrics.getSingleMetric(name)!.get();
  return m.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((s, v) => s + v.value, 0);
}

describe('capacity records', () => {
  it('sign → open round-trips every field and checks the signer', async () => {
    const { key, id } = await newKey();
    const record = buildRecord(id, supplierFields(1), { now: 1_000, ttlMs: 60_000, sequence: 7 });
    const signed = await signRecord(key, record);
    const opened = await openRecord(signed, { now: 2_000 });
    // No stake binding: the staking address it names counts for nothing (issue 13, attack 5).
    expect(opened.record).toEqual({ ...record, stakingAddress: '' });
    expect(opened.stake).toEqual({ bound: false, claimed: record.stakingAddress, reason: 'MISSING' });
    expect(decodeRecord(encodeRecord(record))).toEqual(record);
    // Bound by the staking key: every field round-trips, the binding too.
    const wallet = Wallet.createRandom();
    const statement = await makeStakeBinding(wallet, id, { chainId: 31337, stakeRegistry: Wallet.createRandom().address }, 3600, 1_000);
    const bound = buildRecord(id, { ...supplierFields(1), stakingAddress: wallet.address, stakeBinding: recordBinding(statement) }, { now: 1_000, ttlMs: 60_000, sequence: 8 });
    const openedBound = await openRecord(await signRecord(key, bound), { now: 2_000 });
    expect(openedBound.record).toEqual(bound);
    expect(openedBound.stake).toEqual({ bound: true, claimed: wallet.address });
    expect(capacityKeyString(id)).toBe(`/gpcap/${id}`);
    expect(peerIdFromCapacityKey(capacityKey(id))).toBe(id);
    expect(() => peerIdFromCapacityKey('/pk/abc')).toThrow(CapacityRecordError);
  });

  it('rejects forged, tampered, expired, oversized, malformed and misplaced records with a typed reason', async () => {
    const x = await newKey();
    const y = await newKey();
    const now = 10_000_000;
    const rec = buildRecord(x.id, supplierFields(2), { now, ttlMs: 60_000 });
    const reason = async (bytes: Uint8Array, opts: Parameters<typeof openRecord>[1] = {}): Promise<string> => {
      try {
        await openRecord(bytes, { now: now + 1, ...opts });
        return 'accepted';
      } catch (err) {
        expect(err).toBeInstanceOf(CapacityRecordError);
        return (err as CapacityRecordError).reason;
      }
    };
    // X's record signed with Y's key (Y's public key attached)
    expect(await reason(await signRecordBytes(y.key, encodeRecord(rec)))).toBe('PEER_MISMATCH');
    // X's public key attached, Y's signature
    const ySigned = SignedType.decode(await signRecordBytes(y.key, encodeRecord(rec))) as unknown as { signature: Uint8Array };
    const spoofed = SignedType.encode(SignedType.fromObject({ record: encodeRecord(rec), publicKey: publicKeyToProtobuf(x.key.publicKey), signature: ySigned.signature })).finish();
    expect(await reason(spoofed)).toBe('BAD_SIGNATURE');
    // record bytes changed after signing
    const good = SignedType.decode(await signRecord(x.key, rec)) as unknown as { record: Uint8Array; publicKey: Uint8Array; signature: Uint8Array };
    const tampered = SignedType.encode(SignedType.fromObject({ ...good, record: encodeRecord({ ...rec, pricePerGflop: '1' }) })).finish();
    expect(await reason(tampered)).toBe('BAD_SIGNATURE');
    // signRecord refuses to sign for someone else
    await expect(signRecord(y.key, rec)).rejects.toMatchObject({ reason: 'PEER_MISMATCH' });
    const signed = await signRecord(x.key, rec);
    expect(await reason(signed)).toBe('accepted');
    expect(await reason(signed, { now: rec.expiresAtMs })).toBe('EXPIRED');
    expect(await reason(signed, { now: rec.expiresAtMs + 1, allowExpired: true })).toBe('accepted');
    expect(await reason(signed, { expectedPeerId: y.id })).toBe('KEY_MISMATCH');
    expect(await reason(signed, { now: now - 3_600_000 })).toBe('NOT_YET_VALID');
    const forever = await signRecordBytes(x.key, encodeRecord({ ...rec, expiresAtMs: now + 48 * 3_600_000 }));
    expect(await reason(forever)).toBe('BAD_LIFETIME');
    const big = await signRecordBytes(x.key, encodeRecord({ ...rec, addrs: Array.from({ length: 800 }, (_, i) => `/ip4/10.0.0.${i % 250}/tcp/${4000 + i}`) }));
    expect(big.byteLength).toBeGreaterThan(MAX_SIGNED_RECORD_BYTES);
    expect(await reason(big)).toBe('OVERSIZED');
    await expect(signRecord(x.key, { ...rec, addrs: Array.from({ length: 800 }, (_, i) => `/ip4/10.0.0.${i % 250}/tcp/${4000 + i}`) })).rejects.toMatchObject({ reason: 'OVERSIZED' });
    expect(await reason(new Uint8Array([0xff, 0xff, 0xff]))).toBe('MALFORMED');
    expect(await reason(new Uint8Array(0))).toBe('MALFORMED');
    const noPeer = await signRecordBytes(x.key, encodeRecord({ ...rec, peerId: '' }));
    expect(await reason(noPeer)).toBe('MALFORMED');
  });

  it('the DHT validator rejects by key, and the selector picks the newest (issued_at, then sequence)', async () => {
    const x = await newKey();
    const validate = capacityValidator({ now: () => 5_000 });
    const mk = (issued: number, seq: number): Promise<Uint8Array> => signRecord(x.key, buildRecord(x.id, {}, { now: issued, ttlMs: 60_000, sequence: seq }));
    const a = await mk(1_000, 9);
    const b = await mk(2_000, 1);
    const c = await mk(2_000, 2);
    await expect(validate(capacityKey(x.id), c)).resolves.toBeUndefined();
    await expect(validate(capacityKey((await newKey()).id), c)).rejects.toMatchObject({ reason: 'KEY_MISMATCH' });
    expect(await capacitySelector(capacityKey(x.id), [a, b, c])).toBe(2);
    expect(await capacitySelector(capacityKey(x.id), [c, a, b])).toBe(0);
    expect(await capacitySelector(capacityKey(x.id), [new Uint8Array([1, 2, 3]), a])).toBe(1);
    expect(compareRecords({ issuedAtMs: 1, sequence: 5 }, { issuedAtMs: 2, sequence: 0 })).toBeLessThan(0);
  });
});

describe('capacity records in a 6-node DHT on loopback', () => {
  let swarm: Swarm;
  let hosts: GridHost[];
  const publishers: CapacityPublisher[] = [];
  const extra: GridHost[] = [];

  beforeAll(async () => {
    swarm = await startSwarm(6);
    hosts = swarm.hosts;
    const t0 = Date.now();
    for (const [i, h] of hosts.entries()) publishers.push(new CapacityPublisher(h, { fields: supplierFields(i) }));
    const results = await Promise.all(publishers.map((p) => p.start()));
    for (const r of results) expect(r.ok).toBe(true);
    console.info(`[capacity.test] 6 hosts started in ${swarm.startedAfterMs} ms, routing tables full after ${swarm.convergedAfterMs} ms; 6 records published + provided in ${Date.now() - t0} ms; ` +
      `stored by ${results.map((r) => r.accepted.length).join('/')} peers`);
  });

  afterAll(async () => {
    for (const p of publishers) p.stop();
    await Promise.allSettled(extra.map((h) => h.stop()));
    await stopSwarm(swarm);
  });

  it('every node sees every node\'s verified capacity record', async () => {
    const ids = hosts.map((h) => h.peerId.toString()).sort();
    const t0 = Date.now();
    const seen = await Promise.all(hosts.map((h) => findAllRecords(h)));
    console.info(`[capacity.test] findAllRecords on 6 nodes (in parallel) took ${Date.now() - t0} ms`);
    for (const records of seen) {
      expect(records.map((r) => r.peerId)).toEqual(ids);
      for (const r of records) {
        const i = hosts.findIndex((h) => h.peerId.toString() === r.peerId);
        expect(r.pricePerGflop).toBe(String(1000 + i));
        expect(r.fragments[0].cid).toBe(`bafkfragment${i}`);
        expect(r.hardware?.gpus[0].name).toBe('NVIDIA GeForce RTX 4090');
        expect(r.addrs.length).toBeGreaterThan(0);
        expect(r.addrs.every((a) => a.startsWith('/ip4/127.0.0.1/tcp/'))).toBe(true);
        expect(r.withdrawn).toBe(false);
      }
    }
    expect(SUPPLIERS_CID.toString()).toMatch(/^bafkrei/);
    for (const h of hosts) expect(await counter(h, 'gridpipe_capacity_records_published_total')).toBeGreaterThanOrEqual(1);
  });

  it('a forged record (X\'s record signed by Y) is refused by every other node\'s validator and never returned', async () => {
    const [, x, y, via] = hosts;
    const genuine = await findRecord(hosts[0], x.peerId);
    const forged = await signRecordBytes(y.privateKey, encodeRecord(buildRecord(x.peerId, { ...supplierFields(1), pricePerGflop: '999999' }, { sequence: 1_000 })));
    const before = await Promise.all(hosts.map((h) => rejectedCount(h, 'PEER_MISMATCH')));
    const put = await rawPut(via, capacityKey(x.peerId), forged);
    expect(put.sent.size).toBe(5);
    expect(put.stored.size).toBe(0);
    expect(put.refused).toEqual(put.sent);
    const after = await Promise.all(hosts.map((h) => rejectedCount(h, 'PEER_MISMATCH')));
    hosts.forEach((h, i) => { if (h !== via) expect(after[i]).toBeGreaterThan(before[i]); });
    // publishRecord checks before it sends anything
    await expect(publishRecord(via, forged)).rejects.toMatchObject({ reason: 'PEER_MISMATCH' });
    for (const h of hosts) {
      const seen = await findRecord(h, x.peerId);
      expect(seen?.pricePerGflop).toBe('1001');
      expect(seen?.sequence).toBe(genuine?.sequence);
    }
    // X's public key with Y's signature: refused too
    const rec = encodeRecord(buildRecord(x.peerId, { pricePerGflop: '5' }, { sequence: 2_000 }));
    const ySig = SignedType.decode(await signRecordBytes(y.privateKey, rec)) as unknown as { signature: Uint8Array };
    const spoofed = SignedType.encode(SignedType.fromObject({ record: rec, publicKey: publicKeyToProtobuf(x.privateKey.publicKey), signature: ySig.signature })).finish();
    const put2 = await rawPut(via, capacityKey(x.peerId), spoofed);
    expect(put2.stored.size).toBe(0);
    expect(put2.refused.size).toBe(5);
    for (const h of hosts) expect((await findRecord(h, x.peerId))?.pricePerGflop).toBe('1001');
  });

  it('an expired record is refused by every other node and not returned by any', async () => {
    const z = await newKey();
    const via = hosts[2];
    const now = Date.now();
    const expired = await signRecord(z.key, buildRecord(z.id, supplierFields(9), { now: now - 2 * 3_600_000, ttlMs: 3_600_000 }));
    await expect(openRecord(expired)).rejects.toMatchObject({ reason: 'EXPIRED' });
    const before = await Promise.all(hosts.map((h) => rejectedCount(h, 'EXPIRED')));
    const put = await rawPut(via, capacityKey(z.id), expired);
    expect(put.sent.size).toBe(5);
    expect(put.stored.size).toBe(0);
    expect(put.refused.size).toBe(5);
    const after = await Promise.all(hosts.map((h) => rejectedCount(h, 'EXPIRED')));
    hosts.forEach((h, i) => { if (h !== via) expect(after[i]).toBeGreaterThan(before[i]); });
    // `via` stored it locally (kad-dht's put does not validate locally) and serves it; every reader drops it
    for (const h of hosts) expect(await findRecord(h, z.id)).toBeUndefined();
    // the same record while still valid is accepted everywhere (the refusal was about expiry)
    const fresh = await signRecord(z.key, buildRecord(z.id, supplierFields(9), { ttlMs: 60_000 }));
    const put2 = await rawPut(via, capacityKey(z.id), fresh);
    expect(put2.stored.size).toBe(5);
    for (const h of hosts) expect((await findRecord(h, z.id))?.pricePerGflop).toBe('1009');
  });

  it('the selector keeps the newest when nodes hold different versions, and stale holders get corrected', async () => {
    const s = await newKey();
    const older = buildRecord(s.id, { pricePerGflop: '1' }, { sequence: 1 });
    const newer = buildRecord(s.id, { pricePerGflop: '2' }, { now: older.issuedAtMs, sequence: 2 }); // same ms: sequence decides
    // a node that is not connected yet stores the older version (its put reaches nobody)
    const stale = await createGridHost({ network: 'local', logger: testLogger() });
    extra.push(stale);
    const lonely = await publishRecord(stale, await signRecord(s.key, older), { timeoutMs: 300 });
    expect(lonely.ok).toBe(false);
    expect(lonely.accepted).toEqual([]);
    expect(lonely.error).toBe('timed out');
    expect(await counter(stale, 'gridpipe_capacity_publish_failures_total', { reason: 'timeout' })).toBe(1);
    // the swarm gets the newer version
    const pub = await publishRecord(hosts[0], await signRecord(s.key, newer));
    expect(pub.ok).toBe(true);
    expect(pub.accepted.length).toBe(5);
    // the stale node joins
    await stale.node.dial(hosts[1].node.getMultiaddrs()[0]);
    await waitFor(() => hosts.every((h) => h.routingTableSize() >= 6), 'the stale node in every routing table');
    const staleId = stale.peerId.toString();
    const answers = async (): Promise<{ staleAnswer?: string; final?: string }> => {
      let staleAnswer: string | undefined;
      let final: string | undefined;
      for await (const e of hosts[3].node.services.dht.get(capacityKey(s.id), { signal: AbortSignal.timeout(20_000) })) {
        if (e.name === 'PEER_RESPONSE' && e.messageName === 'GET_VALUE' && e.record && e.from.toString() === staleId) {
          staleAnswer = (await openRecord(e.record.value)).record.pricePerGflop;
        }
        if (e.name === 'VALUE') final = (await openRecord(e.value)).record.pricePerGflop;
      }
      return { staleAnswer, final };
    };
    const first = await answers();
    expect(first).toEqual({ staleAnswer: '1', final: '2' }); // two versions out there; kad-dht's selector chose ours
    expect((await findRecord(hosts[4], s.id))?.pricePerGflop).toBe('2');
    expect((await findRecord(stale, s.id))?.pricePerGflop).toBe('2');
    const second = await answers();
    expect(second).toEqual({ staleAnswer: '2', final: '2' }); // the stale holder was corrected
  });

  it('republishing keeps a record alive past its first expiry', async () => {
    const late = await createGridHost({ network: 'local', logger: testLogger(), bootstrap: hosts[0].addresses() });
    extra.push(late);
    await waitFor(() => late.routingTableSize() >= 6, 'the late node to fill its routing table');
    const publisher = new CapacityPublisher(late, { fields: supplierFields(7), ttlMs: 3_000 }); // republish every 1.5 s
    publishers.push(publisher);
    const first = await publisher.start();
    expect(first.ok).toBe(true);
    const firstRecord = first.record;
    expect(firstRecord.expiresAtMs - firstRecord.issuedAtMs).toBe(3_000);
    await waitFor(() => Date.now() > firstRecord.expiresAtMs + 300, 'the first record to expire', 10_000, 50);
    await expect(openRecord(await signRecord(late.privateKey, firstRecord))).rejects.toMatchObject({ reason: 'EXPIRED' });
    const seen = await findRecord(hosts[2], late.peerId);
    expect(seen).toBeDefined();
    expect(seen!.sequence).toBeGreaterThan(firstRecord.sequence);
    expect(seen!.expiresAtMs).toBeGreaterThan(Date.now());
    expect(await counter(late, 'gridpipe_capacity_records_published_total')).toBeGreaterThanOrEqual(2);
    const all = await findAllRecords(hosts[5]);
    expect(all.map((r) => r.peerId)).toContain(late.peerId.toString());
    publisher.stop();
  });

  it('unpublish on stop: a tombstone hides the supplier from every node at once', async () => {
    const leaving = hosts[5];
    const id = leaving.peerId.toString();
    const publisher = publishers[5];
    const last = publisher.current!;
    const result = await publisher.unpublish();
    expect(result.ok).toBe(true);
    expect(result.record.withdrawn).toBe(true);
    expect(result.record.issuedAtMs).toBeGreaterThan(last.issuedAtMs);
    expect(result.record.expiresAtMs).toBeGreaterThanOrEqual(last.expiresAtMs); // outlives every earlier copy
    expect(publisher.isRunning).toBe(false);
    for (const h of hosts) {
      expect(await findRecord(h, id)).toBeUndefined();
      expect((await findRecord(h, id, { includeWithdrawn: true }))?.withdrawn).toBe(true);
    }
    await leaving.stop();
    const remaining = hosts.slice(0, 5);
    for (const h of remaining) {
      const records = await findAllRecords(h);
      expect(records.map((r) => r.peerId)).not.toContain(id);
      for (const other of remaining) expect(records.map((r) => r.peerId)).toContain(other.peerId.toString());
    }
  });
});
