/**
 * Issue 13, attacks 1 and 6, against a real anvil chain, real supplier processes and real gateways:
 * a staked rogue supplier advertising an absurd price and a fake speed gets no work and no voucher, whether it
 * runs next to honest hosts or alone on a fragment (default price limits: 503; limits lifted: the request's cost
 * ceiling passes the key's budget, so 402 before any voucher); and 8 concurrent requests on a key with room for
 * about 3 never sign or spend more than the key's budget. The ledgers are read back from disk at the end.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Wallet } from 'ethers';
import { killAll, startGridpipe, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { admin, keystoreOf, PASSPHRASE, smallGpt, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier } from '../payments/helpers.js';
import { costCeiling } from '../../policy/price-limits.js';
import { PayerLedger } from '../../gateway/payer/ledger.js';
import { payerLedgerDir } from '../../gateway/payer/voucher-payer.js';
import { SpendingLedger } from '../../gateway/spending.js';
import type { Manifest } from '../../fragments/manifest.js';
import { WINDOW_MAX } from '../../gateway/payer/voucher-payer.js';

const tmp = tempDir('gridpipe-security-money-');
const PRICE = '1000000000000';
/** Absurd (5 × 10^11 × the honest price): a 6-token request on the rogue costs about 1,000 GRID, the payer's whole escrow. */
const ROGUE_PRICE = (5n * 10n ** 23n).toString();
const OPEN_KEY = 'gp-money-open-000001';
const RACE_KEY = 'gp-money-race-000001';
const CAPPED_KEY = 'gp-money-capped-00001';
const SMALL_KEY = 'gp-money-small-000001';
const PROMPT = [1, 2, 3, 4];
const MAX_TOKENS = 6;

let chain: PaymentChain;
let manifest: Manifest;
let fragDir: string;
let honestA: StartedSupplier;
let honestB: StartedSupplier | undefined;
let rogue: StartedSupplier;
const gateways: { proc: RunningProcess; url: string; data: string }[] = [];
let raceBudget: bigint;
let smallBudget: bigint;

interface Gridpipe { cost: string; route: { peerId: string }[] }
interface Answer {
  status: number;
  body: { choices?: { text: string; finish_reason: string }[]; usage?: { completion_tokens: number }; gridpipe?: Gridpipe; error?: { message: string; code: string } };
}
let model: string;

/** A completion of PROMPT; `maxTokens` null: the field is left out (the endpoint's default, 16). */
async function complete(url: string, key: string, maxTokens: number | null = MAX_TOKENS): Promise<Answer> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, prompt: PROMPT, ...(maxTokens === null ? {} : { max_tokens: maxTokens }), temperature: 0 }),
  });
  return { status: res.status, body: await res.json() as Answer['body'] };
}

async function startGateway(name: string, payer: Wallet, keys: Record<string, unknown>, extra: string[] = []): Promise<{ proc: RunningProcess; url: string; data: string }> {
  const keysFile = path.join(tmp.dir, `${name}-keys.json`);
  writeFileSync(keysFile, JSON.stringify({ keys }));
  const data = path.join(tmp.dir, name);
  const proc = startGridpipe(['gateway', '--port', '0', '--bootstrap', honestA.addresses[0], '--keys', keysFile, '--chain-config', chain.configPath,
    '--wallet', await keystoreOf(payer, path.join(tmp.dir, `${name}-payer.json`)), '--data', data, '--model', fragDir, '--json', ...extra], { GRIDPIPE_PASSPHRASE: PASSPHRASE });
  const ready = (await proc.ready) as { url: string; payments: boolean; models: string[] };
  expect(ready.payments).toBe(true);
  model = ready.models[0];
  const gw = { proc, url: ready.url, data };
  gateways.push(gw);
  return gw;
}

async function accrued(s: StartedSupplier): Promise<bigint> {
  return BigInt(String((await admin(s.admin, '/payments')).accrued));
}

async function vouchered(s: StartedSupplier): Promise<bigint> {
  return BigInt(String((await admin(s.admin, '/payments')).vouchered));
}

