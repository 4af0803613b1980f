/**
 * Issue 21, disputes through the contracts on a real anvil: evidence is checked against the supplier's signed
 * receipt on chain (fileDispute), and the arbiter service (gateway/verify/arbiter.ts) re-runs it with real
 * onnxruntime and rules. A proven cheater is slashed and the challenger paid; a forged dispute (evidence that
 * does not hash to the receipt, digests within the tolerance, no evidence, a context naming another span)
 * cannot slash an honest supplier.
 *
 * The re-run here is a host of the fragment in this process (onnxruntime on the fragment's file), the same
 * computation a grid host runs; test/verify/disputes.test.ts does it with real supplier processes.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { toUtf8Bytes, Wallet } from 'ethers';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { cidOfFile } from '../../fragments/cid.js';
import { ReceiptSigner, RunningDigest } from '../../node/payments/receipts.js';
import { ortToWire } from '../../net/exec/tensors.js';
import type { TensorMap } from '../../net/exec/client.js';
import { ByteCollector, committedDigests, readDigestStream, writeDigestStream, writeTensorStream } from '../../policy/receipt-commitment.js';
import { Arbiter, type DisputeRerunner } from '../../gateway/verify/arbiter.js';
import { spanDigest } from '../../contracts/eip712.js';
import type { DisputeContext } from '../../gateway/verify/dispute-evidence.js';
import { actingAs, createProvider, DisputeStatus } from '../../contracts/index.js';
import { DisputeFiler } from '../../gateway/verify/dispute-filer.js';
import type { Receipt } from '../../contracts/eip712.js';
import { CHALLENGE_WINDOW, DISPUTE_BOND, REWARD_BPS, SLASH_AMOUNT, eventsOf, expectRevert, mined, randomHash, setupChain, type Chain } from '../contracts/helpers.js';
import { gptInputs, int64 } from '../helpers/decoder-inputs.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
let chain: Chain;
let supplier: Wallet;
let challenger: Wallet;
let session: ort.InferenceSession;
let cid: string;
const TOKENS = [[5, 17, 3, 9], [21], [8]];

/** A host of the fragment: onnxruntime on its file, every chunk on the inputs as given. */
class LocalHost implements DisputeRerunner {
  runs = 0;
  async spanCids(): Promise<string[]> { return [cid]; }
  async rerun(_c: DisputeContext, chunks: { position: number; inputs: TensorMap }[]): Promise<TensorMap[][]> {
    this.runs++;
    return [await runChunks(chunks.map((c) => c.inputs))];
  }
}

async function runChunks(inputs: TensorMap[]): Promise<TensorMap[]> {
  const out: TensorMap[] = [];
  for (const feeds of inputs) out.push(await session.run(feeds) as TensorMap);
  return out;
}

/** Chunk inputs: the whole prefix each time (the model has no KV cache), positions as a KV session would count. */
function chunkInputs(): TensorMap[] {
  const all: number[] = [];
  return TOKENS.map((t) => {
    all.push(...t);
    return gptInputs(all, 0);
  });
}

/** Outputs with 1 % noise (the "noise" cheat), seeded. */
function perturbed(outputs: TensorMap[]): TensorMap[] {
  let s = 7;
  const rnd = (): number => { s = (s * 1103515245 + 12345) % 2 ** 31; return s / 2 ** 31 - 0.5; };
  return outputs.map((o) => Object.fromEntries(Object.entries(o).map(([name, t]) => {
    if (t.type !== 'float32') return [name, t];
    const d = Float32Array.from(t.data as Float32Array, (v) => v + 0.02 * rnd() * Math.abs(v));
    return [name, new ort.Tensor('float32', d, t.dims.slice())];
  })));
}

