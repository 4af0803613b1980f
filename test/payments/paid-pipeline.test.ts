/**
 * Issue 5, node and payer side, end to end on a real anvil with `gridpipe supply` processes that charge:
 * (a) a paid generation across two staked suppliers gives the monolithic run's tokens, every step's charge
 *     is agreed by payer and supplier to the base unit and the vouchers are in the suppliers' books, while
 *     an unstaked supplier hosting the whole model gets no traffic;
 * (b) a step without a voucher, with a forged one, with one for another payee or one that leaves the payer
 *     over the credit limit is refused with its error code, and the node goes on serving (a lower voucher
 *     than the best is superseded, not refused; replies carry a verifiable signed receipt);
 * (d) a payer whose escrow cannot cover a step refuses to sign, and the step fails with ESCROW_EXHAUSTED;
 * and a supplier SIGKILLed mid-generation: its replacement is paid for the replay, priced alike on both sides.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { getBytes, Wallet } from 'ethers';
import { multiaddr } from '@multiformats/multiaddr';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { ModelDiscovery } from '../../scheduler/discovery.js';
import { generate, stepInputs, type GenerateOptions } from '../../scheduler/generate.js';
import type { HopTiming, StepHints } from '../../scheduler/session.js';
import { VoucherPayer, PayerError } from '../../gateway/payer/index.js';
import { ExecClient, type RemoteSession } from '../../net/exec/client.js';
import { ExecError } from '../../net/exec/errors.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import { stepCharge } from '../../policy/pricing.js';
import { decodeSignedReceipt } from '../../node/payments/receipts.js';
import { signVoucher, verifyReceipt } from '../../contracts/eip712.js';
import type { Manifest } from '../../fragments/manifest.js';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { admin, keystoreOf, smallGpt, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier } from './helpers.js';
import { expectOneWindowAhead } from './helpers.js';
import { localTokens } from '../helpers/local-run.js';

const tmp = tempDir('gridpipe-paid-');
const PRICE = 1_000_000_000_000n; // base units per GFLOP
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 8;
let chain: PaymentChain;
let manifest: Manifest;
let modelPath: string;
let fragDir: string;
let a: StartedSupplier;
let b: StartedSupplier;
let unstaked: StartedSupplier;
let replica: StartedSupplier | undefined;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;
/** Charge of the 10-token prefill on fragment 0: the credit limit of supplier A is half of it. */
let prefillCharge: bigint;

function genOptions(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  ({ manifest, modelPath, fragDir } = await smallGpt(tmp.dir, 2));
  prefillCharge = stepCharge(manifest, PRICE, { start: 0, end: 1, chunkTokens: [PROMPT.length] });
  expect(prefillCharge).toBeGreaterThan(1n);
  const [, wa, wb, wc] = chain.wallets;
  for (const w of chain.wallets.slice(1, 8)) await chain.mint(w.address, 1_000_000n);
  await chain.stake(wa, 100n * TOKEN);
  await chain.stake(wb, 150n * TOKEN);
  await chain.stake(wc, 99n * TOKEN); // below the minimum: not listed
  const paid = async (name: string, w: Wallet, fragments: string, bootstrap?: string, extra: string[] = []): Promise<StartedSupplier> => startSupplier({
    data: path.join(tmp.dir, name), fragDir, fragments, bootstrap, wallet: await keystoreOf(w, path.join(tmp.dir, `${name}.json`)),
    chainConfig: chain.configPath, price: PRICE.toString(), extra,
  });
  // A's credit limit is in tokens on the command line: half the prefill's charge.
  const limitTokens = (Number(prefillCharge / 2n) / 1e18).toFixed(18).replace(/0+$/, '');
  a = await paid('a', wa, '0', undefined, ['--credit-limit', limitTokens]);
  [b, unstaked] = await Promise.all([paid('b', wb, '1', a.addresses[0]), paid('c', wc, '0,1', a.addresses[0])]);
  expect(a.payee).toBe(wa.address);

  client = await GridClient.connect({
    bootstrap: [a.addresses[0]], network: 'local', discovery: { lookupTimeoutMs: 5000 },
    stakeCheck: { rpcUrl: chain.config.rpcUrl, chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry },
  });
  model = await client.openModel(fragDir);
  await chain.deposit(chain.wallets[4], 10_000n * TOKEN);
  payer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: chain.wallets[4] }, dataDir: path.join(tmp.dir, 'gateway') });
});

