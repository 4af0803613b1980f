/**
 * Property-based run of random call sequences by many accounts against the real contracts, checked
 * step by step against a plain model:
 *  - every call succeeds or reverts exactly when the model says (and with the error it names);
 *  - each contract's token balance equals the sum of its internal balances (escrow: payer balances;
 *    registry: staked + unbonding; dispute manager: bonds of open disputes);
 *  - no value is paid twice: per (payer, payee) the Redeemed events add up to `redeemed`, which never
 *    exceeds the highest voucher the payer signed; every account's token balance matches the model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { ContractTransactionResponse, TransactionReceipt, Wallet } from 'ethers';
import { revertName, signReceipt, signVoucher, type Voucher } from '../../contracts/index.js';
import { DISPUTE_BOND, REWARD_BPS, SLASH_AMOUNT, eventsOf, mined, randomHash, setupChain, type Chain } from './helpers.js';

const NUM_RUNS = Number(process.env.GRIDPIPE_INVARIANT_RUNS ?? 25);
const FAR = 1_000_000n; // fresh vouchers live this long; a run advances far less
const INITIAL_DEPOSIT = 400n;
const INITIAL_STAKE = 200n;

type Action =
  | { kind: 'deposit'; p: number; amount: bigint }
  | { kind: 'redeem'; p: number; q: number; inc: bigint; by: number }
  | { kind: 'redeemOld'; p: number; q: number; pick: number; by: number }
  | { kind: 'batch'; items: { p: number; q: number; inc: bigint }[]; sortByPayee: boolean; by: number }
  | { kind: 'expired'; p: number; q: number; inc: bigint }
  | { kind: 'forged'; p: number; q: number; inc: bigint; signer: number }
  | { kind: 'requestWithdrawal'; p: number; amount: bigint }
  | { kind: 'withdraw'; p: number; pending: boolean }
  | { kind: 'stake'; s: number; amount: bigint }
  | { kind: 'unstake'; s: number; amount: bigint }
  | { kind: 'withdrawStake'; s: number; pending: boolean }
  | { kind: 'dispute'; s: number; c: number }
  | { kind: 'resolve'; pick: number; upheld: boolean }
  | { kind: 'advance' };

const N = 3; // payers, and suppliers (payees)
const idx = fc.integer({ min: 0, max: N - 1 });
const anyAccount = fc.integer({ min: 0, max: 9 });
const amount = (max: number) => fc.bigInt({ min: 0n, max: BigInt(max) });
const inc = fc.bigInt({ min: 1n, max: 200n });
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('deposit' as const), p: idx, amount: amount(400) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('redeem' as const), p: idx, q: idx, inc, by: anyAccount }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('redeemOld' as const), p: idx, q: idx, pick: fc.nat(), by: anyAccount }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('batch' as const), items: fc.array(fc.record({ p: idx, q: idx, inc }), { minLength: 1, maxLength: 5 }), sortByPayee: fc.boolean(), by: anyAccount }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('expired' as const), p: idx, q: idx, inc }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('forged' as const), p: idx, q: idx, inc, signer: anyAccount }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('requestWithdrawal' as const), p: idx, amount: amount(500) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('withdraw' as const), p: idx, pending: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('stake' as const), s: idx, amount: amount(300) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('unstake' as const), s: idx, amount: amount(150) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('withdrawStake' as const), s: idx, pending: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('dispute' as const), s: idx, c: anyAccount }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('resolve' as const), pick: fc.nat(), upheld: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('advance' as const) }) },
);

interface Signed { v: Voucher; sig: string }
interface Model {
  epoch: number; // advances so far; every advance passes every delay, nothing else does
  tokens: Map<string, bigint>;
  escrow: Map<string, { balance: bigint; wAmount: bigint; wEpoch: number }>;
  redeemed: Map<string, bigint>;
  paid: Map<string, bigint>; // sum of Redeemed events
  highestSigned: Map<string, bigint>;
  vouchers: Map<string, Signed[]>;
  stakes: Map<string, { staked: bigint; unbonding: bigint; uEpoch: number; freezes: number }>;
  open: { id: bigint; supplier: string; challenger: string; bond: bigint }[];
}

/** How often each (action, outcome) happened over all runs. */
const outcomes = new Map<string, number>();

