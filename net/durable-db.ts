/**
 * The payment stores' database: LevelDB (classic-level) in a folder, opened by one process at a time.
 * Vouchers are bearer value (anyone holding one can redeem it for its payee) and the books show who paid
 * whom: the folder is the owner's only (0700, its files 0600), whatever the umask.
 */
import { chmodSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';

/** Opens (creating) a string-keyed LevelDB in `dir`; when another process holds it, throws `whenLocked(err)`. */
export async function openDurableDb(dir: string, whenLocked: (cause: unknown) => Error): Promise<ClassicLevel<string, string>> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700); // a folder made by an earlier version (0755) too
  const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  try {
    await db.open();
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    if ((err as { code?: string }).code === 'LEVEL_LOCKED' || cause?.code === 'LEVEL_LOCKED') throw whenLocked(err);
    throw err;
  }
  // LevelDB creates its files with the umask (often 0644); files it makes later are inside the 0700 folder.
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isFile()) chmodSync(path.join(dir, entry.name), 0o600);
  return db;
}
