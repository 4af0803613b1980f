/**
 * Suppliers advertise what they run: a signed capacity record carries its quantization schemes and wire encodings
 * and reads back with them.
 */
import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { buildRecord, fieldsFromProbe, openRecord, signRecord, SUPPLIER_SCHEMES, type ProbeLike } from '../../net/capacity/record.js';

const probe: ProbeLike = {
  gpus: [], cpuCores: 2, cpuModel: 'Test CPU', memoryTotalBytes: 2 ** 33, memoryFreeBytes: 2 ** 32, executionProviders: ['cpu'], platform: 'linux-x64',
  benchmark: { matmulGflops: 10, executionProvider: 'cpu', measuredAtMs: 1_700_000_000_000 }, softwareVersion: '0.1.0',
};

describe('suppliers advertise the schemes they run', () => {
  it('a signed capacity record carries the quantization schemes and wire encodings, and reads back with them', async () => {
    const key = await generateKeyPair('Ed25519');
    const peer = peerIdFromPrivateKey(key);
    expect(SUPPLIER_SCHEMES).toEqual(['int8', 'int4', 'wire-fp16', 'wire-int8']);
    const { record } = await openRecord(await signRecord(key, buildRecord(peer, fieldsFromProbe(probe))));
    expect(record.schemes).toEqual(SUPPLIER_SCHEMES);
    // A record from a supplier that says nothing about schemes reads back without them (full precision only).
    const { schemes: _omit, ...older } = fieldsFromProbe(probe);
    void _omit;
    const opened = await openRecord(await signRecord(key, buildRecord(peer, older)));
    expect(opened.record.schemes).toBeUndefined();
  });
});
