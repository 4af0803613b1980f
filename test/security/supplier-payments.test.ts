/**
 * Issue 13, attack 2 and the supplier's parts of 7 and 8, against a real `gridpipe supply` process that
 * charges, on a real anvil chain, with rogue payers built from the project's own exec client on libp2p
 * hosts of their own:
 * - a step paid with an amount-0 voucher whose signature is 65 zero bytes is refused and charges no one;
 * - rotating made-up payer addresses (each signing its own voucher, no escrow) gets no credit, and credit
 *   over several funded payers is bounded per remote peer;
 * - a session opens on a paid supplier only with a valid voucher of a payer with escrow;
 * - a voucher re-sent step after step (the gateway pays a credit window ahead, issue 15) serves at most its
 *   value plus the credit limit, and the supplier signs a receipt per session start and per new voucher;
 * - a payer's WithdrawalRequested makes the supplier redeem that payer's voucher at once;
 * - the admin endpoint refuses requests without the token, to a foreign Host or from a foreign Origin;
 * - the payment database and the admin token are the owner's only (0700/0600);
 * - `gridpipe supply --staking-address 0x…` takes one address (it was parsed as a variadic list).
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { formatUnits, getBytes, Wallet } from 'ethers';
import { multiaddr } from '@multiformats/multiaddr';
import { createGridHost, type GridHost } from '../../net/host.js';
import { ExecClient, type RemoteSession } from '../../net/exec/client.js';
import { ExecError } from '../../net/exec/errors.js';
import type { WireVoucher } from '../../net/exec/codec.js';
import { stepCharge } from '../../policy/pricing.js';
import { voucherBookDir } from '../../node/payments/voucher-book.js';
import { adminTokenPath, readAdminToken } from '../../node/admin-guard.js';
import { signVoucher, verifyReceipt } from '../../contracts/eip712.js';
import { decodeSignedReceipt } from '../../node/payments/receipts.js';
import { stepInputs } from '../../scheduler/generate.js';
import type { Manifest } from '../../fragments/manifest.js';
import { testLogger } from '../helpers/swarm.js';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { admin, eventually, keystoreOf, smallGpt, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-secpay-');
const PRICE = 1_000_000_000_000n; // base units per GFLOP
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
let chain: PaymentChain;
let manifest: Manifest;
let manifestCid: string;
let supplier: StartedSupplier;
let supplierData: string;
let rogue: GridHost;
let rogue2: GridHost;
let charge: bigint;
let inputs: ReturnType<typeof stepInputs>;
const exec = new ExecClient({ stepTimeoutMs: 30_000 });
const sessions: RemoteSession[] = [];

const deadline = (): bigint => BigInt(Math.floor(Date.now() / 1000) + 7 * 24 * 3600);

/** A voucher to the supplier signed by `signer` (naming `payer`, by default the signer). */
async function voucher(signer: Wallet, amount: bigint, opts: { payer?: string; payee?: string } = {}): Promise<WireVoucher> {
  const v = { payer: opts.payer ?? signer.address, payee: opts.payee ?? supplier.payee!, cumulativeAmount: amount, deadline: deadline() };
  const sig = await signVoucher(signer, chain.config.paymentEscrow, chain.config.chainId, v);
  return { ...v, cumulativeAmount: amount.toString(), signature: getBytes(sig) };
}

/** Opens a session on fragment 0 of the supplier from `host`, with `v` as the opening voucher. */
async function open(host: GridHost, v?: WireVoucher): Promise<RemoteSession> {
  const s = await exec.openSession(host.node, multiaddr(supplier.addresses[0]), {
    fragments: [{ cid: manifest.fragments[0].cid, manifestCid, index: 0 }], maxLength: 32, voucher: v,
  });
  sessions.push(s);
  return s;
}

/** The prefill step of the prompt, paid with `v`. */
function prefill(s: RemoteSession, v: WireVoucher): ReturnType<RemoteSession['step']> {
  return s.step(inputs, { position: 0, voucher: v, chunkTokens: [PROMPT.length] });
}

/** `code: message` of the ExecError `p` rejects with (fails when it resolves). */
async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ExecError);
    return `${(err as ExecError).code}: ${(err as Error).message}`;
  }
  throw new Error('not refused');
}

/** The supplier's book: payer → charged. */
async function charged(): Promise<Map<string, bigint>> {
  const book = await admin(supplier.admin, '/payments');
  return new Map((book.payers as { payer: string; charged: string }[]).map((p) => [p.payer, BigInt(p.charged)]));
}

