/**
 * Issue 21, the arbiter pays: on a grid where every host of the disputed span charges, the arbiter service
 * (`gridpipe arbiter`, its own account and escrow) pays its referees with vouchers priced like a session's step,
 * within its price limits and its ceiling per re-run, and upholds the dispute against a cheater. Real parts
 * only: anvil, staked paid supplier processes (the cheater started with GRIDPIPE_TEST_FAULT=noise), the
 * gateway's verifier and dispute filer, the arbiter CLI.
 *
 * Layout: a 4-layer GPT in 4 fragments, "0" and "3" on paid suppliers; the span "1,2" on the paid cheater and on
 * two paid honest hosts (checker and referee for the verifier, then the arbiter's two referees). No free host.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { GridClient, type OpenModel } from '../../scheduler/client.js';
import { generate } from '../../scheduler/generate.js';
import { Verifier, type Verdict } from '../../gateway/verify/verifier.js';
import { DisputeFiler } from '../../gateway/verify/dispute-filer.js';
import { evidenceFromJson } from '../../gateway/verify/dispute-evidence.js';
import { chunkInputs } from '../../gateway/verify/arbiter.js';
import { chunkTokensOf, GridRerunner } from '../../gateway/verify/grid-rerunner.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import { actingAs, DisputeStatus } from '../../contracts/index.js';
import { stepCharge } from '../../policy/pricing.js';
import { DEFAULT_PRICE_LIMITS } from '../../policy/price-limits.js';
import type { Manifest } from '../../fragments/manifest.js';
import { tempDir } from '../helpers/tmp.js';
import { DisputeGrid, PRICE, SESSION_LENGTH, STAKE } from './dispute-grid.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/swarm.js';
import { keystoreOf, PASSPHRASE, TOKEN, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir();
let grid: DisputeGrid;
let chain: PaymentChain;
let manifest: Manifest;
let bootstrap: string;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;

beforeAll(async () => {
  grid = await DisputeGrid.open(tmp.dir);
  ({ chain, manifest } = grid);
  const [, w0, w3, wCheat, , wA, wB] = chain.wallets;
  for (const w of [w0, w3, wCheat, wA, wB]) await chain.stake(w, STAKE);
  bootstrap = (await grid.start('h0', '0', { wallet: w0 })).address;
  // The honest hosts of the span advertise a crawl so routing picks the cheater; they check and referee.
  await Promise.all([grid.start('h3', '3', { wallet: w3 }), grid.start('hA', '1,2', { wallet: wA, extra: ['--gflops', '0.001'] }), grid.start('hB', '1,2', { wallet: wB, extra: ['--gflops', '0.001'] })]);
  ({ client, model } = await grid.connect({ estimates: { maxAdvertisedGflops: 1e7, defaultRttMs: 0 } }));
  payer = await grid.openPayer();
}, 180_000);

afterAll(async () => {
  await grid?.close();
  tmp.cleanup();
});

describe('the arbiter pays its referees (anvil, every host of the span paid)', () => {
  it('upholds a dispute against a cheater on an all-paid span, paying each referee exactly what it charged, within its limits', async () => {
    const [, , , wCheat, gatewayWallet, wA, wB, , , wArbiter] = chain.wallets;
    const cheater = await grid.start('cheat', '1,2', { wallet: wCheat, env: { GRIDPIPE_TEST_FAULT: 'noise' }, extra: ['--gflops', '1000000'] });
    await waitFor(async () => (await model.discovery.refresh()).length === 5, 'five suppliers in view', 60_000, 250);
    expect((await model.discovery.refresh()).every((s) => s.pricePerGflop === PRICE), 'every host charges').toBe(true);

    const filer = new DisputeFiler({ dir: path.join(tmp.dir, 'gateway', 'disputes'), account: await actingAs(chain.config, gatewayWallet), chainId: chain.config.chainId });
    const verdicts: Verdict[] = [];
    const verifier = new Verifier({ host: client.host, swarm: client.swarm, rate: 1, payer, onVerdict: (v, e) => { verdicts.push(v); filer.onVerdict(v, e); } });
    for (let i = 0; i < 12 && !verdicts.length; i++) {
      const session = client.session(model, SESSION_LENGTH, { payer, observer: verifier.observe(model, SESSION_LENGTH) });
      try {
        for await (const _ of generate(session, grid.options())) void _;
      } finally {
        await session.close();
      }
      await verifier.idle();
    }
    expect(verdicts.map((v) => [v.result, v.supplier])).toEqual([['supplier-condemned', cheater.peerId]]);
    await filer.idle();
    expect(filer.filed.map((f) => [f.state, f.supplier])).toEqual([['filed', wCheat.address]]);
    const id = filer.filed[0].disputeId!;

    // What each referee charges for the evidence's re-run: the span's step priced on the positions each chunk adds.
    const [record] = await filer.records();
    const evidence = evidenceFromJson(record.evidence);
    const tokens = chunkTokensOf(evidence.context)!;
    expect(tokens.reduce((a, t) => a + t, 0)).toBe(evidence.context.chunks.at(-1)!.position + tokens.at(-1)!);
    const charge = stepCharge(manifest, BigInt(PRICE), { start: evidence.context.start, end: evidence.context.end, chunkTokens: tokens });
    expect(charge).toBeGreaterThan(0n);

    // Limits hold, in process with the arbiter's own payer: a ceiling per re-run below the charge, or a price
    // maximum below the hosts' price, asks no host and signs nothing.
    await chain.deposit(wArbiter, 1_000n * TOKEN);
    const probeDir = path.join(tmp.dir, 'arbiter-probe');
    const probePayer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: wArbiter }, dataDir: probeDir, windowSteps: 0 });
    try {
      const chunks = chunkInputs(evidence.inputs, evidence.context)!;
      const capped = new GridRerunner(client, { payer: probePayer, maxRerunCharge: charge - 1n });
      expect(await capped.rerun(evidence.context, chunks, wCheat.address, 2)).toEqual([]);
      const cheapOnly = new GridRerunner(client, { payer: probePayer, priceLimits: { ...DEFAULT_PRICE_LIMITS, maxPricePerGflop: BigInt(PRICE) - 1n } });
      expect(await cheapOnly.rerun(evidence.context, chunks, wCheat.address, 2)).toEqual([]);
      const unpaid = new GridRerunner(client);
      expect(await unpaid.rerun(evidence.context, chunks, wCheat.address, 2)).toEqual([]);
      expect([...capped.payments, ...cheapOnly.payments, ...unpaid.payments]).toEqual([]);
      expect(probePayer.totals().filter((t) => t.signed > 0n)).toEqual([]);
    } finally {
      await probePayer.close();
    }

    // The arbiter service pays both honest hosts of the span and upholds.
    const arbiterData = path.join(tmp.dir, 'arbiter');
    const ruled = await runCli(['arbiter', '--chain-config', chain.configPath, '--wallet', await keystoreOf(wArbiter, path.join(tmp.dir, 'arbiter.json')), '--bootstrap', bootstrap,
      '--network', 'local', '--data', arbiterData, '--once', '--json'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(ruled.code, ruled.stderr.slice(-2000)).toBe(0);
    const out = JSON.parse(ruled.stdout.trim().split('\n').at(-1)!) as { rulings: { id: string; upheld: boolean; reason: string }[]; payments: { peerId: string; payee: string; charge: string }[] };
    expect(out.rulings.map((r) => [r.id, r.upheld])).toEqual([[id.toString(), true]]);
    expect((await chain.contracts.disputeManager!.getDispute(id)).status).toBe(BigInt(DisputeStatus.Upheld));
    expect(out.payments.map((p) => [p.payee, p.charge]).sort()).toEqual([[wA.address, charge.toString()], [wB.address, charge.toString()]].sort());
    // The arbiter's ledger: exactly the charge signed to each referee, nothing to the accused.
    const ledger = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: wArbiter }, dataDir: path.join(arbiterData, 'payer') });
    try {
      expect(ledger.totals().map((t) => [t.payee, t.signed]).sort()).toEqual([[wA.address, charge], [wB.address, charge]].sort());
    } finally {
      await ledger.close();
    }
    expect((await chain.contracts.stakeRegistry.stakeOf(wCheat.address)).staked).toBe(STAKE - (await chain.contracts.disputeManager!.slashAmount()));
    for (const w of [wA, wB]) expect((await chain.contracts.stakeRegistry.stakeOf(w.address)).staked).toBe(STAKE);
  }, 300_000);
});
