/**
 * Issue 21: no secret in logs or error messages. A full `gridpipe devnet` (chain, three staked and paid
 * suppliers, a gateway with an API key and a payer wallet) runs at log level debug, serves requests (good
 * ones, and ones with a wrong key, a bad body, an unknown model), and CLI commands open the keystores. Then
 * every line it logged (each process's log under DATA/logs, every stderr) and every error message it sent
 * (HTTP error bodies, CLI failures, the live feed, /metrics) is searched for the secrets: the keystore
 * passphrase, the API key, every private key of the chain's accounts (the payer's included), in 0x form and
 * bare. The devnet's own stdout prints the API key and the passphrase on purpose (ready-to-paste commands
 * for the newcomer who started it): there only the private keys are searched for.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { HDNodeWallet, Wallet } from 'ethers';
import { CLI, REPO_ROOT, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import type { DevnetInfo } from '../../cli/devnet/usage.js';
import { DEVNET_PASSPHRASE } from '../../cli/devnet/chain.js';

const tmp = tempDir('gridpipe-secrets-');
let devnet: ChildProcess | undefined;

afterAll(async () => {
  if (devnet && devnet.exitCode === null) {
    devnet.kill('SIGTERM');
    await new Promise((r) => devnet!.once('exit', r));
  }
  tmp.cleanup();
});

/** anvil's ten funded accounts (its default mnemonic): the devnet's owner, developer (payer) and suppliers. */
function anvilPrivateKeys(): string[] {
  const phrase = 'test test test test test test test test test test test junk';
  return Array.from({ length: 10 }, (_, i) => HDNodeWallet.fromPhrase(phrase, undefined, `m/44'/60'/0'/0/${i}`).privateKey);
}

/** Every spelling of a secret that could leak: as is, and for hex keys without 0x and in upper case. */
function spellings(secret: string): string[] {
  if (!/^0x[0-9a-fA-F]{64}$/.test(secret)) return [secret];
  const bare = secret.slice(2);
  return [bare.toLowerCase(), bare.toUpperCase()];
}

/** The names of the secrets found in `text`. */
function leaks(text: string, secrets: Record<string, string>): string[] {
  const found: string[] = [];
  for (const [name, secret] of Object.entries(secrets)) {
    if (spellings(secret).some((s) => text.includes(s))) found.push(name);
  }
  return found;
}