/** A raw HTTP request to the admin endpoint with the headers given (fetch will not send a foreign Host). */
function adminRequest(route: string, method: string, headers: Record<string, string>): Promise<number> {
  const url = new URL(supplier.admin);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: Number(url.port), path: route, method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  const gpt = await smallGpt(tmp.dir, 2);
  ({ manifest, manifestCid } = gpt);
  charge = stepCharge(manifest, PRICE, { start: 0, end: 1, chunkTokens: [PROMPT.length] });
  expect(charge).toBeGreaterThan(0n);
  const names = manifest.fragments[0].inputs.filter((i) => i.from === 'graph' && !i.name.startsWith('past_key_values')).map((i) => i.name);
  inputs = stepInputs(names, PROMPT, 0);
  for (const w of chain.wallets.slice(1, 9)) await chain.mint(w.address, 1_000_000n);
  for (const w of chain.wallets.slice(4, 9)) await chain.deposit(w, 100n * TOKEN);
  // Credit for one and a half prefills per payer and per peer: one payer may run a step on credit, two may not.
  const credit = formatUnits((charge * 3n) / 2n, 18);
  supplierData = path.join(tmp.dir, 'supplier');
  supplier = await startSupplier({
    data: supplierData, fragDir: gpt.fragDir, fragments: '0', wallet: await keystoreOf(chain.wallets[1], path.join(tmp.dir, 'supplier.json')),
    chainConfig: chain.configPath, price: PRICE.toString(), extra: ['--credit-limit', credit, '--credit-per-peer', credit],
  });
  rogue = await createGridHost({ network: 'local', logger: testLogger() });
  rogue2 = await createGridHost({ network: 'local', logger: testLogger() });
});

