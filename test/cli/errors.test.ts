/**
 * Every expected failure of every `gridpipe` command is one line and an exit code, never a stack trace: each
 * command and subcommand (listed from the program itself, so a new command without a case fails here) runs
 * through the built CLI with a bad input of each kind that applies to it — an unknown flag, a missing
 * argument, an invalid value, a file that does not exist, a file that is not what it should be, an
 * unreachable peer, RPC or gateway at a closed port on 127.0.0.1 — and must exit 2 for bad input or 1 for a
 * run-time failure.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Wallet } from 'ethers';
import type { Command } from 'commander';
import { createProgram } from '../../cli/main.js';
import { reportFailure } from '../../cli/errors.js';
import { GridpipeError } from '../../errors/base.js';
import { buildModel } from '../../fragments/builder/index.js';
import { GraphBuilder, makeModel } from '../../fragments/builder/graph-builder.js';
import { DataType } from '../../fragments/onnx/dtype.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { saveKeystore } from '../../contracts/wallet.js';
import { REPO_ROOT, runCli, type CliResult } from '../helpers/cli.js';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';
import { testLogger } from '../helpers/swarm.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { smallGpt, startSupplier } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-errors-');
const at = (name: string): string => path.join(tmp.dir, name);
const PASSPHRASE = 'errors test passphrase';
/** A well-formed peer id nobody runs. */
const NOBODY = '12D3KooWGzh6bT5ZqSg8dr8dTnuvSxWTYWg8uYNHJdyKkYfDXjSB';
/** Quiet logs, a passphrase, no chain config from the environment, no debug stacks. */
const ENV = { GRIDPIPE_LOG_LEVEL: 'error', GRIDPIPE_PASSPHRASE: PASSPHRASE, GRIDPIPE_CHAIN_CONFIG: at('no-chain.json'), GRIDPIPE_DEBUG: '', GRIDPIPE_API_KEY: '', GRIDPIPE_URL: '' };

/** Filled in beforeAll: ports nobody listens on, one somebody does, and the files the cases name. */
let closedPort = 0;
let takenPort = 0;
let holder: net.Server;

/** A port that was free a moment ago (nothing listens on it now). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type Kind = 'usage' | 'bad-input' | 'runtime';
interface Case { what: string; args: () => string[]; kind: Kind; says?: RegExp }

/** A grid host that answers (the gateway joins through it before it listens). */
let bootstrapHost: GridHost;
const livePeer = (): string => bootstrapHost.addresses()[0];
const peer = (): string => `/ip4/127.0.0.1/tcp/${closedPort}/p2p/${NOBODY}`;
const rpc = (): string => `http://127.0.0.1:${closedPort}`;
/** Chain options with a chain config whose RPC is at a closed port, and a keystore. */
const chain = (): string[] => ['--chain-config', at('chain.json'), '--wallet', at('wallet.json')];
const usage = (what: string, args: () => string[]): Case => ({ what, args, kind: 'usage' });

