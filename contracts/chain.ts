/**
 * How the supplier, the gateway's payer and the CLI reach the chain: the chain config file (written by
 * contracts/deploy.ts), an optional RPC URL that overrides the one in it, and an encrypted keystore wallet
 * (passphrase from $GRIDPIPE_PASSPHRASE).
 */
import { getAddress, type JsonRpcProvider, type Wallet } from 'ethers';
import { connectGrid, createProvider, readChainConfig, type ChainConfig, type GridContracts } from './bindings.js';
import { loadKeystore } from './wallet.js';
import { GridpipeError } from '../errors/base.js';

export interface ChainAccessOptions {
  /** Chain config JSON (addresses, chain id, RPC URL). */
  chainConfig: string | ChainConfig;
  /** RPC URL to use instead of the config's. */
  rpcUrl?: string;
  /** Keystore file, or a wallet already decrypted (tests, the devnet). */
  wallet?: string | Wallet;
}

/** A connected view of the grid's contracts, signing as the wallet when there is one. */
export interface ChainAccess {
  config: ChainConfig;
  provider: JsonRpcProvider;
  /** The wallet, connected to the provider; undefined for read-only access. */
  wallet?: Wallet;
  /** The wallet's address (checksummed), when there is a wallet. */
  address?: string;
  contracts: GridContracts;
  close(): void;
}

export class ChainAccessError extends GridpipeError<'BAD_CHAIN_CONFIG' | 'NO_WALLET'> {
  override name = 'ChainAccessError';
  constructor(code: 'BAD_CHAIN_CONFIG' | 'NO_WALLET', message: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, badInput: true });
  }
}

/** Reads the config, connects a provider and decrypts the wallet. */
export async function openChain(options: ChainAccessOptions): Promise<ChainAccess> {
  let config: ChainConfig;
  if (typeof options.chainConfig === 'string') {
    try {
      config = readChainConfig(options.chainConfig);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') throw new ChainAccessError('BAD_CHAIN_CONFIG', `no chain config at ${options.chainConfig}`, { cause: err });
      throw new ChainAccessError('BAD_CHAIN_CONFIG', `chain config ${options.chainConfig}: ${e.message}`, { cause: err });
    }
  } else {
    config = options.chainConfig;
  }
  if (options.rpcUrl) config = { ...config, rpcUrl: options.rpcUrl };
  const provider = createProvider(config.rpcUrl, config.chainId);
  let wallet: Wallet | undefined;
  try {
    if (typeof options.wallet === 'string') wallet = await loadKeystore(options.wallet, { provider });
    else if (options.wallet) wallet = options.wallet.connect(provider);
  } catch (err) {
    provider.destroy();
    throw err;
  }
  return {
    config,
    provider,
    wallet,
    address: wallet ? getAddress(wallet.address) : undefined,
    contracts: connectGrid(config, wallet ?? provider),
    close: () => provider.destroy(),
  };
}

/** The wallet of an access, or NO_WALLET naming what needs one. */
export function requireWallet(access: ChainAccess, forWhat: string): Wallet {
  if (!access.wallet) throw new ChainAccessError('NO_WALLET', `${forWhat} needs a wallet (--wallet KEYSTORE, passphrase in GRIDPIPE_PASSPHRASE)`);
  return access.wallet;
}