let chain: Chain;
let payers: Wallet[];
let suppliers: Wallet[];

beforeAll(async () => {
  chain = await setupChain();
  payers = chain.wallets.slice(1, 1 + N);
  suppliers = chain.wallets.slice(1 + N, 1 + 2 * N);
  // Every run starts with some escrow and stake, so most calls have something to work on.
  for (const p of payers) await mined(chain.c.paymentEscrow.connect(p).deposit(INITIAL_DEPOSIT));
  for (const s of suppliers) await mined(chain.c.stakeRegistry.connect(s).stake(INITIAL_STAKE));
  await chain.checkpoint();
});
afterAll(async () => {
  await chain?.close();
});

const pairKey = (payer: string, payee: string): string => `${payer}>${payee}`;
const get = <K, V>(m: Map<K, V>, k: K, d: V): V => (m.has(k) ? m.get(k)! : d);

async function initialModel(): Promise<Model> {
  const tokens = new Map<string, bigint>();
  const balances = await Promise.all(chain.wallets.map((w) => chain.c.token.balanceOf(w.address)));
  chain.wallets.forEach((w, i) => tokens.set(w.address, balances[i]));
  const escrow = new Map(payers.map((p) => [p.address, { balance: INITIAL_DEPOSIT, wAmount: 0n, wEpoch: 0 }]));
  const stakes = new Map(suppliers.map((s) => [s.address, { staked: INITIAL_STAKE, unbonding: 0n, uEpoch: 0, freezes: 0 }]));
  return { epoch: 0, tokens, escrow, redeemed: new Map(), paid: new Map(), highestSigned: new Map(), vouchers: new Map(), stakes, open: [] };
}

const addTokens = (m: Model, who: string, delta: bigint): void => {
  m.tokens.set(who, get(m.tokens, who, 0n) + delta);
};
const escrowOf = (m: Model, p: string) => {
  if (!m.escrow.has(p)) m.escrow.set(p, { balance: 0n, wAmount: 0n, wEpoch: 0 });
  return m.escrow.get(p)!;
};
const stakeOf = (m: Model, s: string) => {
  if (!m.stakes.has(s)) m.stakes.set(s, { staked: 0n, unbonding: 0n, uEpoch: 0, freezes: 0 });
  return m.stakes.get(s)!;
};

/** What redeeming `v` does to the model: an error name, or the amount paid (applied to `m`). */
function settle(m: Model, v: Voucher, now: bigint, validSignature: boolean): string | bigint {
  if (now + 1n > v.deadline) return 'VoucherExpired'; // the transaction's block is later than `now`
  const key = pairKey(v.payer, v.payee);
  const already = get(m.redeemed, key, 0n);
  if (v.cumulativeAmount <= already) return 'VoucherAlreadyRedeemed';
  if (!validSignature) return 'InvalidSignature';
  const owed = v.cumulativeAmount - already;
  const e = escrowOf(m, v.payer);
  if (owed > e.balance) return 'InsufficientEscrow';
  e.balance -= owed;
  m.redeemed.set(key, v.cumulativeAmount);
  addTokens(m, v.payee, owed);
  return owed;
}

function cloneModel(m: Model): Model {
  return {
    ...m,
    tokens: new Map(m.tokens),
    escrow: new Map([...m.escrow].map(([k, v]) => [k, { ...v }])),
    redeemed: new Map(m.redeemed),
    paid: new Map(m.paid),
    highestSigned: new Map(m.highestSigned),
    vouchers: new Map(m.vouchers),
    stakes: new Map([...m.stakes].map(([k, v]) => [k, { ...v }])),
    open: [...m.open],
  };
}

