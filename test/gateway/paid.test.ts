/**
 * The gateway with payments on, against a real anvil: two staked suppliers that charge, an API key whose payer
 * is a wallet with escrow. Every hop of a request is paid with a voucher; the cost in the response equals the
 * sum of the hops' charges, which is exactly what each supplier's voucher book accrued; the suppliers hold at
 * most one credit window more in vouchers; a gateway SIGKILLed and restarted continues the cumulative amounts.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { killAll, startGridpipe, type RunningProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { admin, keystoreOf, PASSPHRASE, smallGpt, startPaymentChain, startSupplier, TOKEN, type PaymentChain, type StartedSupplier } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-gateway-paid-');
const KEY = 'gp-paid-key-000000001';
const PRICE = '1000000000000';
let chain: PaymentChain;
const suppliers: StartedSupplier[] = [];
let gateway: RunningProcess;
let url: string;
let openai: OpenAI;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
  ({ fragDir } = await smallGpt(tmp.dir, 2));
  const [, wa, wb, , wp] = chain.wallets;
  for (const w of [wa, wb, wp]) await chain.mint(w.address, 1_000_000n);
  await chain.stake(wa, 100n * TOKEN);
  await chain.stake(wb, 100n * TOKEN);
  await chain.deposit(wp, 1000n * TOKEN);
  const a = await startSupplier({ data: path.join(tmp.dir, 'a'), fragDir, fragments: '0', wallet: await keystoreOf(wa, path.join(tmp.dir, 'a.json')), chainConfig: chain.configPath, price: PRICE });
  suppliers.push(a);
  suppliers.push(await startSupplier({ data: path.join(tmp.dir, 'b'), fragDir, fragments: '1', bootstrap: a.addresses[0], wallet: await keystoreOf(wb, path.join(tmp.dir, 'b.json')), chainConfig: chain.configPath, price: PRICE }));
  const keysFile = path.join(tmp.dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: { [KEY]: { name: 'paying', payer: await keystoreOf(wp, path.join(tmp.dir, 'payer.json')) } } }));
  gatewayArgs = ['gateway', '--port', '0', '--bootstrap', a.addresses[0], '--keys', keysFile, '--chain-config', chain.configPath, '--data', path.join(tmp.dir, 'gateway'), '--json'];
  await startGateway();
});

let gatewayArgs: string[];
let fragDir: string;

/** Starts the gateway (on the same data folder each time) and waits for the model. */
async function startGateway(): Promise<void> {
  gateway = startGridpipe(gatewayArgs, { GRIDPIPE_PASSPHRASE: PASSPHRASE });
  const ready = (await gateway.ready) as { url: string; payments: boolean };
  expect(ready.payments).toBe(true);
  url = ready.url;
  openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
  const deadline = Date.now() + 60_000;
  while ((await openai.models.list()).data.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
}

afterAll(async () => {
  await gateway?.stop('SIGTERM');
  await Promise.all(suppliers.map((s) => s.proc.stop('SIGTERM')));
  await killAll();
  await chain?.close();
  tmp.cleanup();
});

interface Hop { peerId: string; steps: number; cost: string; paidSteps: number; wallMs: number; queueMs: number; computeMs: number; paymentMs: number; payerMs: number }

describe('gateway with payments (anvil, two staked suppliers that charge)', () => {
  it('pays every hop with a voucher; the response cost is what the suppliers accrued', async () => {
    const [model] = (await openai.models.list()).data;
    const done = await openai.completions.create({ model: model.id, prompt: 'Pay the grid', max_tokens: 6, temperature: 0 });
    const g = (done as unknown as { gridpipe: { cost: string; hops: Hop[]; route: { peerId: string }[] } }).gridpipe;
    expect(g.route.map((r) => r.peerId).sort()).toEqual(suppliers.map((s) => s.peerId).sort());
    for (const h of g.hops) {
      expect(h.paidSteps).toBe(h.steps);
      expect(BigInt(h.cost)).toBeGreaterThan(0n);
    }
    expect(BigInt(g.cost)).toBe(g.hops.reduce((a, h) => a + BigInt(h.cost), 0n));
    for (const s of suppliers) {
      const book = await admin(s.admin, '/payments');
      const charged = g.hops.filter((h) => h.peerId === s.peerId).reduce((a, h) => a + BigInt(h.cost), 0n);
      expect(BigInt(String(book.accrued))).toBe(charged);
      // One voucher per credit window: the supplier holds at most one window (16 steps, the prefill's the largest) ahead.
      expect(BigInt(String(book.vouchered))).toBeGreaterThanOrEqual(charged);
      expect(BigInt(String(book.vouchered)) - charged).toBeLessThanOrEqual(16n * charged);
    }
    // Honest timing: each hop reports its supplier's payment gate apart from its queue, and the gateway's own voucher time.
    for (const h of g.hops) {
      expect(h.paymentMs).toBeGreaterThan(0);
      expect(h.payerMs).toBeGreaterThan(0); // the first step signs a voucher
      expect(h.wallMs).toBeGreaterThanOrEqual(h.payerMs);
      expect(h.queueMs).toBeGreaterThanOrEqual(0);
    }
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/gridpipe_gateway_payment_seconds_total\{side="gateway"\} [0-9.e-]*[1-9]/);
    expect(metrics).toMatch(/gridpipe_gateway_payment_seconds_total\{side="supplier"\} [0-9.e-]*[1-9]/);
    for (const s of suppliers) expect(metrics).toMatch(new RegExp(`gridpipe_gateway_vouchers_total\\{peer="${s.peerId}"\\} [1-9]`));
  });

  it('a gateway SIGKILLed and restarted continues the cumulative amounts: its new vouchers pay above every one it signed', async () => {
    const before = await Promise.all(suppliers.map(async (s) => admin(s.admin, '/payments')));
    expect(await gateway.stop('SIGKILL')).toBe('SIGKILL');
    await startGateway();
    const [model] = (await openai.models.list()).data;
    const done = await openai.completions.create({ model: model.id, prompt: 'Pay the grid again', max_tokens: 4, temperature: 0 });
    const g = (done as unknown as { gridpipe: { hops: Hop[] } }).gridpipe;
    for (const [i, s] of suppliers.entries()) {
      const charged = g.hops.filter((h) => h.peerId === s.peerId).reduce((a, h) => a + BigInt(h.cost), 0n);
      expect(charged).toBeGreaterThan(0n);
      const after = await admin(s.admin, '/payments');
      expect(BigInt(String(after.accrued)) - BigInt(String(before[i].accrued))).toBe(charged);
      // A gateway that restarted from zero would sign vouchers below the supplier's best: superseded, the work unpaid.
      expect(BigInt(String(after.vouchered)) - BigInt(String(before[i].vouchered))).toBeGreaterThanOrEqual(charged);
    }
  });

  it('a supplier killed mid-request: the replacement replays and is paid for it, and the request still gets every token', async () => {
    // A third staked supplier replicates fragment 1; the stream's host of fragment 1 is SIGKILLed after its first tokens.
    const [, , wc] = chain.wallets;
    await chain.mint(wc.address, 1_000_000n);
    await chain.stake(wc, 100n * TOKEN);
    const c = await startSupplier({ data: path.join(tmp.dir, 'c'), fragDir, fragments: '1', bootstrap: suppliers[0].addresses[0], wallet: await keystoreOf(wc, path.join(tmp.dir, 'c.json')), chainConfig: chain.configPath, price: PRICE });
    suppliers.push(c);
    const [model] = (await openai.models.list()).data;
    const maxTokens = 40;
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: model.id, prompt: 'Fail over, and pay for it', max_tokens: maxTokens, temperature: 0, stream: true }),
    });
    expect(res.status).toBe(200);
    const route = (JSON.parse(res.headers.get('x-gridpipe-route') ?? '{"route":[]}') as { route: [string, number, number][] }).route;
    const victim = suppliers.find((s) => s !== suppliers[0] && route.some(([peer]) => peer === s.peerId));
    expect(victim).toBeDefined();
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let killed = false;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (!killed && text.split('\n').filter((l) => l.startsWith('data: {')).length >= 4) {
        killed = true;
        await victim!.proc.stop('SIGKILL');
      }
    }
    expect(killed).toBe(true);
    const chunks = text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)) as { choices?: { finish_reason: string | null }[]; gridpipe?: { failovers: number; steps: number; hops: Hop[]; route: { peerId: string }[] } });
    const meta = chunks.find((x) => x.gridpipe)?.gridpipe;
    const finish = chunks.flatMap((x) => x.choices ?? []).map((ch) => ch.finish_reason).find((f) => f);
    expect(meta).toBeDefined();
    expect(meta!.failovers).toBeGreaterThanOrEqual(1);
    expect(meta!.route.some((r) => r.peerId === victim!.peerId)).toBe(false);
    // the replay's voucher went above the request's first ceiling: it was paid, not a reason to stop early
    if (finish !== 'stop') expect(meta!.steps).toBe(maxTokens);
    const replacement = suppliers.find((s) => s !== victim && s !== suppliers[0])!;
    expect(meta!.hops.find((h) => h.peerId === replacement.peerId)?.paidSteps).toBeGreaterThan(0);
  });

  it('the last host of a fragment killed mid-request: the request ends, and the feed still counts its failover', async () => {
    const [model] = (await openai.models.list()).data;
    const controller = new AbortController();
    const feed = await fetch(`${url}/v1/feed?replay=false`, { signal: controller.signal });
    const events = feed.body!.pipeThrough(new TextDecoderStream()).getReader();
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: model.id, prompt: 'Nobody left to fail over to', max_tokens: 40, temperature: 0, stream: true }),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-gridpipe-request-id');
    const route = (JSON.parse(res.headers.get('x-gridpipe-route') ?? '{"route":[]}') as { route: [string, number, number][] }).route;
    const last = suppliers.find((s) => s !== suppliers[0] && route.some(([peer]) => peer === s.peerId))!;
    expect(last).toBeDefined();
    await last.proc.stop('SIGKILL'); // the other host of fragment 1 was killed by the test before
    await res.text().catch(() => ''); // the stream ends with an error event or is cut
    let ended: { event: string; failovers?: number } | undefined;
    let buffer = '';
    while (!ended) {
      const { value, done } = await events.read();
      if (done) break;
      buffer += value;
      for (const event of buffer.split('\n\n')) {
        const data = event.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        const parsed = JSON.parse(data.slice(6)) as { event: string; requestId: string; failovers?: number };
        if (parsed.requestId === requestId && (parsed.event === 'request.finished' || parsed.event === 'request.failed')) ended = parsed;
      }
    }
    controller.abort();
    expect(ended).toBeDefined();
    expect(ended!.failovers).toBeGreaterThanOrEqual(1);
  });
});
