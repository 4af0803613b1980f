/**
 * Issue 21, a cheater caught while checking: a paid host that returns wrong outputs when the verifier asks it to
 * check another supplier's work is outvoted by the supplier and the referee, condemned, withheld and disputed
 * like a supplier, with the receipt it signed for its own re-run as the evidence; the arbiter service (paying
 * its referees) upholds and its stake is slashed. Real parts only: anvil, staked paid supplier processes (the
 * cheater started with GRIDPIPE_TEST_FAULT=noise), the gateway's verifier, DisputeDesk's filer, the arbiter CLI.
 *
 * Layout: a 4-layer GPT in 4 fragments, "0" and "3" on paid suppliers; the span "1,2" on two honest paid hosts
 * (routed) and on the paid cheater, which advertises a crawl so routing never picks it: it only ever checks.
 * The verifier draws its checker at random among the span's other hosts, so within a few sessions the cheater
 * is drawn (each session: one chance in two).
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import type { Wallet } from 'ethers';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate } from '../../scheduler/generate.js';
import { Verifier, type Verdict } from '../../gateway/verify/verifier.js';
import { DisputeFiler } from '../../gateway/verify/dispute-filer.js';
import { Withholding, PaymentWithheldError } from '../../gateway/verify/withholding-payer.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import { actingAs, DisputeStatus } from '../../contracts/index.js';
import { tempDir } from '../helpers/tmp.js';
import { DisputeGrid, PRICE, SESSION_LENGTH, STAKE } from './dispute-grid.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/swarm.js';
import { keystoreOf, PASSPHRASE, TOKEN, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir();
let grid: DisputeGrid;
let chain: PaymentChain;
let bootstrap: string;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;

beforeAll(async () => {
  grid = await DisputeGrid.open(tmp.dir);
  ({ chain } = grid);
  const [, w0, w3, wS, , wR, wCheat] = chain.wallets;
  for (const w of [w0, w3, wS, wR, wCheat]) await chain.stake(w, STAKE);
  bootstrap = (await grid.start('h0', '0', { wallet: w0 })).address;
  await Promise.all([grid.start('h3', '3', { wallet: w3 }), grid.start('hS', '1,2', { wallet: wS }), grid.start('hR', '1,2', { wallet: wR })]);
  ({ client, model } = await grid.connect());
  await chain.deposit(chain.wallets[9], 1_000n * TOKEN);
  payer = await grid.openPayer();
}, 180_000);

afterAll(async () => {
  await grid?.close();
  tmp.cleanup();
});

describe('a cheater caught while checking is disputed too (anvil, paid supplier processes)', () => {
  it('the checker outvoted by supplier and referee is condemned, withheld, disputed with its own receipt, and slashed by the arbiter', async () => {
    const [, w0, w3, wS, gatewayWallet, wR, wCheat] = chain.wallets;
    const cheater = await grid.start('cheat', '1,2', { wallet: wCheat, env: { GRIDPIPE_TEST_FAULT: 'noise' }, extra: ['--gflops', '0.001'] });
    await waitFor(async () => (await model.discovery.refresh()).length === 5, 'five suppliers in view', 60_000, 250);

    const withholding = new Withholding();
    const filer = new DisputeFiler({ dir: path.join(tmp.dir, 'gateway', 'disputes'), account: await actingAs(chain.config, gatewayWallet), chainId: chain.config.chainId });
    const verdicts: Verdict[] = [];
    const paying = withholding.wrap(payer);
    const verifier = new Verifier({
      host: client.host, swarm: client.swarm, rate: 1, payer: paying,
      onVerdict: (v, e) => { verdicts.push(v); if (e.checkerHost && v.result === 'checker-condemned') withholding.withhold(e.checkerHost.stakingAddress); filer.onVerdict(v, e); },
    });
    const routed = new Set<string>();
    for (let i = 0; i < 16 && !verdicts.length; i++) {
      const session = client.session(model, SESSION_LENGTH, { payer: paying, observer: verifier.observe(model, SESSION_LENGTH) });
      try {
        for await (const _ of generate(session, grid.options())) void _;
      } finally {
        await session.close();
      }
      for (const r of session.route) routed.add(r.peerId);
      await verifier.idle();
    }
    expect(routed.has(cheater.peerId), 'routing never picked the crawling cheater').toBe(false);
    expect(verdicts.map((v) => [v.result, v.checker])).toEqual([['checker-condemned', cheater.peerId]]);
    expect(client.swarm.estimates.isCondemned(cheater.peerId)).toBe(true);
    await expect(paying.voucherFor({ peerId: cheater.peerId, stakingAddress: wCheat.address, pricePerGflop: PRICE }, 1n)).rejects.toBeInstanceOf(PaymentWithheldError);

    // Filed against the checker, on the receipt it signed for the verifier's re-run.
    await filer.idle();
    expect(filer.filed.map((f) => [f.state, f.peerId, f.supplier, f.error])).toEqual([['filed', cheater.peerId, wCheat.address, undefined]]);
    const id = filer.filed[0].disputeId!;
    const [record] = await filer.records();
    expect(record.evidence.receipt.supplier).toBe(wCheat.address);
    expect(record.evidence.context.reduction.sampled).toBeUndefined();
    const dispute = await chain.contracts.disputeManager!.getDispute(id);
    expect([dispute.supplier, dispute.challenger, dispute.status]).toEqual([wCheat.address, gatewayWallet.address, BigInt(DisputeStatus.Open)]);

    // The arbiter re-runs the evidence on the two honest hosts (paying them) and upholds.
    const ruled = await runCli(['arbiter', '--chain-config', chain.configPath, '--wallet', await keystoreOf(chain.wallets[9], path.join(tmp.dir, 'arbiter.json')), '--bootstrap', bootstrap,
      '--network', 'local', '--data', path.join(tmp.dir, 'arbiter'), '--once', '--json'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(ruled.code, ruled.stderr.slice(-2000)).toBe(0);
    const out = JSON.parse(ruled.stdout.trim().split('\n').at(-1)!) as { rulings: { id: string; upheld: boolean }[]; payments: { payee: string }[] };
    expect(out.rulings.map((r) => [r.id, r.upheld])).toEqual([[id.toString(), true]]);
    expect(out.payments.map((p) => p.payee).sort()).toEqual([wS.address, wR.address].sort());
    const stakeOf = async (w: Wallet) => (await chain.contracts.stakeRegistry.stakeOf(w.address)).staked;
    expect(await stakeOf(wCheat)).toBe(STAKE - (await chain.contracts.disputeManager!.slashAmount()));
    for (const w of [w0, w3, wS, wR]) expect(await stakeOf(w)).toBe(STAKE);
  }, 300_000);
});
