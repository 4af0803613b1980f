/**
 * `gridpipe devnet` as a newcomer runs it: it reaches "ready" with a chain, staked suppliers and a gateway;
 * the openai client streams a chat completion whose route shows in the response and in /metrics; the
 * commands it prints work as pasted; a supplier's earnings grow after redemption; SIGTERM leaves no process
 * behind (anvil included); a second start reuses the cache; bad settings fail fast and clean.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { CLI, REPO_ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';
import { alive } from './helpers/process.js';
import { usageCommands, type DevnetInfo } from '../cli/devnet/usage.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const sh = promisify(execFile);

interface Devnet { child: ChildProcess; out: () => string; exited: Promise<number | null> }

/** Starts the devnet and waits for its last line to say "ready". */
async function startDevnet(args: string[]): Promise<Devnet> {
  const child = spawn(process.execPath, [CLI, 'devnet', ...args], { cwd: REPO_ROOT, env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/devnet ready/.test(out)) resolve();
    });
    void exited.then((code) => reject(new Error(`devnet exited (${code}) before ready:\n${out}\n${err}`)));
  });
  return { child, out: () => out, exited };
}

const pidsOf = (info: DevnetInfo): number[] => [info.gatewayPid!, info.anvilPid, ...info.suppliers.map((s) => s.pid!)];

