/**
 * The acceptance test of issue 5: a supplier SIGKILLed after acknowledging vouchers, then restarted on the
 * same data folder, redeems their full value: its token balance on chain grows by exactly the value of the
 * latest voucher it accepted (a credit window ahead of the charges its replies acknowledged, issue 15). Beside it, a supplier with a tiny --redeem-threshold redeems on its own
 * while serving, and a graceful stop (SIGTERM) pays nothing twice.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import type { HopTiming } from '../../scheduler/session.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import type { Manifest } from '../../fragments/manifest.js';
import { killAll } from '../helpers/process.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { admin, eventually, expectOneWindowAhead, keystoreOf, smallGpt, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier, type SupplyArgs } from './helpers.js';

const tmp = tempDir('gridpipe-crash-');
const PRICE = '1000000000000';
const PROMPT = [10, 20, 30, 40, 50, 60];
let chain: PaymentChain;
let manifest: Manifest;
let fragDir: string;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;
const args: Record<'a' | 'b', SupplyArgs> = {} as Record<'a' | 'b', SupplyArgs>;
const running: Partial<Record<'a' | 'b', StartedSupplier>> = {};
/** Charges acknowledged by the suppliers' replies over the whole file, by peer. */
const acknowledgedByPeer = new Map<string, bigint>();
/** The largest step charge seen, by peer (what a credit window is sized on). */
const maxStepByPeer = new Map<string, bigint>();
/** What the payer has signed to `payee`: the voucher every later step re-sent, which the supplier accepted. */
const signedTo = (payee: string): bigint => payer.totals().find((t) => t.payee === payee)!.signed;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  ({ manifest, fragDir } = await smallGpt(tmp.dir, 2));
  const [, wa, wb, , wp] = chain.wallets;
  for (const w of [wa, wb, wp]) await chain.mint(w.address, 1_000_000n);
  await chain.stake(wa, 100n * TOKEN);
  await chain.stake(wb, 100n * TOKEN);
  await chain.deposit(wp, 1000n * TOKEN);
  args.a = { data: path.join(tmp.dir, 'a'), fragDir, fragments: '0', wallet: await keystoreOf(wa, path.join(tmp.dir, 'a.json')), chainConfig: chain.configPath, price: PRICE };
  running.a = await startSupplier(args.a);
  // B redeems whenever a single base unit is unredeemed: it redeems while serving.
  args.b = {
    data: path.join(tmp.dir, 'b'), fragDir, fragments: '1', bootstrap: running.a.addresses[0], wallet: await keystoreOf(wb, path.join(tmp.dir, 'b.json')),
    chainConfig: chain.configPath, price: PRICE, extra: ['--redeem-threshold', '0.000000000000000001'],
  };
  running.b = await startSupplier(args.b);
  client = await GridClient.connect({
    bootstrap: [running.a.addresses[0]], network: 'local', discovery: { lookupTimeoutMs: 5000 },
    stakeCheck: { rpcUrl: chain.config.rpcUrl, chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry },
  });
  model = await client.openModel(fragDir);
  payer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: wp }, dataDir: path.join(tmp.dir, 'gateway') });
});

