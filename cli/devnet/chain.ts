/**
 * The devnet's local chain: a fresh anvil, the contracts deployed with short delays, a developer and
 * one account per supplier funded with GRID, each supplier staked and the developer's escrow filled.
 * The accounts are anvil's well-known dev accounts (public keys: local chains only), kept as keystores
 * under DATA_DIR/wallets with the devnet passphrase so the supplier and gateway processes load them the
 * way they would load a real wallet.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { NonceManager, parseUnits, Wallet } from 'ethers';
import { startAnvil, type AnvilNode } from '../../contracts/anvil.js';
import { deployGrid } from '../../contracts/deploy.js';
import { createProvider, type ChainConfig } from '../../contracts/bindings.js';
import { actingAs, deposit, stake, type ActingAccount } from '../../contracts/actions.js';
import { saveKeystore } from '../../contracts/wallet.js';

/** The passphrase of the devnet's keystores (they hold anvil's public dev keys, nothing of value). */
export const DEVNET_PASSPHRASE = 'gridpipe-devnet';

/** What the devnet funds: token amounts in whole GRID. */
export const DEVNET_FUNDS = {
  supplierGrid: '1000',
  supplierStake: '100',
  developerGrid: '10000',
  developerEscrow: '1000',
} as const;

export interface DevnetAccount { address: string; keystore: string }

export interface DevnetChain {
  anvil: AnvilNode;
  config: ChainConfig;
  configPath: string;
  developer: DevnetAccount;
  suppliers: DevnetAccount[];
  /** The DisputeManager's arbiter: its own account, run by `gridpipe arbiter` (issue 21), not the deployer. */
  arbiter: DevnetAccount;
  /** Stops anvil (idempotent). */
  stop(): Promise<void>;
}

export interface DevnetChainOptions {
  dir: string;
  suppliers: number;
  /** Called as each step finishes, for progress lines. */
  onStep?: (what: string) => void;
}

/** Starts anvil, deploys the contracts, funds and stakes: the chain part of `gridpipe devnet`. */
export async function startDevnetChain(options: DevnetChainOptions): Promise<DevnetChain> {
  const step = options.onStep ?? (() => undefined);
  // Account 0 deploys and owns; 1 is the developer; 2.. are the suppliers; the last one is the arbiter.
  const anvil = await startAnvil({ accounts: options.suppliers + 3, balanceEth: 1000 });
  const arbiterKey = anvil.accounts[options.suppliers + 2].privateKey;
  try {
    step(`local chain (anvil) at ${anvil.rpcUrl}, chain id ${anvil.chainId}`);
    const provider = createProvider(anvil.rpcUrl, anvil.chainId);
    const owner = new NonceManager(new Wallet(anvil.accounts[0].privateKey, provider));
    const configPath = path.join(options.dir, 'chain.json');
    const { config, contracts } = await deployGrid({
      rpcUrl: anvil.rpcUrl, signer: owner, configPath,
      // Short delays so a newcomer can try unstake/withdraw in minutes; the challenge window fits within unbonding.
      params: {
        minimumStake: parseUnits(DEVNET_FUNDS.supplierStake, 18), unbondingDelay: 120, withdrawalDelay: 120,
        dispute: { challengeWindow: 120, slashAmount: parseUnits('50', 18), disputeBond: parseUnits('10', 18), challengerRewardBps: 5000, arbiter: new Wallet(arbiterKey).address },
      },
    });
    step(`contracts deployed (token ${config.token}, escrow ${config.paymentEscrow})`);

    const walletDir = path.join(options.dir, 'wallets');
    await mkdir(walletDir, { recursive: true });
    const keystoreOf = async (privateKey: string, name: string): Promise<DevnetAccount> => {
      const wallet = new Wallet(privateKey);
      const file = path.join(walletDir, `${name}-${wallet.address.slice(2, 10).toLowerCase()}.json`);
      // Cheap scrypt: these keys are public anyway; a real wallet uses `gridpipe wallet new`.
      if (!existsSync(file)) await saveKeystore(wallet, file, { passphrase: DEVNET_PASSPHRASE, scryptN: 1024 });
      return { address: wallet.address, keystore: file };
    };
    const developer = await keystoreOf(anvil.accounts[1].privateKey, 'developer');
    const arbiter = await keystoreOf(arbiterKey, 'arbiter');
    const suppliers = await Promise.all(anvil.accounts.slice(2, 2 + options.suppliers).map((a, i) => keystoreOf(a.privateKey, `supplier-${i}`)));

    const account = (privateKey: string): Promise<ActingAccount> => actingAs(config, new NonceManager(new Wallet(privateKey, provider)));
    // Mint from the owner in sequence (one nonce stream), then each account approves and stakes/deposits on its own.
    await (await contracts.token.mint(developer.address, parseUnits(DEVNET_FUNDS.developerGrid, 18))).wait();
    for (const s of suppliers) await (await contracts.token.mint(s.address, parseUnits(DEVNET_FUNDS.supplierGrid, 18))).wait();
    const stakeAmount = parseUnits(DEVNET_FUNDS.supplierStake, 18);
    await Promise.all(anvil.accounts.slice(2, 2 + options.suppliers).map(async (a) => {
      await stake(await account(a.privateKey), { amount: stakeAmount });
    }));
    step(`${suppliers.length} suppliers funded with ${DEVNET_FUNDS.supplierGrid} GRID, ${DEVNET_FUNDS.supplierStake} staked each`);
    await deposit(await account(anvil.accounts[1].privateKey), { amount: parseUnits(DEVNET_FUNDS.developerEscrow, 18) });
    step(`developer ${developer.address} funded, ${DEVNET_FUNDS.developerEscrow} GRID in escrow`);
    provider.destroy();
    return { anvil, config, configPath, developer, suppliers, arbiter, stop: () => anvil.stop() };
  } catch (err) {
    await anvil.stop();
    throw err;
  }
}
