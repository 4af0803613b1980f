/** Checks `gridpipe devnet` makes before it starts anything, so a bad setting fails fast and leaves nothing behind. */
import { accessSync, chmodSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { UsageError } from '../errors.js';

/**
 * Creates the data folder if needed, owner-only (0700: it holds the API key, wallets and devnet.json; a folder
 * of ours left more open is closed); a file in its place, or a folder we cannot write, is a usage error.
 */
export function ensureDataDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new UsageError(`--data ${dir}: this is a file, not a folder`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (process.platform !== 'win32' && statSync(dir).uid === process.getuid?.()) chmodSync(dir, 0o700);
    accessSync(dir, constants.W_OK | constants.R_OK);
  } catch (err) {
    throw new UsageError(`--data ${dir}: cannot use this folder (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Throws a usage error naming the port when something already listens on 127.0.0.1:`port` (0 always passes). */
export async function ensurePortFree(port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE'
        ? new UsageError(`port ${port} is already in use on 127.0.0.1; stop what uses it or pick another with --port`)
        : new UsageError(`port ${port}: cannot listen on it (${err.code ?? err.message})`));
    });
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve()));
  });
}
