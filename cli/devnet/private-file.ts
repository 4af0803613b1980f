/**
 * Files that hold secrets (devnet.json and keys.json carry the API key): written owner-only (0600), also
 * when an older run left them readable (writeFile's mode only applies to a new file), in a folder only
 * its owner can list (0700).
 */
import { chmod, writeFile } from 'node:fs/promises';

/** Writes `text` to `file` with mode 0600, fixing the mode of a file that already existed. */
export async function writePrivateFile(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600 });
  await chmod(file, 0o600);
}
