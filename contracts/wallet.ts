/**
 * Wallets as encrypted JSON keystores (the Web3 Secret Storage format ethers reads and writes).
 * The passphrase comes from the caller or from $GRIDPIPE_PASSPHRASE. Secrets never appear in errors
 * or logs; keystore files are written with mode 0600 and never overwritten.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encryptKeystoreJson, getAddress, isKeystoreJson, Wallet, type BaseWallet, type Provider } from 'ethers';
import { GridpipeError } from '../errors/base.js';

export const PASSPHRASE_ENV = 'GRIDPIPE_PASSPHRASE';

export type WalletErrorCode = 'NO_PASSPHRASE' | 'WRONG_PASSPHRASE' | 'NOT_A_KEYSTORE' | 'EXISTS' | 'NOT_FOUND';

export class WalletError extends GridpipeError<WalletErrorCode> {
  override name = 'WalletError';
  constructor(code: WalletErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, badInput: true });
  }
}

export interface KeystoreOptions {
  /** The passphrase; default: $GRIDPIPE_PASSPHRASE. */
  passphrase?: string;
  /** scrypt cost (power of two). Default 131072 (ethers' default); tests may use less. */
  scryptN?: number;
}

/** The passphrase to use: the given one, else $GRIDPIPE_PASSPHRASE; throws when neither is set. */
export function resolvePassphrase(given?: string): string {
  const passphrase = given ?? process.env[PASSPHRASE_ENV];
  if (passphrase === undefined || passphrase === '') {
    throw new WalletError('NO_PASSPHRASE', `no passphrase: pass one or set ${PASSPHRASE_ENV}`);
  }
  return passphrase;
}

/** Creates a new random wallet and saves it as a keystore at `file`; returns its address. */
export async function createKeystore(file: string, options: KeystoreOptions = {}): Promise<{ address: string; file: string }> {
  const wallet = new Wallet(`0x${randomBytes(32).toString('hex')}`);
  await saveKeystore(wallet, file, options);
  return { address: wallet.address, file };
}

/** Encrypts `wallet`'s key into a keystore at `file` (mode 0600); refuses to overwrite. */
export async function saveKeystore(wallet: BaseWallet, file: string, options: KeystoreOptions = {}): Promise<void> {
  const passphrase = resolvePassphrase(options.passphrase);
  if (existsSync(file)) throw new WalletError('EXISTS', `keystore ${file} already exists`);
  const json = await encryptKeystoreJson(
    { address: wallet.address, privateKey: wallet.privateKey },
    passphrase,
    options.scryptN ? { scrypt: { N: options.scryptN } } : {},
  );
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${json}\n`, { mode: 0o600, flag: 'wx' });
}

/** Decrypts the keystore at `file`; connects the wallet to `provider` when given. */
export async function loadKeystore(file: string, options: { passphrase?: string; provider?: Provider } = {}): Promise<Wallet> {
  const json = readKeystoreText(file);
  const passphrase = resolvePassphrase(options.passphrase);
  let wallet: Wallet;
  try {
    const decrypted = await Wallet.fromEncryptedJson(json, passphrase);
    wallet = new Wallet(decrypted.privateKey);
  } catch (err) {
    const message = (err as Error).message ?? '';
    if (/password/i.test(message)) throw new WalletError('WRONG_PASSPHRASE', `wrong passphrase for keystore ${file}`);
    throw new WalletError('NOT_A_KEYSTORE', `cannot decrypt keystore ${file}`);
  }
  return options.provider ? wallet.connect(options.provider) : wallet;
}

/** The address a keystore holds, read without decrypting it. */
export function keystoreAddress(file: string): string {
  const raw = JSON.parse(readKeystoreText(file)) as { address?: string };
  if (!raw.address) throw new WalletError('NOT_A_KEYSTORE', `keystore ${file} names no address`);
  return getAddress(raw.address.startsWith('0x') ? raw.address : `0x${raw.address}`);
}

function readKeystoreText(file: string): string {
  if (!existsSync(file)) throw new WalletError('NOT_FOUND', `no keystore at ${file}`);
  const json = readFileSync(file, 'utf8');
  if (!isKeystoreJson(json)) throw new WalletError('NOT_A_KEYSTORE', `${file} is not a JSON keystore`);
  return json;
}
