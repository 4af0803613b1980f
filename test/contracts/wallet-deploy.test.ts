/** Keystore wallets, and deployment to an RPC URL (as a function and as a command) with its chain config. */
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import {
  connectGrid,
  createKeystore,
  createProvider,
  deployGrid,
  keystoreAddress,
  loadKeystore,
  PASSPHRASE_ENV,
  readChainConfig,
  resolvePassphrase,
  saveKeystore,
  startAnvil,
  WalletError,
  type AnvilNode,
} from '../../contracts/index.js';
import { tempDir } from '../helpers/tmp.js';
import { REPO_ROOT } from '../helpers/cli.js';

const FAST = { scryptN: 1024 };

describe('keystore wallets', () => {
  const tmp = tempDir('gridpipe-wallet-');
  afterAll(() => tmp.cleanup());

  it('creates an encrypted keystore (0600), reads its address without the passphrase, loads it with one', async () => {
    const file = path.join(tmp.dir, 'k1.json');
    const { address } = await createKeystore(file, { passphrase: 'correct horse', ...FAST });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toMatch(/correct horse/);
    expect(keystoreAddress(file)).toBe(address);
    const wallet = await loadKeystore(file, { passphrase: 'correct horse' });
    expect(wallet.address).toBe(address);
    expect(text).not.toContain(wallet.privateKey.slice(2));
  });

  it(`takes the passphrase from ${PASSPHRASE_ENV}`, async () => {
    const saved = process.env[PASSPHRASE_ENV];
    process.env[PASSPHRASE_ENV] = 'from-env';
    try {
      const file = path.join(tmp.dir, 'k2.json');
      const original = Wallet.createRandom();
      await saveKeystore(new Wallet(original.privateKey), file, FAST);
      expect((await loadKeystore(file)).address).toBe(original.address);
      expect(resolvePassphrase()).toBe('from-env');
      expect(resolvePassphrase('given')).toBe('given');
    } finally {
      if (saved === undefined) delete process.env[PASSPHRASE_ENV];
      else process.env[PASSPHRASE_ENV] = saved;
    }
  });

  it('fails clearly, without echoing secrets: wrong or missing passphrase, existing file, not a keystore', async () => {
    const file = path.join(tmp.dir, 'k3.json');
    await createKeystore(file, { passphrase: 'right-one', ...FAST });
    const wrong = await loadKeystore(file, { passphrase: 'wrong-one' }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(WalletError);
    expect((wrong as WalletError).code).toBe('WRONG_PASSPHRASE');
    expect((wrong as Error).message).not.toMatch(/wrong-one|right-one/);
    const saved = process.env[PASSPHRASE_ENV];
    delete process.env[PASSPHRASE_ENV];
    try {
      await expect(loadKeystore(file)).rejects.toMatchObject({ code: 'NO_PASSPHRASE' });
    } finally {
      if (saved !== undefined) process.env[PASSPHRASE_ENV] = saved;
    }
    await expect(createKeystore(file, { passphrase: 'x', ...FAST })).rejects.toMatchObject({ code: 'EXISTS' });
    await expect(loadKeystore(path.join(tmp.dir, 'none.json'), { passphrase: 'x' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const junk = path.join(tmp.dir, 'junk.json');
    writeFileSync(junk, '{"hello":1}');
    await expect(loadKeystore(junk, { passphrase: 'x' })).rejects.toMatchObject({ code: 'NOT_A_KEYSTORE' });
  });
});

describe('deploy', () => {
  let node: AnvilNode;
  const tmp = tempDir('gridpipe-deploy-');
  beforeAll(async () => {
    node = await startAnvil();
  });
  afterAll(async () => {
    await node?.stop();
    tmp.cleanup();
  });

  it('deploys everything, wires the dispute manager as slasher, and writes a config that reads back', async () => {
    const provider = createProvider(node.rpcUrl, node.chainId);
    const deployer = new Wallet(node.accounts[0].privateKey, provider);
    const configPath = path.join(tmp.dir, 'chain.json');
    const { config, contracts } = await deployGrid({ rpcUrl: node.rpcUrl, signer: deployer, configPath, params: { withdrawalDelay: 77 } });
    expect(readChainConfig(configPath)).toEqual(config);
    expect(config).toMatchObject({ rpcUrl: node.rpcUrl, chainId: node.chainId, deployer: deployer.address });
    expect(config.blockNumber).toBeGreaterThan(0);
    expect(await contracts.stakeRegistry.slasher()).toBe(config.disputeManager);
    expect(await contracts.paymentEscrow.withdrawalDelay()).toBe(77n);
    expect(await contracts.stakeRegistry.token()).toBe(config.token);
    const viaConfig = connectGrid(config, provider);
    expect(await viaConfig.disputeManager!.stakeRegistry()).toBe(config.stakeRegistry);
    expect(await viaConfig.token.owner()).toBe(deployer.address);

    // A second grid on the same chain with the first one's token, no dispute manager, another owner.
    const owner = node.accounts[1].address;
    const second = await deployGrid({ rpcUrl: node.rpcUrl, signer: deployer, params: { token: config.token, dispute: false, owner } });
    expect(second.config.token).toBe(config.token);
    expect(second.config.disputeManager).toBeUndefined();
    expect(await second.contracts.stakeRegistry.slasher()).toBe(owner);
    expect(await second.contracts.stakeRegistry.owner()).toBe(owner);
    provider.destroy();
  });

  it('refuses a challenge window longer than the unbonding delay', async () => {
    const provider = createProvider(node.rpcUrl, node.chainId);
    const deployer = new Wallet(node.accounts[2].privateKey, provider);
    await expect(deployGrid({
      rpcUrl: node.rpcUrl,
      signer: deployer,
      params: { unbondingDelay: 10, dispute: { challengeWindow: 11, slashAmount: 1n, disputeBond: 1n, challengerRewardBps: 1 } },
    })).rejects.toThrow(/challengeWindow/);
    provider.destroy();
  });

  it('runs as a command with a keystore deployer, passphrase from the environment', async () => {
    const keystore = path.join(tmp.dir, 'deployer.json');
    await saveKeystore(new Wallet(node.accounts[3].privateKey), keystore, { passphrase: 'pw', ...FAST });
    const out = path.join(tmp.dir, 'cli-chain.json');
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'contracts/deploy.ts', '--rpc', node.rpcUrl, '--out', out, '--keystore', keystore], {
        cwd: REPO_ROOT,
        env: { ...process.env, [PASSPHRASE_ENV]: 'pw' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout + result.stderr).not.toContain(node.accounts[3].privateKey.slice(2));
    const config = readChainConfig(out);
    expect(config.deployer).toBe(node.accounts[3].address);
    expect(config.disputeManager).toBeDefined();
  });
});