afterAll(async () => {
  for (const s of sessions) s.abort();
  await Promise.allSettled([rogue, rogue2].filter(Boolean).map((h) => h.stop()));
  await supplier?.proc.stop('SIGTERM');
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

describe('a paid supplier authenticates every voucher (issue 13, attack 2)', () => {
  it('refuses a step paid with an amount-0 voucher of 65 zero bytes, and charges no one', async () => {
    const honest = chain.wallets[4];
    const s = await open(rogue, await voucher(honest, 0n));
    const madeUp = Wallet.createRandom().address;
    for (const payer of [madeUp, honest.address]) {
      const zero: WireVoucher = { payer, payee: supplier.payee!, cumulativeAmount: '0', deadline: deadline(), signature: new Uint8Array(65) };
      expect(await refusal(prefill(s, zero))).toMatch(/^PAYMENT_REQUIRED: .*signature/);
    }
    const book = await charged();
    expect(book.has(madeUp)).toBe(false);
    expect(book.get(honest.address) ?? 0n).toBe(0n);
  });

  it('gives no credit to made-up payers, however many one peer rotates through', async () => {
    const s = await open(rogue, await voucher(chain.wallets[4], 0n));
    const madeUp: string[] = [];
    for (let i = 0; i < 5; i++) {
      const w = new Wallet(Wallet.createRandom().privateKey); // a real key, a valid signature, and nothing in escrow
      madeUp.push(w.address);
      expect(await refusal(prefill(s, await voucher(w, 0n)))).toMatch(/^PAYMENT_REQUIRED: .*escrow/);
    }
    const book = await charged();
    for (const p of madeUp) expect(book.has(p)).toBe(false);
  });

  it('bounds credit per remote peer: a second funded payer from the same peer gets none, from another peer it does', async () => {
    const [a, b] = [chain.wallets[5], chain.wallets[6]];
    const s = await open(rogue, await voucher(a, 0n));
    const onCredit = await prefill(s, await voucher(a, 0n));
    expect(onCredit.charge).toBe(charge);
    expect(await refusal(prefill(s, await voucher(b, 0n)))).toMatch(/^UNPAID: .*per peer/);
    expect((await charged()).get(b.address) ?? 0n).toBe(0n);
    const s2 = await open(rogue2, await voucher(b, 0n));
    expect((await prefill(s2, await voucher(b, 0n))).charge).toBe(charge);
    // Paying what it owes frees the peer's credit.
    expect((await prefill(s, await voucher(a, 2n * charge))).charge).toBe(charge);
    expect((await prefill(s, await voucher(chain.wallets[7], 0n))).charge).toBe(charge);
  });
});

describe('a voucher per credit window (issue 15)', () => {
  it('a payer that pays a window ahead and then stops paying gets that window plus the credit limit, no more; receipts per new voucher', async () => {
    const payer = chain.wallets[3];
    await chain.deposit(payer, 100n * TOKEN);
    const host = await createGridHost({ network: 'local', logger: testLogger() }); // no credit held by earlier tests
    try {
      const s = await open(host, await voucher(payer, 0n));
      const window = await voucher(payer, 2n * charge); // paid ahead for two steps
      const served = [];
      // The same voucher re-sent step after step: paid steps, then one on credit (1.5 steps of credit), then UNPAID.
      for (let i = 0; i < 3; i++) served.push(await prefill(s, window));
      expect(served.map((r) => r.charge)).toEqual([charge, charge, charge]);
      expect(await refusal(prefill(s, window))).toMatch(/^UNPAID: .*credit limit/);
      expect((await charged()).get(payer.address)).toBe(3n * charge); // ≤ the window (2) + the credit limit (1.5)
      // One receipt for the session's first step; none for the steps that re-sent the voucher held.
      expect(served.map((r) => r.receipt !== undefined)).toEqual([true, false, false]);
      // A new voucher: served again, with a receipt over the session's running hashes up to this step.
      const paid = await prefill(s, await voucher(payer, 4n * charge));
      expect(paid.receipt).toBeDefined();
      const first = decodeSignedReceipt(served[0].receipt!);
      const latest = decodeSignedReceipt(paid.receipt!);
      expect(verifyReceipt(chain.config.disputeManager!, chain.config.chainId, latest.receipt, latest.signature)).toBe(true);
      expect(latest.receipt.step).toBe(paid.stepId);
      expect(latest.receipt.sessionId).toBe(first.receipt.sessionId);
      expect(latest.receipt.inputHash).not.toBe(first.receipt.inputHash); // it covers four steps, the first one
    } finally {
      await host.stop();
    }
  });
});

describe('opening a session on a paid supplier (issue 13, attack 7)', () => {
  it('is refused without a voucher, with a forged one, one for another payee and one of an empty escrow', async () => {
    const payer = chain.wallets[4];
    expect(await refusal(open(rogue))).toMatch(/^PAYMENT_REQUIRED: .*needs the payer's voucher/);
    expect(await refusal(open(rogue, await voucher(chain.wallets[3], 0n, { payer: payer.address })))).toMatch(/^PAYMENT_REQUIRED: .*signature/);
    const zero: WireVoucher = { payer: payer.address, payee: supplier.payee!, cumulativeAmount: '0', deadline: deadline(), signature: new Uint8Array(65) };
    expect(await refusal(open(rogue, zero))).toMatch(/^PAYMENT_REQUIRED: .*signature/);
    expect(await refusal(open(rogue, await voucher(payer, 0n, { payee: chain.wallets[2].address })))).toMatch(/^PAYMENT_REQUIRED: .*not this supplier/);
    expect(await refusal(open(rogue, await voucher(new Wallet(Wallet.createRandom().privateKey), 0n)))).toMatch(/^PAYMENT_REQUIRED: .*nothing in escrow/);
    const s = await open(rogue, await voucher(payer, 0n));
    expect(s.maxLength).toBe(32);
  });
});

describe('withdrawals (issue 13, attack 7)', () => {
  it('a WithdrawalRequested makes the supplier redeem that payer\'s voucher at once', async () => {
    const payer = chain.wallets[8];
    const s = await open(rogue, await voucher(payer, 0n));
    expect((await prefill(s, await voucher(payer, charge))).charge).toBe(charge);
    const escrow = chain.contracts.paymentEscrow;
    expect(await escrow.redeemed(payer.address, supplier.payee!)).toBe(0n); // far below the redeem threshold
    await (await escrow.connect(payer).requestWithdrawal(50n * TOKEN)).wait();
    await eventually(async () => (await escrow.redeemed(payer.address, supplier.payee!)) === charge, 'the supplier to redeem after WithdrawalRequested');
  });
});

describe('the admin endpoint and the files (issue 13, attack 8)', () => {
  it('refuses requests without the token, to a foreign Host or from a foreign Origin', async () => {
    const token = readAdminToken(supplierData)!;
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    const port = new URL(supplier.admin).port;
    const good = { host: `127.0.0.1:${port}`, authorization: `Bearer ${token}` };
    for (const [method, route] of [['GET', '/payments'], ['POST', '/redeem'], ['POST', '/pause']]) {
      expect(await adminRequest(route, method, { host: good.host })).toBe(401);
      expect(await adminRequest(route, method, { ...good, authorization: 'Bearer 00' })).toBe(401);
      expect(await adminRequest(route, method, { ...good, host: `rebound.example:${port}` })).toBe(403);
      expect(await adminRequest(route, method, { ...good, origin: 'http://evil.example' })).toBe(403);
    }
    expect(await adminRequest('/status', 'GET', { host: `rebound.example:${port}` })).toBe(403);
    expect(await adminRequest('/payments', 'GET', good)).toBe(200);
    expect(await adminRequest('/payments', 'GET', { ...good, host: `localhost:${port}`, origin: `http://localhost:${port}` })).toBe(200);
    expect(await adminRequest('/status', 'GET', { host: good.host })).toBe(200);
    expect((await admin(supplier.admin, '/status')).paused).toBe(false); // the pauses above were all refused
  });

  it('keeps the voucher book and the admin token to the owner (0700 folder, 0600 files)', () => {
    const dir = voucherBookDir(supplierData);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const files = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile());
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(statSync(path.join(dir, f.name)).mode & 0o777, f.name).toBe(0o600);
    expect(statSync(adminTokenPath(supplierData)).mode & 0o777).toBe(0o600);
  });

  it('`supply --staking-address 0x…` takes one address and publishes it', async () => {
    const address = chain.wallets[3].address;
    const free = await startSupplier({ data: path.join(tmp.dir, 'free'), fragDir: path.join(tmp.dir, 'frags'), fragments: '1', extra: ['--staking-address', address] });
    try {
      await eventually(async () => (await admin(free.admin, '/status')).record !== undefined, 'the capacity record');
      const status = await admin(free.admin, '/status');
      expect((status.record as { stakingAddress: unknown }).stakingAddress).toBe(address);
    } finally {
      await free.proc.stop('SIGTERM');
    }
  });
});