describe('no secret in logs or error messages of a full devnet', () => {
  it('runs a devnet with requests and CLI commands; no log line and no error message holds a secret', async () => {
    let out = '';
    let err = '';
    devnet = spawn(process.execPath, [CLI, 'devnet', '--suppliers', '3', '--model', 'tiny', '--data', tmp.dir, '--port', '0'], {
      cwd: REPO_ROOT, env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'debug' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    devnet.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((resolve) => devnet!.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      devnet!.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (/devnet ready/.test(out)) resolve(); });
      void exited.then((code) => reject(new Error(`devnet exited (${code}) before ready:\n${out}\n${err}`)));
    });
    const info = JSON.parse(readFileSync(path.join(tmp.dir, 'devnet.json'), 'utf8')) as DevnetInfo;

    // The secrets: the passphrase, the API key, the keystores' keys (decrypted here) and anvil's keys.
    const secrets: Record<string, string> = { passphrase: DEVNET_PASSPHRASE, 'API key': info.apiKey };
    const payer = await Wallet.fromEncryptedJson(readFileSync(info.developer.wallet, 'utf8'), DEVNET_PASSPHRASE);
    secrets['payer key'] = payer.privateKey;
    for (const [i, s] of info.suppliers.entries()) {
      secrets[`supplier ${i} key`] = (await Wallet.fromEncryptedJson(readFileSync(s.wallet, 'utf8'), DEVNET_PASSPHRASE)).privateKey;
    }
    anvilPrivateKeys().forEach((k, i) => { secrets[`anvil account ${i} key`] = k; });
    expect(anvilPrivateKeys()).toContain(payer.privateKey); // the devnet's payer is anvil's account 1

    // Requests: good ones (paid: vouchers signed with the payer key), and ones that fail.
    const base = info.gatewayUrl;
    const errorBodies: string[] = [];
    const post = async (pathname: string, body: unknown, key = info.apiKey): Promise<{ status: number; text: string }> => {
      const res = await fetch(`${base}${pathname}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
      const text = await res.text();
      if (res.status >= 400) errorBodies.push(text);
      return { status: res.status, text };
    };
    for (let i = 0; i < 3; i++) expect((await post('/completions', { model: info.model, prompt: `In the beginning ${i}`, max_tokens: 6 })).status).toBe(200);
    expect((await post('/chat/completions', { model: info.model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 6, stream: false })).status).toBe(200);
    expect((await post('/completions', { model: info.model, prompt: 'x', max_tokens: 2 }, `${info.apiKey}x`)).status).toBe(401);
    expect((await post('/completions', { model: info.model, prompt: 'x', max_tokens: 2 }, info.apiKey.slice(0, -1))).status).toBe(401);
    expect((await post('/completions', { model: 'no-such-model', prompt: 'x', max_tokens: 2 })).status).toBe(404);
    expect((await post('/completions', { model: info.model, prompt: 'x', max_tokens: -1 })).status).toBe(400);
    expect((await post('/chat/completions', { model: info.model, messages: 'not a list' })).status).toBe(400);
    const root = base.replace(/\/v1$/, '');
    const metrics = await (await fetch(`${root}/metrics`)).text();
    const feedController = new AbortController();
    const feedRes = await fetch(`${root}/v1/feed`, { headers: { authorization: `Bearer ${info.apiKey}` }, signal: feedController.signal });
    const reader = feedRes.body!.getReader();
    let feed = '';
    const feedUntil = Date.now() + 2000;
    while (Date.now() < feedUntil && feed.length < 200_000) {
      const chunk = await Promise.race([reader.read(), new Promise<undefined>((r) => setTimeout(() => r(undefined), 500))]);
      if (!chunk || chunk.done) break;
      feed += new TextDecoder().decode(chunk.value);
    }
    feedController.abort();

    // CLI commands that open the keystores: with the passphrase (their output), and with a wrong one (their error).
    const cliOutputs: string[] = [];
    const env = { GRIDPIPE_PASSPHRASE: DEVNET_PASSPHRASE, GRIDPIPE_LOG_LEVEL: 'debug' };
    const supplier = info.suppliers[0];
    const earnings = await runCli(['earnings', '--admin', supplier.admin!, '--data', supplier.data, '--chain-config', info.chainConfig, '--json'], { env });
    expect(earnings.code, earnings.stderr).toBe(0);
    cliOutputs.push(earnings.stdout, earnings.stderr);
    const wrong = await runCli(['stake', '1', '--chain-config', info.chainConfig, '--wallet', supplier.wallet], { env: { ...env, GRIDPIPE_PASSPHRASE: 'not-the-passphrase' } });
    expect(wrong.code).not.toBe(0);
    cliOutputs.push(wrong.stdout, wrong.stderr);

    // Stop the devnet so every process flushes its log.
    devnet.kill('SIGTERM');
    await exited;

    const logDir = path.join(tmp.dir, 'logs');
    const logFiles = readdirSync(logDir).filter((f) => f.endsWith('.log'));
    expect(logFiles.sort()).toEqual(['arbiter.log', 'gateway.log', 'supplier-0.log', 'supplier-1.log', 'supplier-2.log']);
    const logs = logFiles.map((f) => ({ name: `logs/${f}`, text: readFileSync(path.join(logDir, f), 'utf8') }));
    const lineCount = logs.reduce((a, l) => a + l.text.split('\n').length, 0);
    expect(lineCount, 'debug logging produced lines to search').toBeGreaterThan(50);
    const searched = [
      ...logs,
      { name: 'devnet stderr', text: err },
      { name: 'HTTP error bodies', text: errorBodies.join('\n') },
      { name: '/metrics', text: metrics },
      { name: '/v1/feed', text: feed },
      { name: 'CLI output', text: cliOutputs.join('\n') },
    ];
    const found = searched.flatMap((s) => leaks(s.text, secrets).map((name) => `${name} in ${s.name}`));
    const privateOnly = Object.fromEntries(Object.entries(secrets).filter(([name]) => name.endsWith('key') && name !== 'API key'));
    found.push(...leaks(out, privateOnly).map((name) => `${name} in the devnet's stdout`));
    console.log(`secrets: searched ${lineCount} log lines in ${logFiles.length} files, ${errorBodies.length} HTTP errors, feed ${feed.length} bytes, metrics ${metrics.length} bytes, ${cliOutputs.length} CLI outputs for ${Object.keys(secrets).length} secrets`);
    expect(found).toEqual([]);
  }, 600_000);
});