async function signFresh(m: Model, p: Wallet, q: Wallet, increment: bigint, deadline: bigint): Promise<Signed> {
  const key = pairKey(p.address, q.address);
  const cumulativeAmount = get(m.highestSigned, key, 0n) + increment;
  m.highestSigned.set(key, cumulativeAmount);
  const v: Voucher = { payer: p.address, payee: q.address, cumulativeAmount, deadline };
  return { v, sig: await signVoucher(p, chain.config.paymentEscrow, chain.chainId, v) };
}

/** Keeps a signed voucher so a later action can submit it again (late or replayed). */
function keepVoucher(m: Model, s: Signed): void {
  const key = pairKey(s.v.payer, s.v.payee);
  m.vouchers.set(key, [...(m.vouchers.get(key) ?? []), s]);
}

/** Sends; returns the receipt, or the custom error's name when it reverts. */
async function attempt(tx: () => Promise<ContractTransactionResponse>): Promise<TransactionReceipt | string> {
  try {
    const receipt = await (await tx()).wait();
    if (!receipt) throw new Error('no receipt');
    return receipt;
  } catch (err) {
    const name = revertName(err) ?? (await minedRevertName(err));
    if (!name) throw err;
    return name;
  }
}

/**
 * A transaction that passed gas estimation can still revert once mined, and then ethers has no revert data
 * (seen once in 360+ sequences): ask the node's tracer for the mined call's output, so the error is named
 * (or the failure says why, e.g. out of gas) instead of the run failing on an anonymous CALL_EXCEPTION.
 */
async function minedRevertName(err: unknown): Promise<string | undefined> {
  const hash = (err as { receipt?: { hash?: string } }).receipt?.hash;
  if (!hash) return undefined;
  const trace = (await chain.provider.send('debug_traceTransaction', [hash, { tracer: 'callTracer' }])) as { output?: string; error?: string; gas?: string; gasUsed?: string };
  const name = trace.output && trace.output.length >= 10 ? revertName({ data: trace.output }) : undefined;
  if (name) return name;
  throw new Error(`mined transaction ${hash} reverted without a named error: ${trace.error ?? 'no error'} (gas used ${Number(trace.gasUsed)} of ${Number(trace.gas)}, output ${trace.output ?? 'none'})`);
}

function recordRedeemed(m: Model, receipt: TransactionReceipt): void {
  for (const e of eventsOf(receipt, chain.c.paymentEscrow, 'Redeemed')) {
    const key = pairKey(e.payer as string, e.payee as string);
    m.paid.set(key, get(m.paid, key, 0n) + (e.amount as bigint));
  }
}