async function earnings(info: DevnetInfo, supplier: number): Promise<{ accrued: bigint; redeemed: bigint; tokenBalance: bigint }> {
  const r = await runCli(['earnings', '--admin', info.suppliers[supplier].admin!, '--data', info.suppliers[supplier].data, '--chain-config', info.chainConfig, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const e = JSON.parse(r.stdout) as Record<string, string>;
  return { accrued: BigInt(e.accrued), redeemed: BigInt(e.redeemed), tokenBalance: BigInt(e.tokenBalance) };
}

describe('gridpipe devnet', () => {
  it('runs the whole grid: chain, staked suppliers, gateway; serves, pays, and stops every process', async () => {
    const devnet = await startDevnet(['--suppliers', '3', '--model', 'tiny', '--data', tmp.dir, '--port', '0']);
    const lines = devnet.out().trim().split('\n');
    expect(lines.at(-1)).toMatch(/ready/);
    // The arbiter service runs with its own account (issue 21).
    expect(devnet.out()).toMatch(/arbiter 0x[0-9a-fA-F]{40} resolves disputes/);
    expect(devnet.out()).toMatch(/generated \d+ tokens through \S+\[0\.\.0\] → \S+\[1\.\.1\] → \S+\[2\.\.2\]/);
    const info = JSON.parse(readFileSync(path.join(tmp.dir, 'devnet.json'), 'utf8')) as DevnetInfo;
    expect(info.suppliers).toHaveLength(3);
    // devnet.json and keys.json hold the API key: owner-only, in an owner-only folder.
    for (const f of ['devnet.json', 'keys.json']) expect(statSync(path.join(tmp.dir, f)).mode & 0o777, f).toBe(0o600);
    expect(statSync(tmp.dir).mode & 0o777).toBe(0o700);
    for (const key of ['gatewayUrl', 'apiKey', 'rpcUrl', 'chainConfig', 'explorerUrl'] as const) expect(info[key]).toBeTruthy();
    // npm start prints the explorer's URL, and the page is there.
    expect(devnet.out()).toContain(`explorer (open in a browser): ${info.explorerUrl}`);
    expect((await fetch(info.explorerUrl!)).headers.get('content-type')).toMatch(/^text\/html/);

    // The openai client, streaming a chat completion; the route is in the last chunk's metadata.
    const client = new OpenAI({ baseURL: info.gatewayUrl, apiKey: info.apiKey });
    const stream = await client.chat.completions.create({ model: info.model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, stream: true });
    let text = '';
    let route: { peerId: string; fragments: [number, number] }[] = [];
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      const meta = (chunk as unknown as { gridpipe?: { route: typeof route } }).gridpipe;
      if (meta) route = meta.route;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(route.map((h) => h.fragments)).toEqual([[0, 0], [1, 1], [2, 2]]);
    expect(new Set(route.map((h) => h.peerId))).toEqual(new Set(info.suppliers.map((s) => s.peerId)));
    const metrics = await (await fetch(`${info.gatewayUrl.replace(/\/v1$/, '')}/metrics`)).text();
    for (const hop of route) expect(metrics).toContain(hop.peerId);

    // The commands the devnet printed work as pasted.
    const printed = usageCommands(info);
    expect(devnet.out()).toContain(printed.curl);
    const curl = await sh('bash', ['-c', printed.curl], { cwd: REPO_ROOT });
    const completion = JSON.parse(curl.stdout) as { choices: { message: { content: string } }[]; gridpipe: { route: unknown[] } };
    expect(completion.choices).toHaveLength(1);
    expect(completion.gridpipe.route).toHaveLength(3);
    const viaOpenai = await sh('bash', ['-c', printed.openai], { cwd: REPO_ROOT });
    expect(viaOpenai.stdout.length).toBeGreaterThan(0);
    const viaCall = await sh('bash', ['-c', printed.call.replace(/^npx gridpipe/, `"${process.execPath}" "${CLI}"`)], { cwd: REPO_ROOT });
    expect(viaCall.stdout.length).toBeGreaterThan(0);

    // The suppliers were paid with vouchers; redemption moves the money on chain.
    const before = await earnings(info, 0);
    expect(before.accrued).toBeGreaterThan(0n);
    const redeem = await runCli(['redeem', '--admin', info.suppliers[0].admin!, '--data', info.suppliers[0].data, '--chain-config', info.chainConfig]);
    expect(redeem.code, redeem.stderr).toBe(0);
    const after = await earnings(info, 0);
    expect(after.redeemed).toBeGreaterThan(before.redeemed);
    expect(after.tokenBalance - before.tokenBalance).toBe(after.redeemed - before.redeemed);

    devnet.child.kill('SIGTERM');
    expect(await devnet.exited).toBe(0);
    expect(devnet.out()).toMatch(/devnet stopped/);
    for (const pid of pidsOf(info)) expect(alive(pid), `pid ${pid}`).toBe(false);

    // A second start reuses the model cache (and the API key).
    const again = await startDevnet(['--suppliers', '3', '--model', 'tiny', '--data', tmp.dir, '--port', '0']);
    expect(again.out()).toMatch(/\(cached\)/);
    const info2 = JSON.parse(readFileSync(path.join(tmp.dir, 'devnet.json'), 'utf8')) as DevnetInfo;
    expect(info2.apiKey).toBe(info.apiKey);
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
    for (const pid of pidsOf(info2)) expect(alive(pid), `pid ${pid}`).toBe(false);
  });

  it('by default serves the trained model: the check request prints English words, labelled for what it is', async () => {
    const data = path.join(tmp.dir, 'kjv');
    const devnet = await startDevnet(['--suppliers', '2', '--data', data, '--port', '0']);
    try {
      expect(devnet.out()).toMatch(/\[1\/5\] model \(kjv\)/);
      const check = /generated \d+ tokens through .*: ("And God said,.*")$/m.exec(devnet.out());
      expect(check, devnet.out()).not.toBeNull();
      const text = JSON.parse(check![1]) as string;
      // Words of the King James Bible, not noise: most of the generated words are among the corpus' commonest.
      const words = text.slice('And God said,'.length).match(/[A-Za-z]+/g) ?? [];
      expect(words.length).toBeGreaterThanOrEqual(4);
      const common = new Set(['and', 'the', 'of', 'to', 'that', 'in', 'he', 'shall', 'unto', 'for', 'i', 'his', 'a', 'lord', 'they', 'be', 'is', 'him', 'not', 'them', 'it', 'with', 'all', 'thou', 'thy', 'was', 'god', 'which', 'my', 'me', 'said', 'but', 'ye', 'their', 'have', 'will', 'thee', 'from', 'as', 'are', 'when', 'this', 'out', 'were', 'upon', 'man', 'by', 'you', 'israel', 'king', 'son', 'up', 'there', 'hath', 'then', 'people', 'came', 'had', 'house', 'on', 'into', 'her', 'come', 'one', 'we', 'children', 's', 'before', 'your', 'also', 'day', 'land', 'so', 'men', 'against', 'shalt', 'if', 'at', 'let', 'go', 'hand', 'us', 'saying', 'made', 'no', 'even', 'went', 'do', 'behold', 'saith', 'therefore', 'every', 'these', 'because', 'or', 'after', 'our', 'things', 'father', 'down', 'sons', 'hast', 'david', 'o', 'make', 'say', 'may', 'over', 'did', 'what', 'earth', 'she', 'who', 'great', 'name', 'thine', 'away', 'put', 'among', 'moses', 'thereof', 'forth', 'give', 'people']);
      const known = words.filter((w) => common.has(w.toLowerCase())).length;
      expect(known / words.length, text).toBeGreaterThan(0.5);
      expect(devnet.out()).toMatch(/model: +kjv-demo \(a 4\.3M-parameter model trained on the King James Bible: it writes scripture-like text, it is no assistant\)/);
    } finally {
      devnet.child.kill('SIGTERM');
      expect(await devnet.exited).toBe(0);
    }
  });

  it('refuses an unknown demo model with a one-line error', async () => {
    const r = await runCli(['devnet', '--model', 'huge', '--data', tmp.dir]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('gridpipe: error: unknown demo model "huge" (kjv, tiny, small, moe, a path to an .onnx file or an export folder)');
  });

  it('refuses a port already taken before starting anything', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await runCli(['devnet', '--model', 'tiny', '--data', path.join(tmp.dir, 'taken'), '--port', String(port)]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toBe(`gridpipe: error: port ${port} is already in use on 127.0.0.1; stop what uses it or pick another with --port`);
      expect(r.stdout).not.toMatch(/supplier/);
    } finally {
      server.close();
    }
  });

  it('refuses a data folder that is a file', async () => {
    const file = path.join(tmp.dir, 'not-a-folder');
    writeFileSync(file, 'x');
    const r = await runCli(['devnet', '--model', 'tiny', '--data', file]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`gridpipe: error: --data ${file}: this is a file, not a folder`);
  });
});