/** Polls until `check` holds (a hang guard, not a timing assertion). */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  ({ fragDir, manifest } = await smallGpt(tmp.dir, 2));
  const [, wa, wb, wr, wp, wq] = chain.wallets;
  for (const w of [wa, wb, wr, wp, wq]) await chain.mint(w.address, 1_000_000n);
  for (const w of [wa, wb, wr]) await chain.stake(w, 100n * TOKEN);
  for (const w of [wp, wq]) await chain.deposit(w, 1000n * TOKEN);
  honestA = await startSupplier({ data: path.join(tmp.dir, 'a'), fragDir, fragments: '0', wallet: await keystoreOf(wa, path.join(tmp.dir, 'a.json')), chainConfig: chain.configPath, price: PRICE });
  // The rogue: staked, hosts the whole model, claims a million GFLOP/s and asks an absurd price.
  rogue = await startSupplier({
    data: path.join(tmp.dir, 'rogue'), fragDir, fragments: '0,1', bootstrap: honestA.addresses[0], wallet: await keystoreOf(wr, path.join(tmp.dir, 'rogue.json')),
    chainConfig: chain.configPath, price: ROGUE_PRICE, extra: ['--gflops', '1000000'],
  });
  // A request's cost at the honest price (both fragments at PRICE): a key with room for about 3 of them.
  raceBudget = (costCeiling(manifest, [BigInt(PRICE), BigInt(PRICE)], { positions: PROMPT.length + MAX_TOKENS, steps: MAX_TOKENS + 1 }) * 7n) / 2n;
  // Room for the ceiling of 3 new tokens, not 4.
  smallBudget = costCeiling(manifest, [BigInt(PRICE), BigInt(PRICE)], { positions: PROMPT.length + 3, steps: 4 });
  await startGateway('default-limits', wp, {
    [OPEN_KEY]: { name: 'open' }, [RACE_KEY]: { name: 'race', budget: raceBudget.toString() }, [SMALL_KEY]: { name: 'small', budget: smallBudget.toString() },
  });
  // An operator who lifted the price limits: only the key's budget stands between the rogue and the escrow.
  await startGateway('no-limits', wq, { [CAPPED_KEY]: { name: 'capped', budget: (100n * TOKEN).toString() } }, ['--max-price-per-gflop', ROGUE_PRICE, '--max-over-median', '1e30']);
}, 180_000);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.proc.stop('SIGTERM')));
  await Promise.all([honestA, honestB, rogue].filter((s): s is StartedSupplier => Boolean(s)).map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

describe('no escrow drain through a price (attack 1)', () => {
  it('refuses the request when the rogue is the only host of a fragment, signing nothing', async () => {
    const [limited, lifted] = gateways;
    const refused = await complete(limited.url, OPEN_KEY);
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.error!.code).toBe('no_acceptable_host');
    expect(refused.body.error!.message).toMatch(new RegExp(`${rogue.peerId} is refused: it asks ${ROGUE_PRICE} base units per GFLOP`));

    // Limits lifted: the rogue is routable, but the request's ceiling at its price passes the key's 100 GRID.
    const overBudget = await complete(lifted.url, CAPPED_KEY);
    expect(overBudget.status, JSON.stringify(overBudget.body)).toBe(402);
    expect(overBudget.body.error!.code).toBe('insufficient_quota');
    expect(overBudget.body.error!.message).toMatch(/may cost up to \d+ base units .* has 100000000000000000000 left/);
    expect(await vouchered(rogue)).toBe(0n);
    expect(await vouchered(honestA)).toBe(0n);
  });

  it('gives the rogue no work next to honest hosts (cheaper wins, fake speed or not)', async () => {
    const [limited] = gateways;
    honestB = await startSupplier({ data: path.join(tmp.dir, 'b'), fragDir, fragments: '1', bootstrap: honestA.addresses[0], wallet: await keystoreOf(chain.wallets[2], path.join(tmp.dir, 'b.json')), chainConfig: chain.configPath, price: PRICE });
    await until(async () => (await complete(limited.url, OPEN_KEY, 1)).status === 200, 'the honest host of fragment 1 to be routable');
    for (let i = 0; i < 3; i++) {
      const done = await complete(limited.url, OPEN_KEY);
      expect(done.status, JSON.stringify(done.body)).toBe(200);
      expect(done.body.gridpipe!.route.map((r) => r.peerId)).toEqual([honestA.peerId, honestB.peerId]);
    }
    expect(await vouchered(rogue)).toBe(0n);
    expect(BigInt(String((await admin(rogue.admin, '/payments')).accrued))).toBe(0n);
  });
});

