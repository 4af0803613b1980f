/**
 * Paid selective activation on a real anvil: a gpt-moe model (2 MoE layers, 4 experts, top-2) cut into dense,
 * router and expert fragments, served by three staked `gridpipe supply` processes that charge (one hosts the
 * dense fragments and routers, two host two experts each). A paid generation equals the monolithic run; every
 * router and expert call carries a voucher priced like the supplier prices it, and each expert host is charged
 * only for the tokens routed to it (its books hold exactly that); an expert host refuses a call without a
 * voucher, or one declaring fewer tokens than it sends, like any paid supplier.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { getBytes, type Wallet } from 'ethers';
import { multiaddr } from '@multiformats/multiaddr';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { PaymentNeededError, type StepOutcome } from '../../scheduler/session.js';
import { payExpertCall } from '../../scheduler/expert-payment.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import { ExecClient } from '../../net/exec/client.js';
import { ExecError } from '../../net/exec/errors.js';
import { stepCharge } from '../../policy/pricing.js';
import { signVoucher } from '../../contracts/eip712.js';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/swarm.js';
import { admin, keystoreOf, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier } from '../payments/helpers.js';
import { localTokens } from '../helpers/local-run.js';

const tmp = tempDir('gridpipe-moe-paid-');
const PRICE = 1_000_000_000_000n; // base units per GFLOP
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 6;
const TOP_K = 2;
let chain: PaymentChain;
let manifest: Manifest;
let modelPath: string;
let fragDir: string;
let trunk: StartedSupplier;
let experts01: StartedSupplier;
let experts23: StartedSupplier;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;
let expected: number[];

function options(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  modelPath = path.join(tmp.dir, 'moe.onnx');
  await writeModel(buildModel({ arch: 'gpt-moe', layers: 2, dModel: 64, heads: 4, experts: 4, topK: TOP_K, kvCache: true, seed: 16 }), modelPath);
  fragDir = path.join(tmp.dir, 'frags');
  manifest = (await fragmentModel(modelPath, fragDir, { parts: 3, expertsPerFragment: 1 })).manifest;
  const expertFragments = (list: number[]): number[] => manifest.expertGroups.flatMap((g) => list.map((e) => g.experts[e].fragments[0]));
  const dense = manifest.fragments.filter((f) => f.moe?.role !== 'experts').map((f) => f.index);
  const [, wt, w01, w23] = chain.wallets;
  for (const w of chain.wallets.slice(1, 7)) await chain.mint(w.address, 1_000_000n);
  for (const w of [wt, w01, w23]) await chain.stake(w, 100n * TOKEN);
  const paid = async (name: string, w: Wallet, fragments: number[], bootstrap?: string): Promise<StartedSupplier> => startSupplier({
    data: path.join(tmp.dir, name), fragDir, fragments: fragments.join(','), bootstrap, wallet: await keystoreOf(w, path.join(tmp.dir, `${name}.json`)),
    chainConfig: chain.configPath, price: PRICE.toString(),
  });
  trunk = await paid('trunk', wt, dense);
  [experts01, experts23] = await Promise.all([paid('experts-01', w01, expertFragments([0, 1]), trunk.addresses[0]), paid('experts-23', w23, expertFragments([2, 3]), trunk.addresses[0])]);
  client = await GridClient.connect({
    bootstrap: [trunk.addresses[0]], network: 'local', discovery: { lookupTimeoutMs: 5000 },
    stakeCheck: { rpcUrl: chain.config.rpcUrl, chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry },
  });
  model = await client.openModel(fragDir);
  await waitFor(async () => new Set((await model.discovery.refresh()).map((s) => s.peerId)).size === 3, 'the three staked suppliers in the swarm view', 30_000, 250);
  await chain.deposit(chain.wallets[4], 10_000n * TOKEN);
  payer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: chain.wallets[4] }, dataDir: path.join(tmp.dir, 'gateway') });
  expected = await localTokens(modelPath, manifest.statefulPairs, options());
});

afterAll(async () => {
  await payer?.close();
  await client?.close();
  await Promise.all([trunk, experts01, experts23].filter(Boolean).map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

describe('paid selective activation (anvil + 3 paid supplier processes)', () => {
  it('without a payer, an expert call to a host that charges is not made: PaymentNeededError', async () => {
    const host = model.discovery.current.find((s) => s.peerId === experts01.peerId)!;
    const err = await payExpertCall(manifest, undefined, host, host.start, 1).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(PaymentNeededError);
    expect(await payExpertCall(manifest, undefined, { ...host, stakingAddress: '' }, host.start, 1)).toBeUndefined();
  });

  it('a paid generation: each expert host is charged for exactly the tokens routed to it, agreed by both sides', async () => {
    const session = client.session(model, PROMPT.length + MAX_TOKENS, { payer });
    const steps: StepOutcome[] = [];
    const tokens: number[] = [];
    try {
      for await (const t of generate({ step: async (...a) => { const r = await session.step(...a); steps.push(r); return r; } }, options())) tokens.push(t.id);
    } finally {
      await session.close();
    }
    expect(tokens).toEqual(expected);
    const expertHops = steps.flatMap((s) => s.experts!.hops);
    const charged = new Map<string, bigint>();
    const add = (peer: string, c: bigint): void => { charged.set(peer, (charged.get(peer) ?? 0n) + c); };
    for (const h of expertHops) {
      // priced on the one fragment called and the tokens sent to it
      expect(h.charge).toBe(stepCharge(manifest, PRICE, { start: h.fragment, end: h.fragment + 1, chunkTokens: [h.tokens] }));
      expect(h.cost).toBe(h.charge);
      add(h.peerId, h.charge!);
    }
    for (const h of steps.flatMap((s) => s.hops)) add(h.peerId, h.charge!);
    // Each token paid for its top-k experts per layer, no more: the expert calls' tokens add up to positions × k × layers.
    const positions = PROMPT.length + MAX_TOKENS - 1;
    const expertTokens = expertHops.filter((h) => h.experts.length > 0).reduce((n, h) => n + h.tokens, 0);
    expect(expertTokens).toBe(positions * TOP_K * manifest.expertGroups.length);
    for (const host of [experts01, experts23]) {
      const calls = expertHops.filter((h) => h.peerId === host.peerId);
      expect(calls.length).toBeGreaterThan(0);
      expect(calls.every((h) => h.experts.length === 1)).toBe(true);
      // fewer tokens than every token through each of its expert fragments (what calling every expert would pay)
      expect(calls.reduce((n, h) => n + h.tokens, 0)).toBeLessThan(positions * 4);
      const book = await admin(host.admin, '/payments');
      expect(BigInt(String(book.accrued)), 'the supplier\'s own books').toBe(charged.get(host.peerId));
      expect(BigInt(String(book.vouchered))).toBeGreaterThanOrEqual(charged.get(host.peerId)!);
    }
    // The routers run on the dense host: its books hold the dense spans and the router calls.
    expect(BigInt(String((await admin(trunk.admin, '/payments')).accrued))).toBe(charged.get(trunk.peerId));
  });

  describe('an expert host refuses like any paid supplier', () => {
    const exec = new ExecClient({ stepTimeoutMs: 30_000 });
    const other = (): Wallet => chain.wallets[6];
    const deadline = (): bigint => BigInt(Math.floor(Date.now() / 1000) + 7 * 24 * 3600);
    const voucher = async (amount: bigint) => {
      const v = { payer: other().address, payee: experts01.payee!, cumulativeAmount: amount, deadline: deadline() };
      const sig = await signVoucher(other(), chain.config.paymentEscrow, chain.config.chainId, v);
      return { ...v, cumulativeAmount: amount.toString(), signature: getBytes(sig) };
    };
    const refusal = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (err) {
        expect(err).toBeInstanceOf(ExecError);
        return `${(err as ExecError).code}: ${(err as Error).message}`;
      }
      throw new Error('the call was not refused');
    };

    it('no voucher: PAYMENT_REQUIRED; fewer tokens declared than sent: BAD_REQUEST; a paid call runs', async () => {
      await chain.deposit(other(), 100n * TOKEN);
      const group = manifest.expertGroups[0];
      const fragment = group.experts[0].fragments[0];
      const f = manifest.fragments[fragment];
      const session = await exec.openSession(client.host.node, multiaddr(experts01.addresses[0]), {
        fragments: [{ cid: f.cid, manifestCid: model.manifestCid, index: fragment }], voucher: await voucher(0n),
      });
      try {
        const rows = 3;
        const width = 64;
        const feeds = { [group.input!]: new ort.Tensor('float32', new Float32Array(rows * width).fill(0.5), [1, rows, width]) };
        const want = [group.experts[0].output!];
        expect(await refusal(session.step(feeds, { position: 0, want, chunkTokens: [rows] }))).toMatch(/^PAYMENT_REQUIRED: .*needs a voucher/);
        const full = stepCharge(manifest, PRICE, { start: fragment, end: fragment + 1, chunkTokens: [rows] });
        expect(await refusal(session.step(feeds, { position: 0, want, voucher: await voucher(full), chunkTokens: [1] }))).toMatch(/^BAD_REQUEST: .*declared 1 tokens .* sends 3/);
        const res = await session.step(feeds, { position: 0, want, voucher: await voucher(full), chunkTokens: [rows] });
        expect(res.charge).toBe(full);
        expect(res.outputs[want[0]].dims).toEqual([1, rows, width]);
      } finally {
        await session.close();
      }
    });
  });
});