const tensorStream = (maps: TensorMap[]): Uint8Array => {
  const c = new ByteCollector();
  for (const m of maps) writeTensorStream(c, Object.entries(m).map(([n, t]) => ortToWire(n, t)));
  return c.bytes();
};
const digestStream = (maps: TensorMap[]): Uint8Array => {
  const c = new ByteCollector();
  for (const m of maps) writeDigestStream(c, committedDigests(Object.entries(m).map(([n, t]) => ortToWire(n, t))));
  return c.bytes();
};

/** What the supplier signs after serving `outputs` for the chunks, with the real signer of `gridpipe supply`. */
async function signed(inputs: TensorMap[], outputs: TensorMap[]): Promise<{ receipt: Receipt; signature: string }> {
  const running = new RunningDigest();
  inputs.forEach((m, i) => running.add(Object.entries(m).map(([n, t]) => ortToWire(n, t)), Object.entries(outputs[i]).map(([n, t]) => ortToWire(n, t))));
  // Dated by the chain's clock (snapshots rewind it), so the window holds whatever the wall clock says.
  const now = Number(await chain.now());
  const signer = new ReceiptSigner(supplier, chain.config.disputeManager!, chain.chainId, () => now);
  const { receipt, signature } = await signer.sign({ cids: [cid], sessionId: 'session-1', step: BigInt(inputs.length), inputs: running.current() });
  return { receipt, signature };
}

function context(inputs: TensorMap[], outputs: TensorMap[], over: Partial<DisputeContext> = {}): DisputeContext {
  let position = 0;
  return {
    manifestCid: 'bafy-test', start: 0, end: 1, maxLength: 64,
    chunks: inputs.map((m, i) => {
      const c = { position, tensors: Object.keys(m).length, outputs: committedDigests(Object.entries(outputs[i]).map(([n, t]) => ortToWire(n, t))).length };
      position += TOKENS[i].length;
      return c;
    }),
    want: Object.keys(outputs[0]), reduction: {}, ...over,
  };
}

const dm = (w?: Wallet) => (w ? chain.c.disputeManager.connect(w) : chain.c.disputeManager);
const stakeOf = async (a: string) => (await chain.c.stakeRegistry.stakeOf(a)).staked;
const bal = (a: string) => chain.c.token.balanceOf(a);

async function file(inputs: TensorMap[], served: TensorMap[], rerun: TensorMap[], ctx = context(inputs, served)): Promise<bigint> {
  const { receipt, signature } = await signed(inputs, served);
  const tx = await mined(dm(challenger).fileDispute(receipt, signature, tensorStream(inputs), digestStream(served), digestStream(rerun), toUtf8Bytes(JSON.stringify(ctx))));
  return eventsOf(tx, chain.c.disputeManager, 'DisputeOpened')[0].id as bigint;
}

beforeAll(async () => {
  const modelPath = path.join(tmp.dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, kvCache: false, seed: 21 }), modelPath);
  cid = await cidOfFile(modelPath);
  session = await ort.InferenceSession.create(modelPath);
  chain = await setupChain();
  [, supplier, challenger] = chain.wallets;
  await mined(chain.c.stakeRegistry.connect(supplier).stake(200n));
  await chain.checkpoint();
}, 120_000);
afterAll(async () => {
  await session?.release();
  await chain?.close();
  tmp.cleanup();
});
beforeEach(async () => {
  await chain.reset();
});

