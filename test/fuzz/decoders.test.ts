/**
 * Issue 21: a fast-check fuzzer for every protocol decoder, in process: the exec protocol (scan + protobufjs
 * decode + the conversions the server and the client apply), the blob protocol, signed capacity records and
 * their DHT keys, vouchers as they arrive in a step, and supplier receipts. Each gets valid messages, mutated
 * ones and raw bytes; each must return or throw a GridpipeError that names what was wrong, and its heap
 * after the run must not have grown beyond a small bound. The normal test run uses a fixed seed and a few
 * hundred inputs per decoder; `npm run fuzz` runs 10,000.
 */
import '../../net/polyfill.js';
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Wallet } from 'ethers';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Ed25519PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { bitsPerElement } from '../../fragments/onnx/dtype.js';
import {
  VoucherType, encodeStepRequestFrame, encodeVoucher, fromDecodedSampling,
  fromDecodedVoucher, toWireTensor, type DecodedRequest, type DecodedResponse,
} from '../../net/exec/codec.js';
import { scanResponse } from '../../net/exec/scan.js';
import { decodeRequestFrame, decodeScannedResponse } from '../../net/exec/decode.js';
import { voucherFromWire } from '../../net/exec/voucher-wire.js';
import { ExecError } from '../../net/exec/errors.js';
import { decodeBlobRequest, decodeBlobResponse, encodeBlobRequest, encodeChunkFrame, encodeErrorResponse } from '../../net/store/blob-codec.js';
import {
  buildRecord, capacityKeyString, decodeRecord, openRecord, peekRecord, peerIdFromCapacityKey, signRecord, signRecordBytes, encodeRecord,
  type CapacityRecord,
} from '../../net/capacity/record.js';
import { ReceiptSigner, decodeSignedReceipt } from '../../node/payments/receipts.js';
import type { WireTensor } from '../../proto/wire.js';
import { address, payload, replyFrame, requestFrame, stepRequest, wireVoucher } from './arbitraries.js';
import { FUZZ_RUNS, LONG_RUN, Outcomes, decodedOrClearError, expectDecodedOrClearError, fuzzParameters, heapAfterCollection, hostileBytes, outcomeCounts, reportFuzz } from './harness.js';

const TIMEOUT = LONG_RUN ? 1_800_000 : 120_000;
/** Heap a decoder's whole run may leave behind (a leak of one small object per input would exceed it at 10,000). */
const HEAP_GROWTH_LIMIT = 24 * 1024 * 1024;

// ---------------------------------------------------------------------------------------- what each side does

/** Everything the exec server does with a frame before it runs a step (node/exec/protocol.ts). */
function serverDecode(bytes: Uint8Array): DecodedRequest {
  const req = decodeRequestFrame(bytes);
  if (req.step) {
    const inputs = (req.step.inputs ?? []).map(toWireTensor);
    const replay = (req.step.replay ?? []).flatMap((c) => (c.inputs ?? []).map(toWireTensor));
    for (const t of [...inputs, ...replay]) expectConsistentTensor(t);
    if (req.step.sample) fromDecodedSampling(req.step.sample);
    if (req.step.voucher) voucherFromWire(fromDecodedVoucher(req.step.voucher));
  }
  if (req.open?.voucher) voucherFromWire(fromDecodedVoucher(req.open.voucher));
  return req;
}

/** Everything the exec client does with a reply frame (net/exec/client.ts). */
function clientDecode(bytes: Uint8Array): DecodedResponse {
  scanResponse(bytes);
  const r = decodeScannedResponse(bytes);
  if (r.step) {
    for (const t of (r.step.outputs ?? []).map(toWireTensor)) expectConsistentTensor(t);
    for (const c of r.step.replayOutputs ?? []) for (const t of (c.inputs ?? []).map(toWireTensor)) expectConsistentTensor(t);
  }
  return r;
}

/** A tensor that passed the scan: its dims and dtype account for its bytes exactly (no later overrun). */
function expectConsistentTensor(t: WireTensor): void {
  const bits = bitsPerElement(t.dtype);
  expect(bits, `dtype ${t.dtype} passed the scan`).toBeTruthy();
  expect(t.dims.length).toBeLessThanOrEqual(8);
  const elements = t.dims.reduce((a, b) => a * b, 1);
  expect(Math.ceil((bits! * elements) / 8)).toBe(t.data.byteLength);
}

