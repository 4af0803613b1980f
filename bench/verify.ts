/**
 * `npm run bench -- verify`: what the gateway's verifier (gateway/verify/) catches and what it costs, on real
 * supplier processes on 127.0.0.1 (a 4-layer GPT, d 128, cut in 4 fragments; every span on two honest
 * suppliers so every link can be checked).
 * - false_positives: checks of honest work that did not agree, over at least 1,000 checked honest steps
 *   (rate 1: every link of every session checked). Goal 0.
 * - detected (of 4) and max_detection_steps_<fault>: for each cheat (GRIDPIPE_TEST_FAULT noise, swap,
 *   skip-layer, int8), a cheater joins the middle span; sessions run until it is condemned; the figure is the
 *   cheater's steps checked until then (one session's worth when the first check of its work catches it).
 * - overhead_ratio: verification compute ÷ grid compute at the default rate, from client-measured wall times:
 *   the rate × (time of the verifier's re-runs ÷ time of the grid's hops) measured at rate 1
 *   (overhead_per_check). Goal ≤ 0.05.
 * - slashed_<fault> (1/0) and slashed (of 4): each cheater is staked and paid on a local anvil chain; the
 *   dispute filer files the evidence of its condemnation, the arbiter service re-runs it and rules; 1 when its
 *   stake lost slashAmount through that flow (issue 21).
 */
import '../net/polyfill.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { cidOfFile } from '../fragments/cid.js';
import { GridClient } from '../scheduler/client.js';
import { generate, type GenerateOptions } from '../scheduler/generate.js';
import { Verifier, type Verdict } from '../gateway/verify/verifier.js';
import { DEFAULT_VERIFY_RATE } from '../policy/verification.js';
import { spawnGridpipe, type GridpipeProcess } from '../cli/spawn.js';
import { reportResult } from './report.js';
import { Wallet, parseUnits } from 'ethers';
import { actingAs, createProvider, deployGrid, deposit, stake, startAnvil, type AnvilNode } from '../contracts/index.js';
import { saveKeystore } from '../contracts/wallet.js';
import { VoucherPayer } from '../gateway/payer/index.js';
import { DisputeFiler } from '../gateway/verify/dispute-filer.js';
import { Arbiter } from '../gateway/verify/arbiter.js';
import { GridRerunner } from '../gateway/verify/grid-rerunner.js';

const PROMPT = Array.from({ length: 16 }, (_, i) => 40 + i);
const DECODE = 24;
const HONEST_STEPS_GOAL = 1000;
const FAULTS = ['noise', 'swap', 'skip-layer', 'int8'] as const;