/** Runs one action against the chain and the model; fails when they disagree on the outcome. */
async function step(m: Model, a: Action): Promise<void> {
  const w = chain.wallets;
  const now = await chain.now();
  const expectOutcome = (result: TransactionReceipt | string, expected: string | null): void => {
    const got = typeof result === 'string' ? result : null;
    const label = `${a.kind}:${got ?? 'ok'}`;
    outcomes.set(label, (outcomes.get(label) ?? 0) + 1);
    expect(got, `${a.kind}: ${JSON.stringify(a, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}` : v))}`).toBe(expected);
  };

  switch (a.kind) {
    case 'deposit': {
      const p = payers[a.p];
      const r = await attempt(() => chain.c.paymentEscrow.connect(p).deposit(a.amount));
      expectOutcome(r, a.amount === 0n ? 'ZeroAmount' : null);
      if (a.amount !== 0n) {
        escrowOf(m, p.address).balance += a.amount;
        addTokens(m, p.address, -a.amount);
      }
      return;
    }
    case 'redeem':
    case 'expired':
    case 'forged': {
      const p = payers[a.p];
      const q = suppliers[a.q];
      let signed: Signed;
      if (a.kind === 'forged') {
        const signer = w[a.signer];
        const key = pairKey(p.address, q.address);
        const v: Voucher = { payer: p.address, payee: q.address, cumulativeAmount: get(m.highestSigned, key, 0n) + a.inc, deadline: now + FAR };
        signed = { v, sig: await signVoucher(signer, chain.config.paymentEscrow, chain.chainId, v) };
        if (signer.address === p.address) m.highestSigned.set(key, v.cumulativeAmount); // the payer itself: a real voucher
      } else {
        signed = await signFresh(m, p, q, a.inc, a.kind === 'expired' ? now - 1n : now + FAR);
        if (a.kind === 'redeem') keepVoucher(m, signed);
      }
      const valid = a.kind !== 'forged' || w[a.signer].address === p.address;
      const trial = cloneModel(m);
      const predicted = settle(trial, signed.v, now, valid);
      const r = await attempt(() => chain.c.paymentEscrow.connect(a.kind === 'redeem' ? w[a.by] : q).redeem(signed.v, signed.sig));
      expectOutcome(r, typeof predicted === 'string' ? predicted : null);
      if (typeof r !== 'string') {
        settle(m, signed.v, now, valid);
        recordRedeemed(m, r);
      }
      return;
    }
    case 'redeemOld': {
      const list = m.vouchers.get(pairKey(payers[a.p].address, suppliers[a.q].address)) ?? [];
      if (!list.length) return;
      const { v, sig } = list[a.pick % list.length];
      const predicted = settle(cloneModel(m), v, now, true);
      const r = await attempt(() => chain.c.paymentEscrow.connect(w[a.by]).redeem(v, sig));
      expectOutcome(r, typeof predicted === 'string' ? predicted : null);
      if (typeof r !== 'string') {
        settle(m, v, now, true);
        recordRedeemed(m, r);
      }
      return;
    }
    case 'batch': {
      let items = a.items.map((it, i) => ({ ...it, i }));
      if (a.sortByPayee) items = [...items].sort((x, y) => x.q - y.q || x.i - y.i);
      const signed: Signed[] = [];
      for (const it of items) {
        const s = await signFresh(m, payers[it.p], suppliers[it.q], it.inc, now + FAR);
        keepVoucher(m, s);
        signed.push(s);
      }
      const trial = cloneModel(m);
      let predicted: string | null = null;
      for (const s of signed) {
        const out = settle(trial, s.v, now, true);
        if (typeof out === 'string') {
          predicted = out;
          break;
        }
      }
      const r = await attempt(() => chain.c.paymentEscrow.connect(w[a.by]).redeemBatch(signed.map((s) => s.v), signed.map((s) => s.sig)));
      expectOutcome(r, predicted);
      if (typeof r !== 'string') {
        for (const s of signed) settle(m, s.v, now, true);
        recordRedeemed(m, r);
      }
      return;
    }
    case 'requestWithdrawal': {
      const p = payers[a.p];
      const e = escrowOf(m, p.address);
      const r = await attempt(() => chain.c.paymentEscrow.connect(p).requestWithdrawal(a.amount));
      expectOutcome(r, a.amount > e.balance ? 'InsufficientEscrow' : null);
      if (a.amount <= e.balance) {
        e.wAmount = a.amount;
        e.wEpoch = m.epoch;
      }
      return;
    }
    case 'withdraw': {
      // Half the time, pick among payers with a request, so withdrawals get to happen.
      const pending = payers.filter((x) => escrowOf(m, x.address).wAmount > 0n);
      const p = a.pending && pending.length ? pending[a.p % pending.length] : payers[a.p];
      const e = escrowOf(m, p.address);
      const expected = e.wAmount === 0n ? 'NoWithdrawalRequested' : m.epoch <= e.wEpoch ? 'WithdrawalNotReady' : null;
      const r = await attempt(() => chain.c.paymentEscrow.connect(p).withdraw());
      expectOutcome(r, expected);
      if (expected === null) {
        const paid = e.wAmount < e.balance ? e.wAmount : e.balance;
        e.balance -= paid;
        e.wAmount = 0n;
        addTokens(m, p.address, paid);
      }
      return;
    }
    case 'stake': {
      const s = suppliers[a.s];
      const r = await attempt(() => chain.c.stakeRegistry.connect(s).stake(a.amount));
      expectOutcome(r, a.amount === 0n ? 'ZeroAmount' : null);
      if (a.amount !== 0n) {
        stakeOf(m, s.address).staked += a.amount;
        addTokens(m, s.address, -a.amount);
      }
      return;
    }
    case 'unstake': {
      const s = suppliers[a.s];
      const st = stakeOf(m, s.address);
      const expected = a.amount === 0n ? 'ZeroAmount' : a.amount > st.staked ? 'InsufficientStake' : null;
      const r = await attempt(() => chain.c.stakeRegistry.connect(s).requestUnstake(a.amount));
      expectOutcome(r, expected);
      if (expected === null) {
        st.staked -= a.amount;
        st.unbonding += a.amount;
        st.uEpoch = m.epoch;
      }
      return;
    }
    case 'withdrawStake': {
      const unbonding = suppliers.filter((x) => stakeOf(m, x.address).unbonding > 0n);
      const s = a.pending && unbonding.length ? unbonding[a.s % unbonding.length] : suppliers[a.s];
      const st = stakeOf(m, s.address);
      const expected = st.unbonding === 0n ? 'NothingToWithdraw' : m.epoch <= st.uEpoch ? 'StillUnbonding' : st.freezes > 0 ? 'StakeFrozen' : null;
      const r = await attempt(() => chain.c.stakeRegistry.connect(s).withdraw());
      expectOutcome(r, expected);
      if (expected === null) {
        addTokens(m, s.address, st.unbonding);
        st.unbonding = 0n;
      }
      return;
    }
    case 'dispute': {
      const s = suppliers[a.s];
      const c = w[a.c];
      const receipt = { supplier: s.address, fragmentCid: randomHash(), inputHash: randomHash(), outputHash: randomHash(), sessionId: randomHash(), step: 1n, issuedAt: now };
      const sig = await signReceipt(s, chain.config.disputeManager!, chain.chainId, receipt);
      const r = await attempt(() => chain.c.disputeManager.connect(c).openDispute(receipt, sig, randomHash()));
      expectOutcome(r, null);
      const [ev] = eventsOf(r as TransactionReceipt, chain.c.disputeManager, 'DisputeOpened');
      m.open.push({ id: ev.id as bigint, supplier: s.address, challenger: c.address, bond: DISPUTE_BOND });
      stakeOf(m, s.address).freezes += 1;
      addTokens(m, c.address, -DISPUTE_BOND);
      return;
    }
    case 'resolve': {
      if (!m.open.length) {
        expectOutcome(await attempt(() => chain.c.disputeManager.connect(chain.arbiter).resolveDispute(10_000n, a.upheld)), 'DisputeNotOpen');
        return;
      }
      const d = m.open[a.pick % m.open.length];
      const r = await attempt(() => chain.c.disputeManager.connect(chain.arbiter).resolveDispute(d.id, a.upheld));
      expectOutcome(r, null);
      m.open = m.open.filter((o) => o !== d);
      const st = stakeOf(m, d.supplier);
      st.freezes -= 1;
      if (a.upheld) {
        const fromStaked = SLASH_AMOUNT < st.staked ? SLASH_AMOUNT : st.staked;
        const rest = SLASH_AMOUNT - fromStaked;
        const fromUnbonding = rest < st.unbonding ? rest : st.unbonding;
        st.staked -= fromStaked;
        st.unbonding -= fromUnbonding;
        const slashed = fromStaked + fromUnbonding;
        const reward = (slashed * BigInt(REWARD_BPS)) / 10_000n;
        addTokens(m, d.challenger, reward + d.bond);
        addTokens(m, chain.treasury.address, slashed - reward);
      } else {
        addTokens(m, d.supplier, d.bond);
      }
      return;
    }
    case 'advance':
      m.epoch += 1;
      await chain.increaseTime(3600);
      return;
  }
}

/** The invariants, read from the chain and compared with the model. */
async function check(m: Model): Promise<void> {
  const { token, paymentEscrow, stakeRegistry } = chain.c;
  const pairs = payers.flatMap((p) => suppliers.map((q) => [p.address, q.address] as const));
  const [escrowTokens, registryTokens, dmTokens, escrowBalances, stakes, redeemed, wallets, requests] = await Promise.all([
    token.balanceOf(chain.config.paymentEscrow),
    token.balanceOf(chain.config.stakeRegistry),
    token.balanceOf(chain.config.disputeManager!),
    Promise.all(payers.map((p) => paymentEscrow.balanceOf(p.address))),
    Promise.all(suppliers.map((s) => stakeRegistry.stakeOf(s.address))),
    Promise.all(pairs.map(([p, q]) => paymentEscrow.redeemed(p, q))),
    Promise.all(chain.wallets.map((w) => token.balanceOf(w.address))),
    Promise.all(payers.map((p) => paymentEscrow.withdrawalRequest(p.address))),
  ]);
  // Each contract holds exactly what its books say.
  expect(escrowTokens).toBe(escrowBalances.reduce((x, y) => x + y, 0n));
  expect(registryTokens).toBe(stakes.reduce((x, s) => x + s.staked + s.unbonding, 0n));
  expect(dmTokens).toBe(m.open.reduce((x, d) => x + d.bond, 0n));
  // No value paid twice: events sum to `redeemed`, which never exceeds the highest signed voucher.
  pairs.forEach(([p, q], i) => {
    const key = pairKey(p, q);
    expect(redeemed[i]).toBe(get(m.redeemed, key, 0n));
    expect(get(m.paid, key, 0n)).toBe(redeemed[i]);
    expect(redeemed[i] <= get(m.highestSigned, key, 0n)).toBe(true);
  });
  // The chain agrees with the model everywhere else too.
  payers.forEach((p, i) => {
    const e = escrowOf(m, p.address);
    expect(escrowBalances[i]).toBe(e.balance);
    expect(requests[i].amount).toBe(e.wAmount);
  });
  suppliers.forEach((s, i) => {
    const st = stakeOf(m, s.address);
    expect([stakes[i].staked, stakes[i].unbonding, stakes[i].freezes]).toEqual([st.staked, st.unbonding, BigInt(st.freezes)]);
  });
  chain.wallets.forEach((w, i) => expect(wallets[i], `token balance of wallet ${i}`).toBe(get(m.tokens, w.address, 0n)));
}

describe('contract invariants under random call sequences', () => {
  it('names the error of a transaction that reverts only once mined (no gas estimate to catch it)', async () => {
    await chain.reset();
    const p = payers[0];
    const balance = await chain.c.paymentEscrow.balanceOf(p.address);
    // An explicit gas limit skips estimation, so the revert happens in the mined block, where ethers gets no data.
    const r = await attempt(() => chain.c.paymentEscrow.connect(p).requestWithdrawal(balance + 1n, { gasLimit: 200_000n }));
    expect(r).toBe('InsufficientEscrow');
  });

  it(`hold over ${NUM_RUNS} random sequences`, async () => {
    let steps = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(actionArb, { minLength: 10, maxLength: 25 }), async (actions) => {
        await chain.reset();
        const m = await initialModel();
        for (const a of actions) {
          await step(m, a);
          await check(m);
          steps++;
        }
      }),
      { numRuns: NUM_RUNS, endOnFailure: true },
    );
    expect(steps).toBeGreaterThanOrEqual(NUM_RUNS * 10);
    if (process.env.GRIDPIPE_INVARIANT_VERBOSE) process.stderr.write(`${[...outcomes].sort().map(([k, v]) => `${k}=${v}`).join('\n')}\n`);
    // The sequences reached the states that matter (each of these happens dozens of times per run of the suite).
    for (const outcome of ['redeem:ok', 'batch:ok', 'expired:VoucherExpired', 'forged:InvalidSignature', 'deposit:ok', 'stake:ok', 'unstake:ok', 'dispute:ok', 'resolve:ok', 'requestWithdrawal:ok']) {
      expect(outcomes.get(outcome) ?? 0, outcome).toBeGreaterThan(0);
    }
  });
});