/** Runs `body` over FUZZ_RUNS inputs and checks the heap left behind; logs what was found. */
async function fuzzTarget<T>(name: string, inputs: fc.Arbitrary<T>, body: (input: T, outcomes: Outcomes) => Promise<void> | void): Promise<Outcomes> {
  const outcomes = new Outcomes();
  const before = heapAfterCollection();
  await fc.assert(fc.asyncProperty(inputs, async (input) => { await body(input, outcomes); }), fuzzParameters());
  const growth = heapAfterCollection() - before;
  console.log(`fuzz ${name}: ${outcomes.total()} inputs (${outcomes}); heap growth ${(growth / 1024 / 1024).toFixed(1)} MiB`);
  reportFuzz({ target: `decoder: ${name}`, inputs: outcomes.total(), outcomes: outcomeCounts(outcomes), heapGrowthMiB: Math.round(growth / 1024 / 1024 * 100) / 100 });
  expect(growth, `${name}: heap left behind after ${outcomes.total()} inputs`).toBeLessThan(HEAP_GROWTH_LIMIT);
  expect(outcomes.total()).toBeGreaterThanOrEqual(FUZZ_RUNS);
  expect(outcomes.refused(), `${name}: the inputs reach the decoder's checks`).toBeGreaterThan(0);
  return outcomes;
}

describe('exec protocol decoders (net/exec/scan.ts, codec.ts, voucher-wire.ts)', () => {
  it('a server decoding hostile request frames returns a request or an ExecError naming the problem', async () => {
    await fuzzTarget('exec request', hostileBytes(requestFrame), (bytes, outcomes) => {
      outcomes.add(decodedOrClearError(() => serverDecode(bytes)));
    });
  }, TIMEOUT);

  it('a client decoding hostile reply frames returns a reply or an ExecError naming the problem', async () => {
    await fuzzTarget('exec reply', hostileBytes(replyFrame), (bytes, outcomes) => {
      outcomes.add(decodedOrClearError(() => clientDecode(bytes)));
    });
  }, TIMEOUT);

  it('valid step frames decode to what was encoded', () => {
    fc.assert(fc.property(stepRequest, (s) => {
      const req = serverDecode(payload(encodeStepRequestFrame({ ...s, sample: undefined, voucher: undefined })));
      expect(req.step!.sessionId).toBe(s.sessionId);
      expect(req.step!.inputs.map(toWireTensor).map((t) => [t.name, t.dtype, t.dims])).toEqual(s.inputs.map((t) => [t.name, t.dtype, t.dims]));
      expect(req.step!.chunkTokens).toEqual(s.chunkTokens);
    }), fuzzParameters(Math.min(FUZZ_RUNS, 500)));
  });

  it('vouchers from a step, as objects and as Voucher bytes, convert or fail with BAD_REQUEST', async () => {
    await fuzzTarget('voucher', wireVoucher, (v, outcomes) => {
      const outcome = decodedOrClearError(() => voucherFromWire(v), ['BAD_REQUEST']);
      outcomes.add(outcome);
      if (outcome.ok) {
        expect(outcome.value.cumulativeAmount).toBe(BigInt(v.cumulativeAmount));
        expect(outcome.value.cumulativeAmount < (1n << 256n) || v.cumulativeAmount.length > 77).toBe(true);
      }
    });
    await fuzzTarget('voucher bytes', hostileBytes(wireVoucher.map(encodeVoucher)), (bytes, outcomes) => {
      outcomes.add(decodedOrClearError(() => {
        let decoded;
        try {
          decoded = VoucherType.decode(bytes);
        } catch (err) {
          // what the server does with a Step whose voucher field does not decode: the whole frame is malformed
          throw new ExecError('BAD_REQUEST', `malformed frame: ${(err as Error).message}`);
        }
        return voucherFromWire(fromDecodedVoucher(decoded as never));
      }, ['BAD_REQUEST']));
    });
  }, TIMEOUT);
});

