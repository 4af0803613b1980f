/**
 * Issue 21 end to end on a paid grid on anvil, with real supplier processes: a staked, paid supplier started
 * with GRIDPIPE_TEST_FAULT=noise serves a session; the verifier condemns it; the dispute filer files the
 * evidence (its signed receipt, the input and digest streams) from the gateway's chain account; the payer
 * withholds every further voucher; the arbiter service (its own key, not the deployer's) re-runs the evidence
 * on the grid and upholds; the cheater's stake is slashed and the challenger paid; honest stakes untouched.
 *
 * Layout: a 4-layer GPT in 4 fragments; "0" and "3" on staked paid suppliers; the span "1,2" on the paid
 * cheater, on a paid honest host and on a free one: checker and referee are both needed, so the verifier pays
 * the paid honest host for its check (a host that charges refuses a call without a voucher). The arbiter pays
 * the paid host and re-runs on the free one too (test/verify/arbiter-paid.test.ts: a span where every host charges).
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Wallet } from 'ethers';
import { Registry } from 'prom-client';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate } from '../../scheduler/generate.js';
import { Verifier, type Verdict } from '../../gateway/verify/verifier.js';
import { DisputeFiler } from '../../gateway/verify/dispute-filer.js';
import { Withholding, PaymentWithheldError } from '../../gateway/verify/withholding-payer.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import { actingAs, DisputeStatus } from '../../contracts/index.js';
import { tempDir } from '../helpers/tmp.js';
import { DisputeGrid, SESSION_LENGTH, STAKE } from './dispute-grid.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/swarm.js';
import { keystoreOf, PASSPHRASE, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir();
let grid: DisputeGrid;
let chain: PaymentChain;
let bootstrap: string;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;
let paidChecker: { peerId: string };

beforeAll(async () => {
  grid = await DisputeGrid.open(tmp.dir);
  ({ chain } = grid);
  const [, w0, w3, wCheat, , wChecker] = chain.wallets;
  for (const w of [w0, w3, wCheat, wChecker]) await chain.stake(w, STAKE);
  bootstrap = (await grid.start('h0', '0', { wallet: w0 })).address;
  // h2 is free, so routing (price weighed against time) would prefer it to the paid cheater whenever it looks fast:
  // it advertises a crawl and is never routed to, only asked to check and referee.
  [, paidChecker] = await Promise.all([grid.start('h3', '3', { wallet: w3 }), grid.start('h1', '1,2', { wallet: wChecker }), grid.start('h2', '1,2', { extra: ['--gflops', '0.001'] })]);
  // Routing must pick the cheater for the test to check it (test/verify/cheaters.test.ts does the same).
  ({ client, model } = await grid.connect({ estimates: { maxAdvertisedGflops: 1e7, defaultRttMs: 0 } }));
  payer = await grid.openPayer();
}, 180_000);

afterAll(async () => {
  await grid?.close();
  tmp.cleanup();
});

describe('disputes end to end (anvil, paid supplier processes, GRIDPIPE_TEST_FAULT)', () => {
  it('a cheater is condemned, the dispute filed and upheld, its stake slashed and the challenger paid; its payments withheld; honest stakes untouched', async () => {
    const [, w0, w3, wCheat, gatewayWallet, wChecker] = chain.wallets;
    const cheater = await grid.start('cheat', '1,2', { wallet: wCheat, env: { GRIDPIPE_TEST_FAULT: 'noise' }, extra: ['--gflops', '1000000'] });
    await waitFor(async () => (await model.discovery.refresh()).length === 5, 'five suppliers in view', 60_000, 250);

    const withholding = new Withholding();
    const disputesDir = path.join(tmp.dir, 'gateway', 'disputes');
    const registry = new Registry();
    const filer = new DisputeFiler({ dir: disputesDir, account: await actingAs(chain.config, gatewayWallet), chainId: chain.config.chainId, registry });
    const verdicts: Verdict[] = [];
    const paying = withholding.wrap(payer);
    const verifier = new Verifier({
      host: client.host, swarm: client.swarm, rate: 1, payer: paying,
      onVerdict: (v, e) => { verdicts.push(v); withholding.withhold(e.link.supplier.stakingAddress); filer.onVerdict(v, e); },
    });
    let served = false;
    for (let i = 0; i < 12 && !verdicts.length; i++) {
      const session = client.session(model, SESSION_LENGTH, { payer: paying, observer: verifier.observe(model, SESSION_LENGTH) });
      try {
        for await (const _ of generate(session, grid.options())) void _;
      } finally {
        await session.close();
      }
      served ||= session.route.some((r) => r.peerId === cheater.peerId);
      await verifier.idle();
    }
    expect(served, 'the cheater served a session').toBe(true);
    expect(verdicts.map((v) => [v.result, v.supplier])).toEqual([['supplier-condemned', cheater.peerId]]);
    // Checker and referee were the two honest hosts of the span, the paid one paid by the verifier's vouchers.
    expect([verdicts[0].checker, verdicts[0].referee]).toContain(paidChecker.peerId);
    expect(payer.totals().find((t) => t.payee === wChecker.address)?.signed ?? 0n).toBeGreaterThan(0n);

    // Filed from the gateway's account, with the evidence persisted first.
    await filer.idle();
    expect(filer.filed.map((f) => [f.state, f.supplier, f.error])).toEqual([['filed', wCheat.address, undefined]]);
    const id = filer.filed[0].disputeId!;
    expect(await registry.getSingleMetricAsString('gridpipe_disputes_total')).toMatch(/gridpipe_disputes_total\{outcome="filed"\} 1/);
    const records = await filer.records();
    expect(records.map((r) => [r.state, r.disputeId])).toEqual([['filed', id.toString()]]);
    expect(readdirSync(disputesDir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const dispute = await chain.contracts.disputeManager!.getDispute(id);
    expect([dispute.supplier, dispute.challenger, dispute.status]).toEqual([wCheat.address, gatewayWallet.address, BigInt(DisputeStatus.Open)]);

    // No further voucher for the condemned supplier, whatever the charge.
    await expect(paying.voucherFor({ peerId: cheater.peerId, stakingAddress: wCheat.address, pricePerGflop: '1' }, 1n)).rejects.toBeInstanceOf(PaymentWithheldError);

    // The arbiter service (`gridpipe arbiter`, its own key) re-runs the evidence on the grid's other hosts of the span and rules.
    const gatewayBefore = await chain.contracts.token.balanceOf(gatewayWallet.address);
    const arbiterKey = await keystoreOf(chain.wallets[9], path.join(tmp.dir, 'arbiter.json'));
    const ruled = await runCli(['arbiter', '--data', path.join(tmp.dir, 'arbiter'), '--chain-config', chain.configPath, '--wallet', arbiterKey, '--bootstrap', bootstrap, '--network', 'local', '--once', '--json'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(ruled.code, ruled.stderr.slice(-2000)).toBe(0);
    const { rulings } = JSON.parse(ruled.stdout.trim().split('\n').at(-1)!) as { rulings: { id: string; upheld: boolean; reason: string }[] };
    expect(rulings.map((r) => [r.id, r.upheld])).toEqual([[id.toString(), true]]);
    expect((await chain.contracts.disputeManager!.getDispute(id)).status).toBe(BigInt(DisputeStatus.Upheld));
    // The deployer is not the arbiter: it cannot resolve (the role is the service's).
    const wrong = await runCli(['arbiter', '--data', path.join(tmp.dir, 'arbiter-deployer'), '--chain-config', chain.configPath, '--wallet', await keystoreOf(chain.wallets[0], path.join(tmp.dir, 'owner.json')), '--bootstrap', bootstrap, '--once'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/is not the DisputeManager's arbiter/);
    const slash = await chain.contracts.disputeManager!.slashAmount();
    const bond = await chain.contracts.disputeManager!.disputeBond();
    const stakeOf = async (w: Wallet) => (await chain.contracts.stakeRegistry.stakeOf(w.address)).staked;
    expect(await stakeOf(wCheat)).toBe(STAKE - slash);
    expect(await stakeOf(w0)).toBe(STAKE);
    expect(await stakeOf(w3)).toBe(STAKE);
    expect(await stakeOf(wChecker)).toBe(STAKE);
    expect(await chain.contracts.token.balanceOf(gatewayWallet.address)).toBe(gatewayBefore + slash / 2n + bond);

    // A restart resumes nothing (the dispute is filed) and files nothing twice.
    const again = new DisputeFiler({ dir: disputesDir, account: await actingAs(chain.config, gatewayWallet), chainId: chain.config.chainId });
    await again.resume();
    expect(again.filed).toEqual([]);
    expect(await chain.contracts.disputeManager!.disputeCount()).toBe(1n);
    expect(existsSync(disputesDir)).toBe(true);
  }, 300_000);
});
