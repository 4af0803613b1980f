/**
 * The money commands of the CLI against a real anvil: wallet new, stake, unstake, withdraw, deposit,
 * earnings and redeem, each with its happy path, and bad input answered on one line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { parseEther, parseUnits } from 'ethers';
import { signVoucher } from '../../contracts/eip712.js';
import { VoucherBook, voucherBookDir } from '../../node/payments/voucher-book.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { PASSPHRASE, startPaymentChain, TOKEN, type PaymentChain } from './helpers.js';

const tmp = tempDir('gridpipe-money-cli-');
let chain: PaymentChain;
let keystore: string;
let address: string;
const env = { GRIDPIPE_PASSPHRASE: PASSPHRASE, GRIDPIPE_LOG_LEVEL: 'warn' };
const chainArgs = (): string[] => ['--chain-config', chain.configPath, '--wallet', keystore, '--json'];

async function json(args: string[]): Promise<Record<string, string | number | boolean>> {
  const r = await runCli(args, { env });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string | number | boolean>;
}

/** Runs a command that must fail: its exit code and its one-line message. */
async function fails(args: string[], extraEnv: Record<string, string | undefined> = env): Promise<{ code: number; line: string }> {
  const r = await runCli(args, { env: extraEnv });
  expect(r.code).not.toBe(0);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  return { code: r.code, line: lines[0] };
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
});

afterAll(async () => {
  await chain?.close();
  tmp.cleanup();
});

describe('gridpipe wallet / stake / unstake / withdraw / deposit / earnings / redeem', () => {
  it('wallet new writes an encrypted keystore; it refuses to overwrite one or to run without a passphrase', async () => {
    keystore = path.join(tmp.dir, 'supplier.json');
    const created = await json(['wallet', 'new', '--out', keystore, '--json']);
    address = String(created.address);
    expect(address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect((await json(['wallet', 'address', '--wallet', keystore, '--json'])).address).toBe(address);
    expect((await fails(['wallet', 'new', '--out', keystore])).line).toMatch(/^gridpipe: error: keystore .* already exists$/);
    const noPass = await fails(['wallet', 'new', '--out', path.join(tmp.dir, 'other.json')], { GRIDPIPE_PASSPHRASE: '' });
    expect(noPass.line).toMatch(/no passphrase.*GRIDPIPE_PASSPHRASE/);
    // fund it: gas and tokens
    await (await chain.wallets[0].sendTransaction({ to: address, value: parseEther('10') })).wait();
    await chain.mint(address, 1000n);
  });

  it('stake takes decimal token amounts and lists the supplier; bad amounts are refused', async () => {
    const r = await json(['stake', '150.5', ...chainArgs()]);
    expect(r.staked).toBe(parseUnits('150.5', 18).toString());
    expect(r.listed).toBe(true);
    expect(await chain.contracts.stakeRegistry.isListed(address)).toBe(true);
    const bad = await fails(['stake', '12,5', ...chainArgs()]);
    expect(bad.code).toBe(2);
    expect(bad.line).toMatch(/AMOUNT must be a decimal number of tokens/);
    expect((await fails(['stake', '100000', ...chainArgs()])).line).toMatch(/holds 849\.5 tokens, less than 100000$/);
    expect((await fails(['stake', '1', '--chain-config', chain.configPath])).line).toMatch(/pass --wallet/);
  });

  it('unstake starts unbonding; withdraw waits for the delay, then pays the stake back', async () => {
    const u = await json(['unstake', '50', ...chainArgs()]);
    expect(u.unbonding).toBe((50n * TOKEN).toString());
    expect(u.staked).toBe(parseUnits('100.5', 18).toString());
    const all = await json(['unstake', ...chainArgs()]);
    expect(all.staked).toBe('0');
    expect(all.unbonding).toBe(parseUnits('150.5', 18).toString());
    const early = await fails(['withdraw', ...chainArgs()]);
    expect(early.code).toBe(1);
    expect(early.line).toMatch(/withdraw reverted: \w+/);
    const { increaseTime } = await import('../../contracts/anvil.js');
    await increaseTime(chain.node.rpcUrl, 1001);
    const w = await json(['withdraw', ...chainArgs()]);
    expect(w.withdrawn).toBe(parseUnits('150.5', 18).toString());
  });

  it('deposit funds the escrow', async () => {
    const d = await json(['deposit', '12.5', ...chainArgs()]);
    expect(d.escrowBalance).toBe(parseUnits('12.5', 18).toString());
    expect(await chain.contracts.paymentEscrow.balanceOf(address)).toBe(parseUnits('12.5', 18));
  });

  it('earnings reads the voucher book and the chain; redeem redeems the stored vouchers', async () => {
    // A supplier's data folder whose voucher book holds a voucher from a funded payer to our address.
    const payerWallet = chain.wallets[4];
    await chain.mint(payerWallet.address, 100n);
    await chain.deposit(payerWallet, 10n * TOKEN);
    const data = path.join(tmp.dir, 'supplier-data');
    const voucher = { payer: payerWallet.address, payee: address, cumulativeAmount: 3n * TOKEN, deadline: BigInt(Math.floor(Date.now() / 1000) + 86_400) };
    const signature = await signVoucher(payerWallet, chain.config.paymentEscrow, chain.config.chainId, voucher);
    const book = await VoucherBook.open(voucherBookDir(data));
    await book.save({ payer: payerWallet.address, charged: 3n * TOKEN, redeemed: 0n, best: { ...voucher, signature } });
    await book.close();

    const before = await json(['earnings', '--data', data, ...chainArgs()]);
    expect(before).toMatchObject({ payee: address, accrued: (3n * TOKEN).toString(), pending: (3n * TOKEN).toString(), redeemed: '0' });
    const balance = await chain.contracts.token.balanceOf(address);
    const r = await json(['redeem', '--data', data, ...chainArgs()]);
    expect(r).toMatchObject({ redeemed: (3n * TOKEN).toString(), vouchers: 1, transactions: 1 });
    expect(await chain.contracts.token.balanceOf(address)).toBe(balance + 3n * TOKEN);
    const after = await json(['earnings', '--data', data, ...chainArgs()]);
    expect(after).toMatchObject({ redeemed: (3n * TOKEN).toString(), pending: '0' });
    const again = await json(['redeem', '--data', data, ...chainArgs()]);
    expect(again).toMatchObject({ redeemed: '0', vouchers: 0, transactions: 0 });
  });

  it('supply refuses payment flags without a wallet and chain config, on one line', async () => {
    const noConfig = await fails(['supply', '--data', path.join(tmp.dir, 's'), '--wallet', keystore]);
    expect(noConfig.code).toBe(2);
    expect(noConfig.line).toMatch(/--wallet charges for steps and needs --chain-config FILE/);
    const noWallet = await fails(['supply', '--data', path.join(tmp.dir, 's'), '--chain-config', chain.configPath, '--credit-limit', '1']);
    expect(noWallet.line).toMatch(/needs --wallet KEYSTORE/);
    const badLimit = await fails(['supply', '--data', path.join(tmp.dir, 's'), '--wallet', keystore, '--chain-config', chain.configPath, '--credit-limit', 'lots']);
    expect(badLimit.line).toMatch(/--credit-limit must be a decimal number of tokens/);
  });
});