describe('fileDispute: evidence checked against the signed receipt on chain', () => {
  it('opens with evidence that hashes to the receipt, keeps its hash and emits it for the arbiter', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    const cheat = perturbed(honest);
    const { receipt, signature } = await signed(inputs, cheat);
    const ctx = toUtf8Bytes(JSON.stringify(context(inputs, cheat)));
    const tx = await mined(dm(challenger).fileDispute(receipt, signature, tensorStream(inputs), digestStream(cheat), digestStream(honest), ctx));
    const [ev] = eventsOf(tx, chain.c.disputeManager, 'DisputeEvidence');
    expect(ev.id).toBe(1n);
    expect(readDigestStream(Uint8Array.from(Buffer.from((ev.revealedDigests as string).slice(2), 'hex')))).toHaveLength(3);
    expect(await dm().evidenceHash(1n)).toMatch(/^0x(?!0{64})[0-9a-f]{64}$/);
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).freezes).toBe(1n);
  });

  it('refuses evidence that does not hash to the receipt (inputs or digests), and a re-run equal to the revealed digests', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    const { receipt, signature } = await signed(inputs, honest);
    const ctx = toUtf8Bytes('{}');
    const otherInputs = [{ ...inputs[0], input_ids: int64([5, 17, 3, 10], [1, 4]) }, ...inputs.slice(1)];
    await expectRevert(dm(challenger).fileDispute(receipt, signature, tensorStream(otherInputs), digestStream(honest), digestStream(perturbed(honest)), ctx), 'EvidenceMismatch');
    // The challenger's claim of what the supplier returned: not what it signed.
    await expectRevert(dm(challenger).fileDispute(receipt, signature, tensorStream(inputs), digestStream(perturbed(honest)), digestStream(honest), ctx), 'EvidenceMismatch');
    await expectRevert(dm(challenger).fileDispute(receipt, signature, tensorStream(inputs), digestStream(honest), digestStream(honest), ctx), 'NotContradicting');
    expect(await dm().disputeCount()).toBe(0n);
    expect(await stakeOf(supplier.address)).toBe(200n);
  });
});

describe('the arbiter service re-runs the evidence and resolves', () => {
  it('upholds against a supplier that served perturbed outputs: its stake is slashed, the challenger paid', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    const id = await file(inputs, perturbed(honest), honest);
    const host = new LocalHost();
    const arbiter = new Arbiter({ disputeManager: dm(chain.arbiter), rerunner: host, referees: 1 });
    const [c0, t0] = [await bal(challenger.address), await bal(chain.treasury.address)];
    const ruling = await arbiter.judge(id);
    expect(ruling.upheld, ruling.reason).toBe(true);
    expect(ruling.reason).toMatch(/overlap|mean-error|max-error/);
    expect(host.runs).toBe(1);
    const reward = (SLASH_AMOUNT * BigInt(REWARD_BPS)) / 10_000n;
    expect(await stakeOf(supplier.address)).toBe(200n - SLASH_AMOUNT);
    expect(await bal(challenger.address)).toBe(c0 + reward + DISPUTE_BOND);
    expect(await bal(chain.treasury.address)).toBe(t0 + SLASH_AMOUNT - reward);
    expect((await dm().getDispute(id)).status).toBe(BigInt(DisputeStatus.Upheld));
  });

  it('rejects a forged dispute against an honest supplier whose digests agree within the tolerance: nothing slashed, the bond to the supplier', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    // A "re-run" a hair off the honest outputs: another hash, so the contract takes it, but the same computation.
    const nudged = honest.map((o) => Object.fromEntries(Object.entries(o).map(([n, t]) => [n, new ort.Tensor('float32', Float32Array.from(t.data as Float32Array, (v) => v * (1 + 1e-6)), t.dims.slice())])));
    const id = await file(inputs, honest, nudged);
    const s0 = await bal(supplier.address);
    const ruling = await new Arbiter({ disputeManager: dm(chain.arbiter), rerunner: new LocalHost(), referees: 1 }).judge(id);
    expect(ruling).toEqual({ upheld: false, reason: 'the supplier\'s outputs agree with the re-run within the tolerance' });
    expect(await stakeOf(supplier.address)).toBe(200n);
    expect(await bal(supplier.address)).toBe(s0 + DISPUTE_BOND);
    expect((await chain.c.stakeRegistry.stakeOf(supplier.address)).freezes).toBe(0n);
    expect((await dm().getDispute(id)).status).toBe(BigInt(DisputeStatus.Rejected));
  });

  it('rejects a dispute without evidence, and one whose context names another span or other chunks', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    const cheat = perturbed(honest);
    const arbiter = new Arbiter({ disputeManager: dm(chain.arbiter), rerunner: new LocalHost(), referees: 1 });
    const { receipt, signature } = await signed(inputs, cheat);
    await mined(dm(challenger).openDispute(receipt, signature, randomHash()));
    expect(await arbiter.judge(1n)).toEqual({ upheld: false, reason: 'no evidence was filed with the dispute' });
    const other = new LocalHost();
    other.spanCids = async () => ['bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'];
    const id2 = await file(inputs, cheat, honest);
    expect(await new Arbiter({ disputeManager: dm(chain.arbiter), rerunner: other, referees: 1 }).judge(id2)).toEqual({ upheld: false, reason: 'the context names another span than the receipt' });
    const ctx = context(inputs, cheat);
    const id3 = await file(inputs, cheat, honest, { ...ctx, chunks: [{ ...ctx.chunks[0], tensors: 2 }, ...ctx.chunks.slice(1)] });
    expect((await arbiter.judge(id3)).reason).toBe('the input stream does not split into the context\'s chunks');
    expect(await stakeOf(supplier.address)).toBe(200n);
    expect(spanDigest([cid])).toBe(receipt.fragmentCid);
  });

  it('sweeps every open dispute once; the challenge window still bounds filing', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    await file(inputs, perturbed(honest), honest);
    const arbiter = new Arbiter({ disputeManager: dm(chain.arbiter), rerunner: new LocalHost(), referees: 1 });
    const swept = await arbiter.sweep();
    expect([...swept.keys()]).toEqual([1n]);
    expect((await arbiter.sweep()).size).toBe(0);
    const { receipt, signature } = await signed(inputs, perturbed(honest));
    await chain.increaseTime(CHALLENGE_WINDOW + 60);
    await expectRevert(dm(challenger).fileDispute(receipt, signature, tensorStream(inputs), digestStream(perturbed(honest)), digestStream(honest), toUtf8Bytes('{}')), 'ChallengeWindowClosed');
  });
});