afterAll(async () => {
  await payer?.close();
  await client?.close();
  await Promise.all(Object.values(running).map((s) => s?.proc.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

async function paidGeneration(maxTokens: number): Promise<Map<string, bigint>> {
  const options: GenerateOptions = { promptIds: PROMPT, maxTokens, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
  const session = client.session(model, PROMPT.length + maxTokens, { payer });
  const hops: HopTiming[] = [];
  try {
    const runner = { step: async (inputs: Parameters<typeof session.step>[0], position: number, n: number) => { const r = await session.step(inputs, position, n); hops.push(...r.hops); return r; } };
    for await (const token of generate(runner, options)) void token;
  } finally {
    await session.close();
  }
  const byPeer = new Map<string, bigint>();
  for (const h of hops) byPeer.set(h.peerId, (byPeer.get(h.peerId) ?? 0n) + (h.charge ?? 0n));
  for (const [peer, charge] of byPeer) acknowledgedByPeer.set(peer, (acknowledgedByPeer.get(peer) ?? 0n) + charge);
  for (const h of hops) if ((h.charge ?? 0n) > (maxStepByPeer.get(h.peerId) ?? 0n)) maxStepByPeer.set(h.peerId, h.charge!);
  return byPeer;
}

const balance = (address: string): Promise<bigint> => chain.contracts.token.balanceOf(address);

describe('redemption (anvil + 2 paid supplier processes)', () => {
  it('a supplier over its redeem threshold redeems while serving', async () => {
    const b = running.b!;
    const redeemedBefore = await chain.contracts.paymentEscrow.redeemed(payer.payer, b.payee!);
    const heldBefore = await balance(b.payee!);
    const charged = (await paidGeneration(3)).get(b.peerId)!;
    const signed = signedTo(b.payee!);
    expectOneWindowAhead(signed, redeemedBefore + charged, maxStepByPeer.get(b.peerId)!);
    await eventually(async () => (await chain.contracts.paymentEscrow.redeemed(payer.payer, b.payee!)) === signed, 'B to redeem on its own');
    expect(await balance(b.payee!)).toBe(heldBefore + signed - redeemedBefore);

    // `gridpipe earnings` on a running supplier: its book is locked, its admin endpoint answers
    const locked = await runCli(['earnings', '--data', args.b.data, '--chain-config', chain.configPath]);
    expect(locked.code).toBe(1);
    expect(locked.stderr.trim()).toMatch(/^gridpipe: error: the supplier using .* is running .* pass --admin URL/);
    const viaAdmin = await runCli(['earnings', '--admin', b.admin, '--data', args.b.data, '--chain-config', chain.configPath, '--json']);
    expect(viaAdmin.code, viaAdmin.stderr).toBe(0);
    expect(JSON.parse(viaAdmin.stdout)).toMatchObject({ payee: b.payee, redeemed: signed.toString(), pending: '0', accrued: acknowledgedByPeer.get(b.peerId)!.toString() });
  });

  it('a supplier SIGKILLed after acknowledging vouchers redeems their full value once restarted', async () => {
    const a = running.a!;
    const before = await balance(a.payee!);
    expect((await paidGeneration(6)).get(a.peerId)).toBeGreaterThan(0n);
    // The vouchers A accepted: the payer's latest one to A (it paid one credit window ahead of the charges).
    const acknowledged = signedTo(a.payee!);
    expectOneWindowAhead(acknowledged, acknowledgedByPeer.get(a.peerId)!, maxStepByPeer.get(a.peerId)!);
    // A's threshold (1 token) is far above what it holds: nothing was redeemed before the crash.
    expect(BigInt(String((await admin(a.admin, '/payments')).pending))).toBe(acknowledged);
    expect(await a.proc.stop('SIGKILL')).toBe('SIGKILL');
    running.a = undefined;
    expect(await balance(a.payee!)).toBe(before);

    // Same data folder and wallet, same address (so the client's routes still reach it).
    running.a = await startSupplier({ ...args.a, listen: a.addresses[0].replace(/\/p2p\/.*$/, ''), bootstrap: running.b!.addresses[0] });
    expect(running.a.peerId).toBe(a.peerId);
    await eventually(async () => (await balance(a.payee!)) !== before, 'the restarted supplier to redeem');
    expect(await balance(a.payee!)).toBe(before + acknowledged);
    expect(await chain.contracts.paymentEscrow.redeemed(payer.payer, a.payee!)).toBe(acknowledged);
    expect(payer.totals().find((t) => t.payee === a.payee)?.signed).toBe(acknowledged);
  });

  it('a graceful stop (SIGTERM) redeems what is held, and nothing twice', async () => {
    const a = running.a!;
    const redeemedBefore = await chain.contracts.paymentEscrow.redeemed(payer.payer, a.payee!);
    expect((await paidGeneration(3)).get(a.peerId)).toBeGreaterThan(0n);
    const signed = signedTo(a.payee!);
    expectOneWindowAhead(signed, acknowledgedByPeer.get(a.peerId)!, maxStepByPeer.get(a.peerId)!);
    const pending = BigInt(String((await admin(a.admin, '/payments')).pending));
    expect(pending).toBe(signed - redeemedBefore);
    const held = await balance(a.payee!);
    expect(await a.proc.stop('SIGTERM')).toBe(0);
    running.a = undefined;
    expect(await balance(a.payee!)).toBe(held + pending);
    expect(await chain.contracts.paymentEscrow.redeemed(payer.payer, a.payee!)).toBe(signed);
  });
});