/** Bad inputs by command, as `gridpipe` names them ("model build", "stake bind"...). */
const CASES: Record<string, Case[]> = {
  model: [usage('unknown subcommand', () => ['model', 'nonsense'])],
  'model build': [
    usage('unknown flag', () => ['model', 'build', '--arch', 'gpt', '--out', at('o.onnx'), '--bogus']),
    usage('missing --arch', () => ['model', 'build', '--out', at('o.onnx')]),
    usage('invalid --arch', () => ['model', 'build', '--arch', 'nope', '--out', at('o.onnx')]),
    usage('invalid --layers', () => ['model', 'build', '--arch', 'gpt', '--layers', '0', '--out', at('o.onnx')]),
    { what: '--out in a folder that does not exist', args: () => ['model', 'build', '--arch', 'gpt', '--layers', '1', '--d-model', '16', '--heads', '2', '--out', at('no-dir/file.txt/o.onnx')], kind: 'bad-input' },
  ],
  'model inspect': [
    usage('missing model', () => ['model', 'inspect']),
    usage('invalid --dim', () => ['model', 'inspect', at('tiny.onnx'), '--dim', 'batch']),
    { what: 'missing file', args: () => ['model', 'inspect', at('missing.onnx')], kind: 'bad-input', says: /missing\.onnx/ },
    { what: 'not a model', args: () => ['model', 'inspect', at('text.txt')], kind: 'bad-input', says: /not an ONNX model/ },
    { what: 'a folder', args: () => ['model', 'inspect', tmp.dir], kind: 'bad-input' },
  ],
  'model fragment': [
    usage('missing --out', () => ['model', 'fragment', at('tiny.onnx'), '--parts', '2']),
    usage('invalid --parts', () => ['model', 'fragment', at('tiny.onnx'), '--parts', '0', '--out', at('f')]),
    { what: 'missing file', args: () => ['model', 'fragment', at('missing.onnx'), '--parts', '2', '--out', at('f')], kind: 'bad-input' },
    { what: 'not a model', args: () => ['model', 'fragment', at('text.txt'), '--parts', '2', '--out', at('f')], kind: 'bad-input', says: /not an ONNX model/ },
    { what: 'more parts than cut points', args: () => ['model', 'fragment', at('tiny.onnx'), '--parts', '500', '--out', at('f')], kind: 'bad-input', says: /cannot cut into 500 parts/ },
  ],
  'model verify': [
    usage('missing folder', () => ['model', 'verify']),
    usage('invalid --shape', () => ['model', 'verify', at('frags'), '--shape', 'x']),
    { what: 'folder without a manifest', args: () => ['model', 'verify', at('missing'), '--json'], kind: 'bad-input', says: /no manifest/ },
    { what: '--model that is not a model', args: () => ['model', 'verify', at('frags'), '--model', at('text.txt'), '--json'], kind: 'bad-input', says: /not an ONNX model/ },
    { what: 'sample inputs that do not fit', args: () => ['model', 'verify', at('reshape-frags'), '--json'], kind: 'bad-input', says: /x\[1×8\].*--shape NAME=/ },
  ],
  supply: [
    usage('unknown flag', () => ['supply', '--bogus']),
    usage('invalid --kv-tokens', () => ['supply', '--kv-tokens', 'many']),
    { what: 'invalid --fragments', args: () => ['supply', '--data', at('s1'), '--host', at('frags'), '--fragments', 'x'], kind: 'bad-input', says: /--fragments/ },
    { what: '--stake-binding that is not one', args: () => ['supply', '--data', at('s6'), '--stake-binding', at('text.txt')], kind: 'bad-input', says: /stake binding/ },
    { what: 'invalid --hours', args: () => ['supply', '--data', at('s7'), '--hours', 'nights'], kind: 'bad-input', says: /--hours/ },
    { what: '--host that does not exist', args: () => ['supply', '--data', at('s2'), '--listen', '/ip4/127.0.0.1/tcp/0', '--admin-port', '0', '--host', at('missing')], kind: 'bad-input', says: /--host/ },
    { what: '--fragments beyond the model', args: () => ['supply', '--data', at('s3'), '--listen', '/ip4/127.0.0.1/tcp/0', '--admin-port', '0', '--host', at('frags'), '--fragments', '7', '--provider', 'cpu'], kind: 'bad-input', says: /--fragments 7/ },
    { what: 'identity key that is not a key', args: () => ['supply', '--data', at('bad-identity'), '--listen', '/ip4/127.0.0.1/tcp/0', '--admin-port', '0', '--provider', 'cpu'], kind: 'bad-input', says: /identity key/ },
    { what: '--listen port in use', args: () => ['supply', '--data', at('s4'), '--listen', `/ip4/127.0.0.1/tcp/${takenPort}`, '--admin-port', '0', '--provider', 'cpu'], kind: 'runtime', says: /cannot listen on .*EADDRINUSE/ },
    { what: '--admin-port in use', args: () => ['supply', '--data', at('s5'), '--listen', '/ip4/127.0.0.1/tcp/0', '--admin-port', String(takenPort), '--provider', 'cpu'], kind: 'runtime', says: /EADDRINUSE/ },
  ],
  peers: [
    usage('invalid --timeout', () => ['peers', '--bootstrap', peer(), '--timeout', 'soon']),
    { what: 'no --bootstrap', args: () => ['peers'], kind: 'bad-input', says: /--bootstrap/ },
    { what: '--bootstrap not a multiaddr', args: () => ['peers', '--bootstrap', 'nowhere'], kind: 'bad-input', says: /not a multiaddr/ },
    { what: 'unreachable peer', args: () => ['peers', '--bootstrap', peer(), '--timeout', '1'], kind: 'runtime', says: /no peer answered/ },
  ],
  generate: [
    usage('missing --manifest', () => ['generate', '--bootstrap', peer(), '--prompt-ids', '1']),
    usage('invalid --wait', () => ['generate', '--manifest', at('frags'), '--wait', '-1']),
    { what: 'no --bootstrap', args: () => ['generate', '--manifest', at('frags'), '--prompt-ids', '1'], kind: 'bad-input', says: /--bootstrap/ },
    { what: 'both prompts', args: () => ['generate', '--manifest', at('frags'), '--bootstrap', peer(), '--prompt-ids', '1', '--prompt', 'hi'], kind: 'bad-input', says: /exactly one/ },
    { what: '--manifest that is neither a folder nor a CID', args: () => ['generate', '--manifest', at('text.txt'), '--bootstrap', peer(), '--prompt-ids', '1'], kind: 'bad-input', says: /--manifest/ },
    { what: '--manifest folder without a manifest', args: () => ['generate', '--manifest', at('empty-data'), '--bootstrap', livePeer(), '--network', 'local', '--prompt-ids', '1', '--wait', '1'], kind: 'bad-input', says: /no manifest/ },
    { what: 'unreachable peer', args: () => ['generate', '--manifest', at('frags'), '--bootstrap', peer(), '--prompt-ids', '1', '--wait', '1'], kind: 'runtime', says: /no peer answered/ },
  ],
  gateway: [
    usage('invalid --port', () => ['gateway', '--port', '99999']),
    { what: 'no --bootstrap', args: () => ['gateway', '--port', '0'], kind: 'bad-input', says: /--bootstrap/ },
    { what: '--keys that does not exist', args: () => ['gateway', '--bootstrap', peer(), '--port', '0', '--keys', at('missing.json')], kind: 'bad-input', says: /missing\.json/ },
    { what: '--keys that is not JSON', args: () => ['gateway', '--bootstrap', peer(), '--port', '0', '--keys', at('text.txt')], kind: 'bad-input', says: /not valid JSON/ },
    { what: '--chain-config that does not exist', args: () => ['gateway', '--bootstrap', peer(), '--port', '0', '--chain-config', at('missing.json')], kind: 'bad-input', says: /payments: .*missing\.json/ },
    { what: '--port in use', args: () => ['gateway', '--bootstrap', livePeer(), '--network', 'local', '--host', '127.0.0.1', '--port', String(takenPort)], kind: 'runtime', says: /EADDRINUSE/ },
  ],
  call: [
    usage('missing --model', () => ['call', 'hi']),
    usage('invalid --max-tokens', () => ['call', 'hi', '--model', 'm', '--max-tokens', 'lots']),
    { what: '--temperature out of range', args: () => ['call', 'hi', '--model', 'm', '--temperature', '5'], kind: 'bad-input', says: /--temperature/ },
    { what: 'unreachable gateway', args: () => ['call', 'hi', '--model', 'm', '--url', rpc()], kind: 'runtime', says: /no gateway answers/ },
  ],
  devnet: [
    usage('unknown flag', () => ['devnet', '--bogus']),
    usage('invalid --suppliers', () => ['devnet', '--suppliers', '0']),
    { what: '--model that does not exist', args: () => ['devnet', '--model', at('missing.onnx'), '--data', at('devnet')], kind: 'bad-input', says: /missing\.onnx/ },
  ],
  wallet: [usage('unknown subcommand', () => ['wallet', 'nonsense'])],
  'wallet new': [
    usage('missing --out', () => ['wallet', 'new']),
    { what: '--out that exists', args: () => ['wallet', 'new', '--out', at('wallet.json')], kind: 'bad-input', says: /already exists/ },
  ],
  'wallet address': [
    usage('missing --wallet', () => ['wallet', 'address']),
    { what: '--wallet that does not exist', args: () => ['wallet', 'address', '--wallet', at('missing.json')], kind: 'bad-input', says: /no keystore/ },
    { what: '--wallet that is not a keystore', args: () => ['wallet', 'address', '--wallet', at('text.txt')], kind: 'bad-input', says: /not a JSON keystore/ },
  ],
  stake: [
    usage('missing amount', () => ['stake', ...chain()]),
    { what: 'invalid amount', args: () => ['stake', '12,5', ...chain()], kind: 'bad-input', says: /decimal number/ },
    { what: 'no --wallet', args: () => ['stake', '1', '--chain-config', at('chain.json')], kind: 'bad-input', says: /--wallet/ },
    { what: '--chain-config that does not exist', args: () => ['stake', '1', '--chain-config', at('missing.json'), '--wallet', at('wallet.json')], kind: 'bad-input', says: /no chain config/ },
    { what: '--chain-config that is not one', args: () => ['stake', '1', '--chain-config', at('text.txt'), '--wallet', at('wallet.json')], kind: 'bad-input', says: /chain config/ },
    { what: 'wrong passphrase', args: () => ['stake', '1', ...chain(), '--json'], kind: 'bad-input', says: /wrong passphrase/ },
    { what: 'unreachable RPC', args: () => ['stake', '1', ...chain()], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  'stake bind': [
    usage('missing --peer', () => ['stake', 'bind', '--out', at('binding.json'), ...chain()]),
    usage('invalid --days', () => ['stake', 'bind', '--peer', NOBODY, '--days', '400', '--out', at('binding.json'), ...chain()]),
    { what: 'invalid --peer', args: () => ['stake', 'bind', '--peer', 'bob', '--out', at('binding.json'), ...chain()], kind: 'bad-input', says: /--peer/ },
    { what: '--out in a folder that does not exist', args: () => ['stake', 'bind', '--peer', NOBODY, '--out', at('no-dir/b.json'), ...chain()], kind: 'bad-input' },
  ],
  unstake: [
    { what: 'invalid amount', args: () => ['unstake', 'x', ...chain()], kind: 'bad-input', says: /decimal number/ },
    { what: 'unreachable RPC', args: () => ['unstake', ...chain()], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  withdraw: [
    usage('unknown flag', () => ['withdraw', '--bogus']),
    { what: '--chain-config that does not exist', args: () => ['withdraw', '--chain-config', at('missing.json'), '--wallet', at('wallet.json')], kind: 'bad-input', says: /no chain config/ },
    { what: 'unreachable RPC', args: () => ['withdraw', ...chain()], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  deposit: [
    usage('missing amount', () => ['deposit', ...chain()]),
    { what: 'invalid amount', args: () => ['deposit', 'lots', ...chain()], kind: 'bad-input', says: /decimal number/ },
    { what: 'unreachable RPC', args: () => ['deposit', '1', ...chain()], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  arbiter: [
    usage('invalid --referees', () => ['arbiter', '--referees', '0']),
    { what: 'no --wallet', args: () => ['arbiter', '--chain-config', at('chain.json'), '--once'], kind: 'bad-input', says: /--wallet/ },
    { what: 'a chain config without a DisputeManager', args: () => ['arbiter', '--data', at('arbiter'), ...chain(), '--bootstrap', peer(), '--once'], kind: 'bad-input', says: /names no DisputeManager/ },
    { what: 'unreachable RPC', args: () => ['arbiter', '--data', at('arbiter'), '--chain-config', at('chain-disputes.json'), '--wallet', at('wallet.json'), '--bootstrap', peer(), '--once'], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  earnings: [
    usage('unknown flag', () => ['earnings', '--bogus']),
    { what: 'unreachable supplier admin', args: () => ['earnings', '--data', at('admin-data'), '--admin', rpc(), ...chain()], kind: 'runtime', says: /admin endpoint/ },
    { what: 'unreachable RPC', args: () => ['earnings', '--data', at('empty-data'), ...chain()], kind: 'runtime', says: /no chain RPC answers|ECONNREFUSED/ },
  ],
  redeem: [
    usage('unknown flag', () => ['redeem', '--bogus']),
    { what: 'unreachable supplier admin', args: () => ['redeem', '--data', at('admin-data'), '--admin', rpc(), ...chain()], kind: 'runtime', says: /admin endpoint/ },
  ],
};

/** Every command and subcommand of the program, by its full name. */
function commandNames(cmd: Command, prefix = ''): string[] {
  return cmd.commands.filter((c) => c.name() !== 'help').flatMap((c) => {
    const name = prefix ? `${prefix} ${c.name()}` : c.name();
    return [name, ...commandNames(c, name)];
  });
}

/**
 * What onnxruntime's WebGPU provider (Dawn) writes straight to fd 2 when the supplier's capacity probe tries
 * it on a machine with a GPU device node but without Vulkan: native output that no JavaScript handler sees,
 * not gridpipe's. (Without a device node the probe does not try WebGPU at all: node/probe.ts.)
 */
const DAWN_NO_VULKAN = /^Warning: Couldn't load Vulkan:.*\n\s+at operator\(\) \(\S+dawn\S+\)\n\n?/m;

/** The exit code and stderr that a failure of `kind` must give (see module doc). */
function expectFailure(result: CliResult, kind: Kind, says?: RegExp): void {
  const r = { ...result, stderr: result.stderr.replace(DAWN_NO_VULKAN, '') };
  expect(r.stderr, r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stderr).not.toMatch(/internal error/);
  if (kind === 'usage') {
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^error: /);
    return;
  }
  expect(r.code, r.stderr).toBe(kind === 'bad-input' ? 2 : 1);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^gridpipe: error: \S/);
  if (says) expect(lines[0]).toMatch(says);
}

beforeAll(async () => {
  closedPort = await freePort();
  holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  takenPort = (holder.address() as net.AddressInfo).port;
  bootstrapHost = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger: testLogger() });

  writeFileSync(at('text.txt'), 'hello, not what you wanted\n');
  await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 16, heads: 2, seed: 3 }), at('tiny.onnx'));
  await fragmentModel(at('tiny.onnx'), at('frags'), { parts: 2 });
  await writeReshapeModel(at('reshape.onnx'));
  await fragmentModel(at('reshape.onnx'), at('reshape-frags'), { parts: 2, dims: { batch: 1, n: 10 } });

  const wallet = Wallet.createRandom();
  await saveKeystore(new Wallet(wallet.privateKey), at('wallet.json'), { passphrase: PASSPHRASE, scryptN: 1024 });
  const zero = (n: number): string => `0x${n.toString(16).padStart(40, '0')}`;
  writeFileSync(at('chain.json'), JSON.stringify({ rpcUrl: rpc(), chainId: 31337, token: zero(1), stakeRegistry: zero(2), paymentEscrow: zero(3), deployer: zero(4), blockNumber: 0 }));
  writeFileSync(at('chain-disputes.json'), JSON.stringify({ rpcUrl: rpc(), chainId: 31337, token: zero(1), stakeRegistry: zero(2), paymentEscrow: zero(3), disputeManager: zero(5), deployer: zero(4), blockNumber: 0 }));
  mkdirSync(at('bad-identity'));
  writeFileSync(at('bad-identity/identity.key'), 'not a key', { mode: 0o600 });
  mkdirSync(at('admin-data'));
  writeFileSync(at('admin-data/admin-token'), 'token', { mode: 0o600 });
  mkdirSync(at('empty-data'));
}, 60_000);

afterAll(async () => {
  await killAll();
  await bootstrapHost?.stop();
  await new Promise<void>((resolve) => holder.close(() => resolve()));
  tmp.cleanup();
});

/**
 * x[batch, n] → Relu → Reshape to a fixed [1, 10] → Relu: it runs only when batch × n is 10, so the
 * default sample dims (batch 1, n 8) do not fit, as Silero VAD's Pad does not fit them.
 */
async function writeReshapeModel(file: string): Promise<void> {
  const g = new GraphBuilder('fixed-reshape', 1);
  g.input('x', DataType.FLOAT, ['batch', 'n']);
  const shape = g.initializer('shape', [2], BigInt64Array.from([1n, 10n]));
  let h = g.op('Relu', ['x'], { name: '/a/Relu' });
  h = g.op('Reshape', [h, shape], { name: '/b/Reshape' });
  h = g.op('Relu', [h], { name: '/c/Relu' });
  g.op('Neg', [h], { name: '/d/Neg', output: 'y' });
  g.output('y', DataType.FLOAT, [1, 10]);
  await writeModel(makeModel(g.build()), file);
}

describe('every gridpipe command fails on one line', () => {
  it('has bad-input cases for every command and subcommand of the program', () => {
    const names = commandNames(createProgram());
    expect(names.length).toBeGreaterThan(15);
    const missing = names.filter((n) => !CASES[n]?.length);
    expect(missing, `commands without a case in test/cli/errors.test.ts: ${missing.join(', ')}`).toEqual([]);
    expect(Object.keys(CASES).filter((n) => !names.includes(n))).toEqual([]);
  });

  for (const [command, cases] of Object.entries(CASES)) {
    describe.concurrent(`gridpipe ${command}`, () => {
      for (const c of cases) {
        it(`${c.what}: exit ${c.kind === 'runtime' ? 1 : 2}`, async () => {
          const env = c.what === 'wrong passphrase' ? { ...ENV, GRIDPIPE_PASSPHRASE: 'not it' } : ENV;
          expectFailure(await runCli(c.args(), { env }), c.kind, c.says);
        }, 30_000);
      }
    });
  }
});

describe('reportFailure (cli/errors.ts): the one mapping from an error to a line and an exit code', () => {
  const report = (err: unknown, debug = false): { code: number; text: string } => {
    let text = '';
    const code = reportFailure(err, (t) => { text += t; }, debug);
    return { code, text };
  };

  it('bad input exits 2, a run-time failure 1, each on one line with a short cause of our own', () => {
    expect(report(new GridpipeError('BAD', 'the flag is wrong', { badInput: true }))).toEqual({ code: 2, text: 'gridpipe: error: the flag is wrong\n' });
    const cause = new GridpipeError('INNER', 'the peer hung up');
    expect(report(new GridpipeError('OUTER', 'the step failed', { cause }))).toEqual({ code: 1, text: 'gridpipe: error: the step failed (the peer hung up)\n' });
    expect(report(new GridpipeError('OUTER', 'the step failed: the peer hung up', { cause })).text).toBe('gridpipe: error: the step failed: the peer hung up\n');
    expect(report(new GridpipeError('MULTI', 'two\n  lines')).text).toBe('gridpipe: error: two lines\n');
  });

  it('a missing path exits 2; an unexpected error prints "internal error" with its stack; debug adds the stack to any error', () => {
    const missing = Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), { code: 'ENOENT', syscall: 'open', path: 'x' });
    expect(report(missing)).toEqual({ code: 2, text: "gridpipe: error: ENOENT: no such file or directory, open 'x'\n" });
    const bug = report(new TypeError('undefined is not a function'));
    expect(bug.code).toBe(1);
    expect(bug.text).toMatch(/^gridpipe: internal error: TypeError: undefined is not a function\n\s+at /);
    const debug = report(new GridpipeError('BAD', 'the flag is wrong', { badInput: true, cause: new Error('deep') }), true);
    expect(debug.code).toBe(2);
    expect(debug.text).toMatch(/^gridpipe: error: the flag is wrong\nGridpipeError: the flag is wrong\n\s+at [\s\S]*caused by: Error: deep/);
  });
});

describe('the failures the issue names', () => {
  it('model verify: sample inputs that do not fit name the inputs and suggest --shape; --shape fixes it', async () => {
    const r = await runCli(['model', 'verify', at('reshape-frags'), '--json'], { env: ENV });
    expectFailure(r, 'bad-input', /^gridpipe: error: the whole model failed on the sample inputs x\[1×8\] float32 \(dims batch=1, n=8\): .*--shape NAME=D1,D2/);
    const fixed = await runCli(['model', 'verify', at('reshape-frags'), '--shape', 'x=1,10', '--json'], { env: ENV });
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(JSON.parse(fixed.stdout).ok).toBe(true);
  }, 60_000);

  it('model verify on Silero VAD (the issue\'s case: a reflect Pad wider than the default input): one line, then --shape fixes it', async () => {
    await fragmentModel(path.join(REPO_ROOT, 'test', 'fixtures', 'real', 'silero_vad_legacy.onnx'), at('silero'), { parts: 2 });
    const r = await runCli(['model', 'verify', at('silero'), '--json'], { env: ENV });
    expectFailure(r, 'bad-input', /^gridpipe: error: the whole model failed on the sample inputs input\[1×8\] float32, sr\[\] int64, h\[2×1×64\] float32, c\[2×1×64\] float32 .*Pad.*--shape NAME=D1,D2/);
    const fixed = await runCli(['model', 'verify', at('silero'), '--shape', 'input=1,512', '--json'], { env: ENV });
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(JSON.parse(fixed.stdout).ok).toBe(true);
  }, 60_000);

  it('generate: a fragment with no live host is named on one line, exit 1', async () => {
    mkdirSync(at('dead'));
    const model = await smallGpt(at('dead'), 2);
    // Two suppliers of fragment 0 (a lone DHT node has nobody to store its records with); none of fragment 1.
    const a = await startSupplier({ data: at('dead/a'), fragDir: model.fragDir, fragments: '0' });
    const b = await startSupplier({ data: at('dead/b'), fragDir: model.fragDir, fragments: '0', bootstrap: a.addresses[0] });
    const r = await runCli(['generate', '--manifest', model.fragDir, '--bootstrap', a.addresses[0], '--network', 'local', '--prompt-ids', '1,2', '--max-tokens', '2', '--wait', '3'], { env: ENV });
    expectFailure(r, 'runtime', /^gridpipe: error: no live server hosts fragment 1 of the model$/);
    await Promise.all([a.proc.stop(), b.proc.stop()]);
  }, 90_000);

  it('GRIDPIPE_DEBUG=1 prints the stack of an expected failure too, with the same exit code', async () => {
    const r = await runCli(['model', 'inspect', at('text.txt')], { env: { ...ENV, GRIDPIPE_DEBUG: '1' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^gridpipe: error: .*not an ONNX model/);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});
