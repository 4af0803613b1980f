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
import { generate, type GenerateOptions } from '../../scheduler/generate.js';
import { Verifier, type Verdict } from '../../gateway/verify/verifier.js';
import { DisputeFiler } from '../../gateway/verify/dispute-filer.js';
import { Withholding, PaymentWithheldError } from '../../gateway/verify/withholding-payer.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import { actingAs, DisputeStatus } from '../../contracts/index.js';
import type { Manifest } from '../../fragments/manifest.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/swarm.js';
import { keystoreOf, PASSPHRASE, smallGpt, startPaymentChain, TOKEN, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir();
const PRICE = '1000000000000'; // base units per GFLOP
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 8;
const STAKE = 100n * TOKEN;
let chain: PaymentChain;
let manifest: Manifest;
let fragDir: string;
let bootstrap: string;
let client: GridClient;
let model: OpenModel;
let payer: VoucherPayer;
const procs: RunningProcess[] = [];
let paidChecker: { peerId: string };

async function start(name: string, fragments: string, opts: { wallet?: Wallet; env?: NodeJS.ProcessEnv; extra?: string[] } = {}): Promise<{ peerId: string; address: string; proc: RunningProcess }> {
  const args = ['supply', '--data', path.join(tmp.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--network', 'local', '--host', fragDir, '--fragments', fragments, '--json'];
  if (bootstrap) args.push('--bootstrap', bootstrap);
  if (opts.wallet) args.push('--wallet', await keystoreOf(opts.wallet, path.join(tmp.dir, `${name}.json`)), '--chain-config', chain.configPath, '--price-per-gflop', PRICE);
  const proc = startGridpipe([...args, ...(opts.extra ?? [])], { GRIDPIPE_PASSPHRASE: PASSPHRASE, ...opts.env });
  procs.push(proc);
  const ready = (await proc.ready) as { peerId: string; addresses: string[] };
  return { peerId: ready.peerId, address: ready.addresses[0], proc };
}

function options(): GenerateOptions {
  return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  ({ manifest, fragDir } = await smallGpt(tmp.dir, 4));
  for (const w of chain.wallets.slice(1, 8)) await chain.mint(w.address, 1_000_000n);
  const [, w0, w3, wCheat, , wChecker] = chain.wallets;
  for (const w of [w0, w3, wCheat, wChecker]) await chain.stake(w, STAKE);
  // The arbiter is its own account (the arbiter service's key), not the deployer.
  await (await chain.contracts.disputeManager!.setArbiter(chain.wallets[9].address)).wait();
  const first = await start('h0', '0', { wallet: w0 });
  bootstrap = first.address;
  // h2 is free, so routing (price weighed against time) would prefer it to the paid cheater whenever it looks fast:
  // it advertises a crawl and is never routed to, only asked to check and referee.
  [, paidChecker] = await Promise.all([start('h3', '3', { wallet: w3 }), start('h1', '1,2', { wallet: wChecker }), start('h2', '1,2', { extra: ['--gflops', '0.001'] })]);
  // Routing must pick the cheater for the test to check it (test/verify/cheaters.test.ts does the same).
  client = await GridClient.connect({ bootstrap: [bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 }, estimates: { maxAdvertisedGflops: 1e7, defaultRttMs: 0 } });
  model = await client.openModel(fragDir);
  await chain.deposit(chain.wallets[4], 10_000n * TOKEN);
  payer = await VoucherPayer.open({ chain: { chainConfig: chain.config, wallet: chain.wallets[4] }, dataDir: path.join(tmp.dir, 'gateway') });
}, 180_000);

afterAll(async () => {
  await payer?.close();
  await client?.close();
  await Promise.all(procs.map((p) => p.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

describe('disputes end to end (anvil, paid supplier processes, GRIDPIPE_TEST_FAULT)', () => {
  it('a cheater is condemned, the dispute filed and upheld, its stake slashed and the challenger paid; its payments withheld; honest stakes untouched', async () => {
    const [, w0, w3, wCheat, gatewayWallet, wChecker] = chain.wallets;
    const cheater = await start('cheat', '1,2', { wallet: wCheat, env: { GRIDPIPE_TEST_FAULT: 'noise' }, extra: ['--gflops', '1000000'] });
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
      const session = client.session(model, PROMPT.length + MAX_TOKENS, { payer: paying, observer: verifier.observe(model, PROMPT.length + MAX_TOKENS) });
      try {
        for await (const _ of generate(session, options())) void _;
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
    const ruled = await runCli(['arbiter', '--chain-config', chain.configPath, '--wallet', arbiterKey, '--bootstrap', bootstrap, '--network', 'local', '--once', '--json'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(ruled.code, ruled.stderr.slice(-2000)).toBe(0);
    const { rulings } = JSON.parse(ruled.stdout.trim().split('\n').at(-1)!) as { rulings: { id: string; upheld: boolean; reason: string }[] };
    expect(rulings.map((r) => [r.id, r.upheld])).toEqual([[id.toString(), true]]);
    expect((await chain.contracts.disputeManager!.getDispute(id)).status).toBe(BigInt(DisputeStatus.Upheld));
    // The deployer is not the arbiter: it cannot resolve (the role is the service's).
    const wrong = await runCli(['arbiter', '--chain-config', chain.configPath, '--wallet', await keystoreOf(chain.wallets[0], path.join(tmp.dir, 'owner.json')), '--bootstrap', bootstrap, '--once'], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
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