describe('the dispute filer persists evidence before filing', () => {
  it('keeps a dispute pending while the chain is unreachable and files it, once, at the next start', async () => {
    const inputs = chunkInputs();
    const honest = await runChunks(inputs);
    const cheat = perturbed(honest);
    const { receipt, signature } = await signed(inputs, cheat);
    const evidence = { peerId: '12D3KooWtest', receipt, signature, inputs: tensorStream(inputs), revealedDigests: digestStream(cheat), rerunDigests: digestStream(honest), context: context(inputs, cheat) };
    const dir = path.join(tmp.dir, 'gateway-disputes');
    // The gateway's account behind an RPC URL nobody answers: the transaction cannot be sent.
    const dead = createProvider('http://127.0.0.1:9', chain.chainId);
    const offline = new DisputeFiler({ dir, account: await actingAs(chain.config, new Wallet(challenger.privateKey, dead)), chainId: chain.chainId });
    offline.fileEvidence(evidence);
    await offline.idle();
    dead.destroy();
    expect((await offline.records()).map((r) => r.state)).toEqual(['pending']);
    expect(await dm().disputeCount()).toBe(0n);
    // The next start files it; a third finds it filed on chain and sends nothing.
    const online = new DisputeFiler({ dir, account: await actingAs(chain.config, challenger), chainId: chain.chainId });
    await online.resume();
    expect(online.filed.map((f) => [f.state, f.supplier, f.disputeId])).toEqual([['filed', supplier.address, 1n]]);
    expect((await online.records()).map((r) => [r.state, r.disputeId])).toEqual([['filed', '1']]);
    const again = new DisputeFiler({ dir, account: await actingAs(chain.config, challenger), chainId: chain.chainId });
    await again.resume();
    expect(again.filed).toEqual([]);
    expect(await dm().disputeCount()).toBe(1n);
    expect((await dm().getDispute(1n)).challenger).toBe(challenger.address);
  });
});