describe('no budget race (attack 6)', () => {
  it('refuses a max_tokens the key cannot pay for up front; an unset one shrinks to what it can', async () => {
    const [limited] = gateways;
    const refused = await complete(limited.url, SMALL_KEY, 16);
    expect(refused.status, JSON.stringify(refused.body)).toBe(402);
    expect(refused.body.error!.message).toMatch(new RegExp(`up to 16 new\\) may cost up to \\d+ base units .* has ${smallBudget} left`));
    const shrunk = await complete(limited.url, SMALL_KEY, null);
    expect(shrunk.status, JSON.stringify(shrunk.body)).toBe(200);
    expect(shrunk.body.usage!.completion_tokens).toBe(3);
    expect(shrunk.body.choices![0].finish_reason).toBe('length');
    expect(BigInt(shrunk.body.gridpipe!.cost)).toBeLessThanOrEqual(smallBudget);
  });

  it('8 concurrent requests on a key with room for about 3 spend at most its budget, and the payer signs at most one window more', async () => {
    const [limited] = gateways;
    const before = (await vouchered(honestA)) + (await vouchered(honestB!));
    const accruedBefore = (await accrued(honestA)) + (await accrued(honestB!));
    const answers = await Promise.all(Array.from({ length: 8 }, () => complete(limited.url, RACE_KEY)));
    const ok = answers.filter((a) => a.status === 200);
    for (const a of answers) expect([200, 402], JSON.stringify(a.body)).toContain(a.status);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    // Requests the budget cut short end like max_tokens (finish "length" with fewer tokens), or 402 with none.
    const tokens = ok.reduce((s, a) => s + a.body.usage!.completion_tokens, 0);
    expect(tokens).toBeLessThan(8 * MAX_TOKENS);
    const reported = ok.reduce((s, a) => s + BigInt(a.body.gridpipe!.cost), 0n);
    expect(reported).toBeLessThanOrEqual(raceBudget);
    // What the suppliers charged for this key's steps (the payer's only key in flight now) stays within its budget.
    const charged = (await accrued(honestA)) + (await accrued(honestB!)) - accruedBefore;
    expect(charged).toBeGreaterThan(0n);
    expect(charged).toBeLessThanOrEqual(raceBudget);
    // What they hold in vouchers is that plus the payer's float: one credit window per payee paid ahead
    // (issue 15), never more than WINDOW_MAX each, which the payer's later steps use up.
    // (A float left by the tests before may pay some of these steps, so `signed` can also be below `charged`.)
    const signed = (await vouchered(honestA)) + (await vouchered(honestB!)) - before;
    expect(signed).toBeGreaterThan(0n);
    expect(signed - charged).toBeLessThanOrEqual(2n * WINDOW_MAX);
    // Spent now: the next request finds no room for its ceiling.
    const next = await complete(limited.url, RACE_KEY);
    expect(next.status).toBe(402);
  });

  it('leaves ledgers on disk that agree: every key within budget, the rogue never paid', async () => {
    for (const g of gateways) expect(await g.proc.stop('SIGTERM')).toBeDefined();
    const [limited, lifted] = gateways;
    const spendingOf = async (data: string, key: string): Promise<bigint> => {
      const ledger = await SpendingLedger.open(path.join(data, 'spending'));
      try {
        return (await ledger.load([createHash('sha256').update(key).digest('hex')])).values().next().value!;
      } finally {
        await ledger.close();
      }
    };
    const race = await spendingOf(limited.data, RACE_KEY);
    expect(race).toBeGreaterThan(0n);
    expect(race).toBeLessThanOrEqual(raceBudget);
    expect(await spendingOf(lifted.data, CAPPED_KEY)).toBe(0n);
    const signedBy = async (data: string): Promise<Map<string, bigint>> => {
      const ledger = await PayerLedger.open(payerLedgerDir(path.join(data, 'payer', 'gateway')));
      try {
        const out = new Map<string, bigint>();
        for (const payer of [chain.wallets[4].address, chain.wallets[5].address]) for (const v of ledger.all(payer)) out.set(v.payee, v.cumulativeAmount);
        return out;
      } finally {
        await ledger.close();
      }
    };
    const limitedSigned = await signedBy(limited.data);
    expect(limitedSigned.has(chain.wallets[3].address)).toBe(false);
    // Everything the payer signed was charged to one of its keys, but for one credit window per payee paid ahead
    // (issue 15: at most WINDOW_MAX each; two honest payees were paid).
    const total = [...limitedSigned.values()].reduce((a, b) => a + b, 0n);
    const charged = race + await spendingOf(limited.data, OPEN_KEY) + await spendingOf(limited.data, SMALL_KEY);
    expect(total).toBeGreaterThanOrEqual(charged);
    expect(total - charged).toBeLessThanOrEqual(2n * WINDOW_MAX);
    expect((await signedBy(lifted.data)).size).toBe(0);
  });
});