describe('blob protocol decoders (net/store/blob-codec.ts)', () => {
  const blobRequest = fc.record({ cid: fc.string({ maxLength: 80 }), offset: fc.nat(), maxChunk: fc.nat() }).map(encodeBlobRequest);
  const blobResponse = fc.oneof(
    fc.record({ cid: fc.string({ maxLength: 80 }), offset: fc.nat(), data: fc.uint8Array({ maxLength: 64 }), totalSize: fc.nat(), last: fc.boolean() })
      .map((c) => payload(encodeChunkFrame(c).subarray())),
    fc.record({ code: fc.constantFrom('BAD_REQUEST', 'TOO_LARGE', 'NOT_FOUND', 'BUSY', 'INTERNAL' as const), message: fc.string({ maxLength: 60 }) })
      .map(({ code, message }) => encodeErrorResponse(code, message)),
  );

  it('hostile BlobRequest bytes decode to a usable request or MalformedMessageError', async () => {
    await fuzzTarget('blob request', hostileBytes(blobRequest), (bytes, outcomes) => {
      const outcome = decodedOrClearError(() => decodeBlobRequest(bytes), ['MALFORMED_MESSAGE']);
      outcomes.add(outcome);
      if (outcome.ok) expect(Number.isSafeInteger(outcome.value.offset) && outcome.value.offset >= 0).toBe(true);
    });
  }, TIMEOUT);

  it('hostile BlobResponse bytes decode to a chunk, an error or MalformedMessageError', async () => {
    await fuzzTarget('blob response', hostileBytes(blobResponse), (bytes, outcomes) => {
      const outcome = decodedOrClearError(() => decodeBlobResponse(bytes), ['MALFORMED_MESSAGE']);
      outcomes.add(outcome);
      if (outcome.ok && outcome.value.chunk) {
        expect(Number.isSafeInteger(outcome.value.chunk.totalSize) && outcome.value.chunk.totalSize >= 0).toBe(true);
      }
    });
  }, TIMEOUT);
});

