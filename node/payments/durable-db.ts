/** The payment stores' database: LevelDB (classic-level) in a folder, opened by one process at a time. */
import { mkdirSync } from 'node:fs';
import { ClassicLevel } from 'classic-level';

/** Opens (creating) a string-keyed LevelDB in `dir`; when another process holds it, throws `whenLocked(err)`. */
export async function openDurableDb(dir: string, whenLocked: (cause: unknown) => Error): Promise<ClassicLevel<string, string>> {
  mkdirSync(dir, { recursive: true });
  const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  try {
    await db.open();
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    if ((err as { code?: string }).code === 'LEVEL_LOCKED' || cause?.code === 'LEVEL_LOCKED') throw whenLocked(err);
    throw err;
  }
  return db;
}