afterAll(async () => {
  await payer?.close();
  await client?.close();
  await Promise.all([a, b, unstaked, replica].filter(Boolean).map((s) => s!.proc.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

describe('paid pipelines (anvil + 3 paid supplier processes)', () => {
  it('discovery skips the unstaked supplier, which is found without the stake check', async () => {
    const peers = new Set(model.discovery.current.map((s) => s.peerId));
    expect(peers).toEqual(new Set([a.peerId, b.peerId]));
    const unfiltered = new ModelDiscovery(client.swarm, model.manifestCid);
    const all = await unfiltered.refresh();
    expect(all.map((s) => s.peerId)).toContain(unstaked.peerId);
  });

  it('(a) a paid generation runs on the staked suppliers; payer and suppliers agree on every charge', async () => {
    const expected = await localTokens(modelPath, manifest.statefulPairs, genOptions());

    const session = client.session(model, PROMPT.length + MAX_TOKENS, { payer });
    const hops: HopTiming[] = [];
    const tokens: number[] = [];
    try {
      const paidRunner = { step: async (inputs: Parameters<typeof session.step>[0], position: number, n: number, hints?: StepHints) => { const r = await session.step(inputs, position, n, hints); hops.push(...r.hops); return r; } };
      for await (const t of generate(paidRunner, genOptions())) tokens.push(t.id);
    } finally {
      await session.close();
    }
    expect(tokens).toEqual(expected);
    const byPeer = new Map<string, bigint>();
    for (const h of hops) {
      expect(typeof h.charge).toBe('bigint');
      byPeer.set(h.peerId, (byPeer.get(h.peerId) ?? 0n) + h.charge!);
    }
    expect([...byPeer.keys()].sort()).toEqual([a.peerId, b.peerId].sort());
    expect(byPeer.get(a.peerId)).toBe(prefillCharge + BigInt(MAX_TOKENS - 1) * stepCharge(manifest, PRICE, { start: 0, end: 1, chunkTokens: [1] }));

    // One voucher per credit window, not per step: the payer signed at most one window ahead of the charges,
    // and the supplier holds exactly what was signed.
    const totals = new Map(payer.totals().map((t) => [t.payee, t.signed]));
    for (const s of [a, b]) {
      const charged = byPeer.get(s.peerId)!;
      expectOneWindowAhead(totals.get(s.payee!)!, charged, hops.filter((h) => h.peerId === s.peerId).reduce((m, h) => (h.charge! > m ? h.charge! : m), 0n));
      const book = await admin(s.admin, '/payments');
      expect(BigInt(String(book.accrued))).toBe(charged);
      expect(BigInt(String(book.vouchered))).toBe(totals.get(s.payee!));
      const payers = book.payers as { payer: string; best: { cumulativeAmount: string; signature: string } }[];
      expect(payers.map((p) => p.payer)).toEqual([payer.payer]);
      expect(payers[0].best.signature).toMatch(/^0x[0-9a-f]{130}$/);
    }
    const idle = await admin(unstaked.admin, '/payments');
    expect(idle.payers).toEqual([]);
    const metrics = await fetch(new URL('/metrics', unstaked.admin)).then((r) => r.text());
    expect(metrics).not.toMatch(/gridpipe_exec_steps_total\{outcome="ok"\} [1-9]/);
    expect(await fetch(new URL('/metrics', a.admin)).then((r) => r.text())).toMatch(/gridpipe_payment_vouchers_total\{outcome="accepted"\} [1-9]/);
  });

  describe('(b) refused payments', () => {
    const exec = new ExecClient({ stepTimeoutMs: 30_000 });
    let session: RemoteSession;
    const other = (): Wallet => chain.wallets[6];
    let inputs: ReturnType<typeof stepInputs>;
    const deadline = (): bigint => BigInt(Math.floor(Date.now() / 1000) + 7 * 24 * 3600);
    const voucher = async (signer: Wallet, amount: bigint, opts: { payer?: string; payee?: string } = {}): Promise<WireVoucher> => {
      const v = { payer: opts.payer ?? signer.address, payee: opts.payee ?? a.payee!, cumulativeAmount: amount, deadline: deadline() };
      const sig = await signVoucher(signer, chain.config.paymentEscrow, chain.config.chainId, v);
      return { ...v, cumulativeAmount: amount.toString(), signature: getBytes(sig) };
    };
    const refusal = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (err) {
        expect(err).toBeInstanceOf(ExecError);
        return `${(err as ExecError).code}: ${(err as Error).message}`;
      }
      throw new Error('the step was not refused');
    };

    beforeAll(async () => {
      await chain.deposit(other(), 100n * TOKEN);
      const names = manifest.fragments[0].inputs.filter((i) => i.from === 'graph' && !i.name.startsWith('past_key_values')).map((i) => i.name);
      inputs = stepInputs(names, PROMPT, 0);
      session = await exec.openSession(client.host.node, multiaddr(`${a.addresses[0]}`), {
        fragments: [{ cid: manifest.fragments[0].cid, manifestCid: model.manifestCid, index: 0 }], maxLength: 32, voucher: await voucher(other(), 0n),
      });
    });
    afterAll(async () => { await session?.close(); });

    it('refuses a step without a voucher', async () => {
      expect(await refusal(session.step(inputs, { position: 0, chunkTokens: [PROMPT.length] }))).toMatch(/^PAYMENT_REQUIRED: .*needs a voucher/);
    });

    it('refuses a forged voucher and one paying another supplier', async () => {
      const forged = await voucher(chain.wallets[7], prefillCharge, { payer: other().address });
      expect(await refusal(session.step(inputs, { position: 0, voucher: forged, chunkTokens: [PROMPT.length] }))).toMatch(/^PAYMENT_REQUIRED: .*signature/);
      const elsewhere = await voucher(other(), prefillCharge, { payee: b.payee });
      expect(await refusal(session.step(inputs, { position: 0, voucher: elsewhere, chunkTokens: [PROMPT.length] }))).toMatch(/^PAYMENT_REQUIRED: .*not this supplier/);
    });

    it('refuses a payer whose vouchers fall behind the work by more than the credit limit', async () => {
      const short = await voucher(other(), prefillCharge / 2n - 1n);
      expect(await refusal(session.step(inputs, { position: 0, voucher: short, chunkTokens: [PROMPT.length] }))).toMatch(/^UNPAID: .*credit limit/);
    });

    it('keeps serving: a paid step runs, with the charge and a signed receipt; a lower voucher is superseded', async () => {
      const res = await session.step(inputs, { position: 0, voucher: await voucher(other(), prefillCharge), chunkTokens: [PROMPT.length] });
      expect(res.charge).toBe(prefillCharge);
      expect(Object.keys(res.outputs).length).toBeGreaterThan(0);
      const { receipt, signature } = decodeSignedReceipt(res.receipt!);
      expect(receipt.supplier).toBe(a.payee);
      expect(verifyReceipt(chain.config.disputeManager!, chain.config.chainId, receipt, signature)).toBe(true);
      expect(receipt.step).toBe(res.stepId);

      const next = stepInputs(manifest.fragments[0].inputs.filter((i) => i.from === 'graph' && !i.name.startsWith('past_key_values')).map((i) => i.name), [33], PROMPT.length);
      const oneToken = stepCharge(manifest, PRICE, { start: 0, end: 1, chunkTokens: [1] });
      // an older voucher than the best (it covers the prefill only): superseded, within the credit limit
      const stale = await voucher(other(), prefillCharge);
      const res2 = await session.step(next, { position: PROMPT.length, voucher: stale, chunkTokens: [1] });
      expect(res2.charge).toBe(oneToken);
      const book = await admin(a.admin, '/payments');
      const account = (book.payers as { payer: string; charged: string; best: { cumulativeAmount: string } }[]).find((p) => p.payer === other().address)!;
      expect(BigInt(account.charged)).toBe(prefillCharge + oneToken);
      expect(BigInt(account.best.cumulativeAmount)).toBe(prefillCharge);
    });

    it('refuses a step that declares fewer positions than it runs', async () => {
      const next = stepInputs(manifest.fragments[0].inputs.filter((i) => i.from === 'graph' && !i.name.startsWith('past_key_values')).map((i) => i.name), [34, 35], PROMPT.length + 1);
      const v = await voucher(other(), prefillCharge * 2n);
      expect(await refusal(session.step(next, { position: PROMPT.length + 1, voucher: v, chunkTokens: [1] }))).toMatch(/^BAD_REQUEST: .*declared 1 new positions .* ran 2/);
    });
  });

  it('(d) a payer whose escrow cannot cover a step signs nothing and the step fails with ESCROW_EXHAUSTED', async () => {
    const poor = chain.wallets[5];
    await chain.deposit(poor, 1n); // one base unit: less than any step here
    const poorPayer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: poor }, dataDir: path.join(tmp.dir, 'poor-gateway') });
    const session = client.session(model, PROMPT.length + MAX_TOKENS, { payer: poorPayer });
    try {
      const err = await session.step(stepInputs(genOptions().inputNames, PROMPT, 0), 0, PROMPT.length).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(PayerError);
      expect((err as PayerError).code).toBe('ESCROW_EXHAUSTED');
      // Only the amount-0 vouchers it opened the sessions with (a paid supplier opens none without one).
      expect(poorPayer.totals().map((t) => t.signed)).toEqual(poorPayer.totals().map(() => 0n));
    } finally {
      await session.close();
      await poorPayer.close();
    }
  });

  it('a supplier SIGKILLed mid-generation: the replacement is paid for the replay it runs, priced alike on both sides', async () => {
    const w = chain.wallets[8];
    await chain.mint(w.address, 1000n);
    await chain.stake(w, 100n * TOKEN);
    replica = await startSupplier({
      data: path.join(tmp.dir, 'b2'), fragDir, fragments: '1', bootstrap: a.addresses[0],
      wallet: await keystoreOf(w, path.join(tmp.dir, 'b2.json')), chainConfig: chain.configPath, price: PRICE.toString(),
    });
    for (let i = 0; i < 100 && !(await model.discovery.refresh()).some((x) => x.peerId === replica!.peerId); i++) await new Promise((r) => setTimeout(r, 100));
    expect(model.discovery.current.map((x) => x.peerId)).toContain(replica.peerId);

    const signedBefore = new Map(payer.totals().map((t) => [t.payee, t.signed]));
    const session = client.session(model, PROMPT.length + MAX_TOKENS, { payer });
    const hops: HopTiming[] = [];
    const tokens: number[] = [];
    let killed: StartedSupplier | undefined;
    try {
      const paidRunner = { step: async (inputs: Parameters<typeof session.step>[0], position: number, n: number) => { const r = await session.step(inputs, position, n); hops.push(...r.hops); return r; } };
      for await (const t of generate(paidRunner, genOptions())) {
        tokens.push(t.id);
        if (tokens.length === 3) {
          const servingOne = session.route.find((r) => r.start === 1)!.peerId;
          killed = [b, replica].find((x) => x.peerId === servingOne)!;
          await killed.proc.stop('SIGKILL');
        }
      }
    } finally {
      await session.close();
    }
    const survivor = killed === b ? replica : b;
    if (killed === replica) replica = undefined;
    const expected = await localTokens(modelPath, manifest.statefulPairs, genOptions());
    expect(tokens).toEqual(expected);

    const replayHop = hops.find((h) => h.peerId === survivor!.peerId && h.replayed > 0)!;
    expect(replayHop.replayed).toBe(3);
    // replay of the prefill and two decode steps, then this step's new token
    expect(replayHop.charge).toBe(stepCharge(manifest, PRICE, { start: 1, end: 2, chunkTokens: [PROMPT.length, 1, 1, 1] }));
    const survivorHops = hops.filter((h) => h.peerId === survivor!.peerId);
    const paidToSurvivor = survivorHops.reduce((sum, h) => sum + h.charge!, 0n);
    const signedAfter = payer.totals().find((t) => t.payee === survivor!.payee)!.signed;
    const book = await admin(survivor!.admin, '/payments');
    // What the survivor accrued before this generation (b served test (a)) plus its charges here, paid within one window.
    const accruedBefore = BigInt(String(book.accrued)) - paidToSurvivor;
    expect(accruedBefore).toBeGreaterThanOrEqual(0n);
    expect(signedAfter).toBeGreaterThanOrEqual(signedBefore.get(survivor!.payee!) ?? 0n);
    expect(BigInt(String(book.vouchered))).toBe(signedAfter);
    expectOneWindowAhead(signedAfter, BigInt(String(book.accrued)), [...survivorHops.map((h) => h.charge!), replayHop.charge!, stepCharge(manifest, PRICE, { start: 1, end: 2, chunkTokens: [PROMPT.length] })].reduce((m, c) => (c > m ? c : m), 0n));
  });
});
