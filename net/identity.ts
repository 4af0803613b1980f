/**
 * The node's identity: an Ed25519 key kept in `<dataDir>/identity.key` (libp2p protobuf encoding),
 * readable by its owner only (mode 0600). The same file gives the same PeerId on every start.
 *
 * A key file that group or others may read is refused (the key may have leaked; the error names the
 * `chmod` that fixes it) unless `fixPermissions` is set, which tightens it and says so. A file that is
 * not a libp2p private key is refused with an error saying how to start over (which changes the
 * PeerId); it is never overwritten silently.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PeerId, PrivateKey } from '@libp2p/interface';
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { GridpipeError } from '../errors/base.js';

export const IDENTITY_FILE = 'identity.key';
const KEY_MODE = 0o600;

export type IdentityErrorCode = 'CORRUPT_KEY' | 'LOOSE_PERMISSIONS' | 'NOT_A_FILE';

/** Why the identity could not be loaded; `code` says which case. */
export class IdentityError extends GridpipeError<IdentityErrorCode> {
  override readonly name = 'IdentityError';
  constructor(code: IdentityErrorCode, message: string, readonly keyPath: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, badInput: true });
  }
}

export interface Identity {
  privateKey: PrivateKey;
  peerId: PeerId;
  keyPath: string;
  /** True when this call generated the key (first start). */
  created: boolean;
}

export interface IdentityOptions {
  /** Tighten a key file that group/others can access to 0600 (with a warning) instead of refusing it. */
  fixPermissions?: boolean;
  logger?: Logger;
}

const checksModes = process.platform !== 'win32';

async function checkMode(keyPath: string, options: IdentityOptions): Promise<void> {
  const st = await stat(keyPath);
  if (!st.isFile()) throw new IdentityError('NOT_A_FILE', `identity key ${keyPath} is not a regular file`, keyPath);
  if (!checksModes) return;
  const loose = st.mode & 0o077;
  if (loose === 0) return;
  const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
  if (!options.fixPermissions) {
    throw new IdentityError('LOOSE_PERMISSIONS',
      `identity key ${keyPath} has mode ${mode}: other users may read this node's private key. ` +
      `Fix it with \`chmod 600 ${keyPath}\` (or pass fixPermissions), and consider the key leaked if others had access.`,
      keyPath);
  }
  await chmod(keyPath, KEY_MODE);
  options.logger?.warn({ keyPath, mode }, 'identity key was readable by others; tightened to 0600');
}

function decodeKey(bytes: Uint8Array, keyPath: string): PrivateKey {
  if (bytes.byteLength === 0) {
    throw new IdentityError('CORRUPT_KEY', `identity key ${keyPath} is empty. Move it away to create a new identity (this changes the node's PeerId).`, keyPath);
  }
  try {
    return privateKeyFromProtobuf(bytes);
  } catch (err) {
    throw new IdentityError('CORRUPT_KEY',
      `identity key ${keyPath} is not a valid libp2p private key (${(err as Error).message}). ` +
      'Restore it from a backup, or move it away to create a new identity (this changes the node\'s PeerId).',
      keyPath, { cause: err });
  }
}

/**
 * Loads the node's key from `<dataDir>/identity.key`, or creates an Ed25519 key there (mode 0600) on
 * the first start. Creation is atomic: two processes racing on one data dir end up with the same key.
 */
export async function loadOrCreateIdentity(dataDir: string, options: IdentityOptions = {}): Promise<Identity> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const keyPath = path.join(dataDir, IDENTITY_FILE);
  let created = false;
  let bytes: Uint8Array;
  try {
    await checkMode(keyPath, options);
    bytes = new Uint8Array(await readFile(keyPath));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const key = await generateKeyPair('Ed25519');
    bytes = privateKeyToProtobuf(key);
    // Write a private temp file, then hard-link it into place: link() fails if the key appeared meanwhile.
    const tmp = `${keyPath}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, bytes, { mode: KEY_MODE, flag: 'wx' });
    try {
      await chmod(tmp, KEY_MODE); // exact mode whatever the umask
      await link(tmp, keyPath);
      created = true;
    } catch (linkErr) {
      if ((linkErr as NodeJS.ErrnoException).code !== 'EEXIST') throw linkErr;
      await checkMode(keyPath, options);
      bytes = new Uint8Array(await readFile(keyPath));
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }
  const privateKey = decodeKey(bytes, keyPath);
  const peerId = peerIdFromPrivateKey(privateKey);
  options.logger?.info({ peerId: peerId.toString(), keyPath, created }, created ? 'created node identity' : 'loaded node identity');
  return { privateKey, peerId, keyPath, created };
}
