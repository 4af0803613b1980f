/**
 * A real anvil with the grid deployed for payment tests, wallets as keystores for `gridpipe supply`, a
 * small GPT fragmented on disk, and `gridpipe supply` processes that charge.
 */
import path from 'node:path';
import { expect } from 'vitest';
import { parseUnits, Wallet, type JsonRpcProvider } from 'ethers';
import { actingAs, createProvider, deployGrid, deposit, stake, startAnvil, type AnvilNode, type ChainConfig, type GridContracts } from '../../contracts/index.js';
import { saveKeystore } from '../../contracts/wallet.js';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import type { Manifest } from '../../fragments/manifest.js';
import { writeChainConfig } from '../../contracts/bindings.js';
import { startGridpipe, type RunningProcess } from '../helpers/process.js';
import { readAdminToken } from '../../node/admin-guard.js';

export const PASSPHRASE = 'test passphrase, not a secret';
export const TOKEN = 10n ** 18n;

export interface PaymentChain {
  node: AnvilNode;
  provider: JsonRpcProvider;
  config: ChainConfig;
  configPath: string;
  contracts: GridContracts;
  /** Anvil's dev accounts: 0 deploys and owns the token. */
  wallets: Wallet[];
  mint(to: string, tokens: bigint): Promise<void>;
  stake(w: Wallet, amount: bigint): Promise<void>;
  deposit(w: Wallet, amount: bigint): Promise<void>;
  close(): Promise<void>;
}

/** Anvil + the grid (minimum stake 100 tokens) and its chain config written to `dir`/chain.json. */
export async function startPaymentChain(dir: string): Promise<PaymentChain> {
  const node = await startAnvil();
  const provider = createProvider(node.rpcUrl, node.chainId);
  const wallets = node.accounts.map((a) => new Wallet(a.privateKey, provider));
  const configPath = path.join(dir, 'chain.json');
  const { config, contracts } = await deployGrid({
    rpcUrl: node.rpcUrl, signer: wallets[0], configPath,
    params: { minimumStake: 100n * TOKEN, unbondingDelay: 1000, withdrawalDelay: 500, dispute: { challengeWindow: 600, slashAmount: 50n * TOKEN, disputeBond: 10n * TOKEN, challengerRewardBps: 5000 } },
  });
  writeChainConfig(configPath, config);
  const wait = async (tx: Promise<{ wait(): Promise<unknown> }>): Promise<void> => { await (await tx).wait(); };
  return {
    node, provider, config, configPath, contracts, wallets,
    mint: (to, tokens) => wait(contracts.token.mint(to, tokens * TOKEN)),
    stake: async (w, amount) => {
      await stake(await actingAs(config, w), { amount });
    },
    deposit: async (w, amount) => {
      await deposit(await actingAs(config, w), { amount });
    },
    close: async () => {
      provider.destroy();
      await node.stop();
    },
  };
}

/** Saves a dev wallet as a keystore (cheap scrypt: test speed) and returns the file. */
export async function keystoreOf(wallet: Wallet, file: string): Promise<string> {
  await saveKeystore(new Wallet(wallet.privateKey), file, { passphrase: PASSPHRASE, scryptN: 1024 });
  return file;
}

/** A 4-layer GPT with KV cache, fragmented in `parts`. */
export async function smallGpt(dir: string, parts = 2): Promise<{ modelPath: string; fragDir: string; manifest: Manifest; manifestCid: string }> {
  const modelPath = path.join(dir, 'gpt.onnx');
  await writeModel(buildModel({ arch: 'gpt', layers: 4, dModel: 32, heads: 2, kvCache: true, seed: 55 }), modelPath);
  const fragDir = path.join(dir, 'frags');
  const { manifest, manifestCid } = await fragmentModel(modelPath, fragDir, { parts });
  return { modelPath, fragDir, manifest, manifestCid };
}

export interface SupplyArgs {
  data: string;
  fragDir: string;
  fragments: string;
  bootstrap?: string;
  /** Paid: the keystore, chain config and price. */
  wallet?: string;
  chainConfig?: string;
  price?: string;
  /** Listen address (default: a free port on 127.0.0.1). */
  listen?: string;
  extra?: string[];
}

export interface StartedSupplier { proc: RunningProcess; peerId: string; addresses: string[]; admin: string; payee?: string }

/** Starts `gridpipe supply` hosting fragments of a folder, paid when a wallet is given. */
export async function startSupplier(a: SupplyArgs): Promise<StartedSupplier> {
  const args = ['supply', '--data', a.data, '--listen', a.listen ?? '/ip4/127.0.0.1/tcp/0', '--network', 'local', '--host', a.fragDir, '--fragments', a.fragments, '--admin-port', '0', '--json'];
  if (a.bootstrap) args.push('--bootstrap', a.bootstrap);
  if (a.wallet) args.push('--wallet', a.wallet, '--chain-config', a.chainConfig!, '--price-per-gflop', a.price ?? '0');
  args.push(...(a.extra ?? []));
  const proc = startGridpipe(args, { GRIDPIPE_PASSPHRASE: PASSPHRASE });
  const ready = (await proc.ready) as { peerId: string; addresses: string[]; admin: string; payee?: string };
  adminData.set(ready.admin, a.data);
  return { proc, peerId: ready.peerId, addresses: ready.addresses, admin: ready.admin, payee: ready.payee };
}

/** Data folder of each supplier started here, by admin URL: where its admin token is. */
const adminData = new Map<string, string>();

/** GET/POST on a supplier's admin endpoint (with its admin token), JSON. */
export async function admin(url: string, route: string, method: 'GET' | 'POST' = 'GET'): Promise<Record<string, unknown>> {
  const data = adminData.get(url);
  const token = data ? readAdminToken(data) : undefined;
  const res = await fetch(new URL(route, url), { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return await res.json() as Record<string, unknown>;
}

/** Polls until `check` holds (a hang guard, not a timing assertion). */
export async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export { parseUnits };

/**
 * What a payer signed to one payee against what its steps were charged, with the credit window
 * (gateway/payer): never less than charged, and at most one window ahead, i.e. WINDOW_STEPS more of the
 * largest step charge that could have started a window (`maxStep`).
 */
export function expectOneWindowAhead(signed: bigint, charged: bigint, maxStep: bigint, windowSteps = 16n): void {
  expect(signed).toBeGreaterThanOrEqual(charged);
  expect(signed - charged).toBeLessThanOrEqual(windowSteps * maxStep);
}