/** Runs the benchmark. */
export async function verifyBench(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-verify-'));
  const procs: GridpipeProcess[] = [];
  const stopping = new Set<GridpipeProcess>();
  const start = async (name: string, fragments: string, host: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<{ peerId: string; address: string; proc: GridpipeProcess }> => {
    const proc = spawnGridpipe(['supply', '--data', path.join(dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--host', host, '--fragments', fragments, '--json', ...extra], { env: { GRIDPIPE_LOG_LEVEL: 'warn', ...env } });
    procs.push(proc);
    void proc.exited.then((code) => { if (!stopping.has(proc)) process.stderr.write(`supplier ${name} exited (${code}):\n${proc.output().slice(-3000)}\n`); });
    const ready = (await proc.ready) as { peerId: string; addresses: string[] };
    return { peerId: ready.peerId, address: ready.addresses[0], proc };
  };
  let client: GridClient | undefined;
  let cheatClient: GridClient | undefined;
  let anvil: AnvilNode | undefined;
  let payer: VoucherPayer | undefined;
  try {
    const modelPath = path.join(dir, 'gpt.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 128, heads: 4, kvCache: true, seed: 2121 }), modelPath);
    const fragDir = path.join(dir, 'frags');
    const { manifest } = await fragmentModel(modelPath, fragDir, { parts: 4 });
    const manifestCid = await cidOfFile(path.join(fragDir, 'manifest.json'));
    const first = await start('a0', '0', fragDir);
    const join = ['--bootstrap', first.address];
    await Promise.all([start('b0', '0', manifestCid, {}, join), start('a1', '1,2', manifestCid, {}, join), start('b1', '1,2', manifestCid, {}, join), start('a3', '3', manifestCid, {}, join), start('b3', '3', manifestCid, {}, join)]);
    client = await GridClient.connect({ bootstrap: [first.address], network: 'local', discovery: { lookupTimeoutMs: 5000 } });
    const model = await client.openModel(fragDir);
    await waitUntil(async () => (await model.discovery.refresh()).length === 6, 'six honest suppliers in view');
    const options: GenerateOptions = { promptIds: PROMPT, maxTokens: DECODE, kvCache: true, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
    let failedSessions = 0;
    const session = async (verifier: Verifier): Promise<string[]> => {
      const s = client!.session(model, PROMPT.length + DECODE, { observer: verifier.observe(model, PROMPT.length + DECODE) });
      try {
        for await (const _ of generate(s, options)) { /* tokens */ }
      } catch (err) {
        failedSessions++;
        process.stderr.write(`session failed: ${(err as Error).message}\n`);
        await new Promise((r) => setTimeout(r, 2000));
      } finally {
        await s.close();
      }
      await verifier.idle();
      return s.route.map((r) => r.peerId);
    };

    // Honest grid, every link checked.
    const honestVerdicts: Verdict[] = [];
    let mismatches = 0;
    const honest = new Verifier({
      host: client.host, swarm: client.swarm, rate: 1, onVerdict: (v) => honestVerdicts.push(v),
      onCheck: (v) => { if (v.result !== 'agree' && v.result !== 'unchecked') mismatches++; },
    });
    let honestSessions = 0;
    while (honest.stats.checkedSteps < HONEST_STEPS_GOAL) { await session(honest); honestSessions++; }
    const overheadPerCheck = honest.stats.verifyMs / honest.stats.gridMs;

    // The chain the cheaters stake on (issue 21): anvil, the contracts, an arbiter account, a paying gateway.
    anvil = await startAnvil({ accounts: 10 });
    const provider = createProvider(anvil.rpcUrl, anvil.chainId);
    const wallets = anvil.accounts.map((a) => new Wallet(a.privateKey, provider));
    const [owner, gatewayWallet] = wallets;
    const arbiterWallet = wallets[9];
    const configPath = path.join(dir, 'chain.json');
    const unit = 10n ** 18n;
    const { config, contracts } = await deployGrid({
      rpcUrl: anvil.rpcUrl, signer: owner, configPath,
      params: { minimumStake: 100n * unit, unbondingDelay: 1000, withdrawalDelay: 500, dispute: { challengeWindow: 600, slashAmount: 50n * unit, disputeBond: 10n * unit, challengerRewardBps: 5000, arbiter: arbiterWallet.address } },
    });
    for (const w of wallets.slice(1, 9)) await (await contracts.token.mint(w.address, 1000n * unit)).wait();
    await deposit(await actingAs(config, gatewayWallet), { amount: 500n * unit });
    payer = await VoucherPayer.open({ chain: { chainConfig: config, wallet: gatewayWallet }, dataDir: path.join(dir, 'gateway') });
    const filer = new DisputeFiler({ dir: path.join(dir, 'gateway', 'disputes'), account: await actingAs(config, gatewayWallet), chainId: config.chainId });
    // The cheaters advertise a high speed and this client believes it, so routing picks each one at once.
    cheatClient = await GridClient.connect({ bootstrap: [first.address], network: 'local', discovery: { lookupTimeoutMs: 5000 }, estimates: { maxAdvertisedGflops: 1e7, defaultRttMs: 0 } });
    const cheatModel = await cheatClient.openModel(fragDir);
    const arbiter = new Arbiter({ disputeManager: contracts.disputeManager!.connect(arbiterWallet), rerunner: new GridRerunner(cheatClient) });
    const slashAmount = await contracts.disputeManager!.slashAmount();

    // Each cheat in turn.
    const metrics: Record<string, number> = {};
    let detected = 0;
    let slashed = 0;
    for (const [n, fault] of FAULTS.entries()) {
      const wallet = wallets[3 + n];
      await stake(await actingAs(config, wallet), { amount: 100n * unit });
      const keystore = path.join(dir, `cheat-${fault}.json`);
      await saveKeystore(new Wallet(wallet.privateKey), keystore, { passphrase: 'bench', scryptN: 1024 });
      const paid = ['--wallet', keystore, '--chain-config', configPath, '--price-per-gflop', parseUnits('0.000001', 18).toString(), '--gflops', '1000000'];
      const cheater = await start(`cheat-${fault}`, '1,2', fragDir, { GRIDPIPE_TEST_FAULT: fault, GRIDPIPE_PASSPHRASE: 'bench' }, [...join, ...paid]);
      let seen: string[] = [];
      await waitUntil(async () => (seen = (await cheatModel.discovery.refresh()).map((s) => `${s.peerId}[${s.start}..${s.end}]`)).some((s) => s.startsWith(cheater.peerId)), `the ${fault} cheater in view`, 180_000)
        .catch((err: unknown) => { throw new Error(`${(err as Error).message}; in view: ${seen.join(', ')}; cheater output: ${cheater.proc.output().slice(-2000)}`); });
      const verdicts: Verdict[] = [];
      let cheaterSteps = 0;
      const verifier = new Verifier({
        host: cheatClient.host, swarm: cheatClient.swarm, rate: 1, onVerdict: (v, e) => { verdicts.push(v); filer.onVerdict(v, e); },
        onCheck: (v) => { if (v.supplier === cheater.peerId) cheaterSteps += v.steps; },
      });
      for (let i = 0; i < 30 && !verdicts.some((v) => v.supplier === cheater.peerId); i++) await paidSession(cheatClient, cheatModel, verifier, payer);
      const caught = verdicts.some((v) => v.result === 'supplier-condemned' && v.supplier === cheater.peerId);
      if (caught) detected++;
      metrics[`max_detection_steps_${fault.replace('-', '_')}`] = caught ? cheaterSteps : -1;
      await filer.idle();
      await arbiter.sweep();
      const lost = 100n * unit - (await contracts.stakeRegistry.stakeOf(wallet.address)).staked;
      const wasSlashed = lost === slashAmount ? 1 : 0;
      slashed += wasSlashed;
      metrics[`slashed_${fault.replace('-', '_')}`] = wasSlashed;
      stopping.add(cheater.proc);
      await cheater.proc.stop('SIGTERM');
    }
    metrics.slashed = slashed;
    metrics.disputes_filed = filer.filed.filter((f) => f.state === 'filed').length;
    provider.destroy();
    Object.assign(metrics, {
      detected,
      false_positives: mismatches + honestVerdicts.length,
      honest_checked_steps: honest.stats.checkedSteps,
      honest_sessions: honestSessions,
      overhead_per_check: round(overheadPerCheck),
      overhead_ratio: round(DEFAULT_VERIFY_RATE * overheadPerCheck),
      verify_rate: DEFAULT_VERIFY_RATE,
      failed_sessions: failedSessions,
    });
    reportResult('verify', metrics, `4-layer GPT d128 in 4 fragments, each span on 2 honest supplier processes (127.0.0.1); sessions of ${PROMPT.length} prompt + ${DECODE} decode steps. `
      + `Honest: rate 1 until >= ${HONEST_STEPS_GOAL} checked steps; false_positives = checks that did not agree. Cheats (GRIDPIPE_TEST_FAULT) on the middle span, rate 1; `
      + 'max_detection_steps = the cheater\'s steps checked until it was condemned (-1: not caught in 30 sessions). '
      + `overhead_ratio = ${DEFAULT_VERIFY_RATE} (default rate) x overhead_per_check (re-run wall time / grid hop wall time, client-measured, at rate 1). `
      + 'Slashing: each cheater staked 100 GRID and paid on anvil; slashed_<fault> = 1 when the gateway\'s filed dispute was upheld by the arbiter service (re-run on the free honest hosts) and 50 GRID left its stake.');
  } finally {
    await payer?.close().catch(() => undefined);
    await cheatClient?.close().catch(() => undefined);
    await client?.close().catch(() => undefined);
    for (const p of procs) stopping.add(p);
    await Promise.all(procs.map((p) => p.stop('SIGTERM').catch(() => undefined)));
    await anvil?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** One generation through a paid session the verifier observes; resolves once its checks have run. */
async function paidSession(client: GridClient, model: Awaited<ReturnType<GridClient['openModel']>>, verifier: Verifier, payer: VoucherPayer): Promise<void> {
  const s = client.session(model, PROMPT.length + DECODE, { payer, observer: verifier.observe(model, PROMPT.length + DECODE) });
  try {
    for await (const _ of generate(s, { promptIds: PROMPT, maxTokens: DECODE, kvCache: true, inputNames: model.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) })) { /* tokens */ }
  } catch (err) {
    process.stderr.write(`paid session failed: ${(err as Error).message}\n`);
  } finally {
    await s.close();
  }
  await verifier.idle();
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