describe('capacity records (net/capacity/record.ts)', () => {
  const NOW = 1_800_000_000_000;
  let key: Ed25519PrivateKey;
  let peerId: string;
  const signedPool: Uint8Array[] = [];

  const fields = fc.record({
    addrs: fc.array(fc.string({ maxLength: 40 }), { maxLength: 3 }),
    pricePerGflop: fc.oneof(fc.nat().map(String), fc.string({ maxLength: 12 })),
    stakingAddress: fc.oneof(address, fc.constant('')),
    fragments: fc.array(fc.record({
      cid: fc.string({ maxLength: 60 }), manifestCid: fc.string({ maxLength: 60 }), index: fc.nat({ max: 100 }),
      stepsPerSecond: fc.double({ noNaN: true, min: 0, max: 1e6 }), load: fc.double({ noNaN: true, min: 0, max: 1 }), activeSessions: fc.nat({ max: 1000 }),
    }), { maxLength: 3 }),
    softwareVersion: fc.string({ maxLength: 12 }),
    withdrawn: fc.boolean(),
  });

  beforeAll(async () => {
    key = await generateKeyPair('Ed25519');
    peerId = peerIdFromPrivateKey(key).toString();
    const samples = fc.sample(fc.tuple(fields, fc.integer({ min: -600_000, max: 600_000 }), fc.integer({ min: 1, max: 3_600_000 })), { seed: 21, numRuns: 24 });
    for (const [f, skew, ttl] of samples) signedPool.push(await signRecord(key, buildRecord(peerId, f, { now: NOW + skew, ttlMs: ttl })));
    // records whose signature is good but whose content is not: zero and negative lifetimes, a far future, another peer
    const raw = (r: Partial<CapacityRecord>): Uint8Array => encodeRecord({ ...buildRecord(peerId, {}, { now: NOW }), ...r } as CapacityRecord);
    signedPool.push(await signRecordBytes(key, raw({ expiresAtMs: NOW })));
    signedPool.push(await signRecordBytes(key, raw({ issuedAtMs: NOW + 3_600_000, expiresAtMs: NOW + 3_700_000 })));
    signedPool.push(await signRecordBytes(key, raw({ peerId: '' })));
    signedPool.push(await signRecordBytes(key, raw({ peerId: '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq' })));
  });

  it('hostile signed records open as a valid record or fail with a CapacityRecordError', async () => {
    await fuzzTarget('capacity record', hostileBytes(fc.constantFrom(...signedPool)), async (bytes, outcomes) => {
      const outcome = await expectDecodedOrClearError(() => openRecord(bytes, { now: NOW }));
      outcomes.add(outcome);
      if (outcome.ok) {
        const r = outcome.value.record;
        expect(r.peerId).toBe(peerId);
        expect(r.expiresAtMs).toBeGreaterThan(r.issuedAtMs);
        expect(r.expiresAtMs).toBeGreaterThan(NOW);
      }
      expect(() => peekRecord(bytes)).not.toThrow();
    });
  }, TIMEOUT);

  it('hostile record bytes decode or fail with MALFORMED', async () => {
    const recordBytes = fields.map((f) => encodeRecord(buildRecord(peerId, f, { now: NOW })));
    await fuzzTarget('capacity record body', hostileBytes(recordBytes), (bytes, outcomes) => {
      outcomes.add(decodedOrClearError(() => decodeRecord(bytes), ['MALFORMED']));
    });
  }, TIMEOUT);

  it('DHT keys name a peer or fail with KEY_MISMATCH', async () => {
    const keys = fc.oneof(
      fc.constant(capacityKeyString(peerId)),
      fc.string({ maxLength: 80 }),
      fc.tuple(fc.constantFrom('', '/', '/gpcap', '/gpcap/', 'gpcap/', '/ipns/'), fc.string({ maxLength: 60 }), fc.constantFrom('', '/', '/x')).map(([a, b, c]) => a + b + c),
    );
    await fuzzTarget('capacity key', fc.oneof(keys, keys.map((k) => new TextEncoder().encode(k)), fc.uint8Array({ maxLength: 80 })), (k, outcomes) => {
      const outcome = decodedOrClearError(() => peerIdFromCapacityKey(k), ['KEY_MISMATCH']);
      outcomes.add(outcome);
      if (outcome.ok) expect(capacityKeyString(outcome.value)).toBe(typeof k === 'string' ? k : new TextDecoder().decode(k));
    });
  }, TIMEOUT);
});

describe('receipts (node/payments/receipts.ts)', () => {
  const pool: Uint8Array[] = [];
  let supplier: string;

  beforeAll(async () => {
    const wallet = Wallet.createRandom();
    supplier = wallet.address;
    const signer = new ReceiptSigner(wallet as unknown as Wallet, '0x' + '5'.repeat(40), 31337, () => 1_800_000_000);
    for (let i = 0; i < 8; i++) {
      const t: WireTensor = { name: `t${i}`, dtype: 1, dims: [1, i], data: new Uint8Array(4 * i) };
      pool.push((await signer.sign({ cids: ['bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'], sessionId: `s${i}`, step: BigInt(i), inputs: [t], outputs: [t] })).encoded);
    }
  });

  it('hostile SignedReceipt bytes decode to a well-formed receipt or MALFORMED_RECEIPT', async () => {
    await fuzzTarget('receipt', hostileBytes(fc.constantFrom(...pool)), (bytes, outcomes) => {
      const outcome = decodedOrClearError(() => decodeSignedReceipt(bytes), ['MALFORMED_RECEIPT']);
      outcomes.add(outcome);
      if (outcome.ok) {
        const { receipt, signature } = outcome.value;
        for (const h of [receipt.fragmentCid, receipt.inputHash, receipt.outputHash, receipt.sessionId]) expect(h).toMatch(/^0x[0-9a-f]{64}$/);
        expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
        expect(receipt.supplier).toMatch(/^0x[0-9a-fA-F]{40}$/);
        expect(receipt.step >= 0n && receipt.issuedAt >= 0n).toBe(true);
      }
    });
    expect(supplier).toMatch(/^0x/);
  }, TIMEOUT);
});
