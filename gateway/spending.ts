/**
 * What each API key has spent, kept on disk (LevelDB, fsync'd writes) so a budget still holds after the gateway
 * restarts. Keys are stored by the SHA-256 of their secret, never the secret itself.
 */
import type { ClassicLevel } from 'classic-level';
import { openDurableDb } from '../net/durable-db.js';
import { GridpipeError } from '../errors/base.js';

const PREFIX = 'spent/';

/** Raised when another gateway process holds the same data folder. */
export class SpendingLedgerError extends GridpipeError<'LOCKED'> {
  override name = 'SpendingLedgerError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('LOCKED', message, options);
  }
}

export class SpendingLedger {
  /** Writes in flight per key, chained so the last amount written is the last one charged. */
  private readonly writes = new Map<string, Promise<void>>();

  private constructor(private readonly db: ClassicLevel<string, string>) {}

  /** Opens (creating) the ledger in `dir`. */
  static async open(dir: string): Promise<SpendingLedger> {
    const db = await openDurableDb(dir, (cause) => new SpendingLedgerError(`the spending ledger at ${dir} is in use by another process (a running gateway?)`, { cause }));
    return new SpendingLedger(db);
  }

  /** What each of these keys (by id) has spent so far (0 for a key never charged). */
  async load(ids: string[]): Promise<Map<string, bigint>> {
    const out = new Map<string, bigint>();
    for (const id of ids) {
      const value = await this.db.get(PREFIX + id);
      out.set(id, value === undefined ? 0n : BigInt(value));
    }
    return out;
  }

  /** Records a key's new total; resolves once it is on disk. */
  record(id: string, spent: bigint): Promise<void> {
    const previous = this.writes.get(id) ?? Promise.resolve();
    const next = previous.then(() => this.db.put(PREFIX + id, spent.toString(), { sync: true }));
    this.writes.set(id, next.catch(() => undefined));
    return next;
  }

  /** Waits for pending writes and closes the database. */
  async close(): Promise<void> {
    await Promise.all(this.writes.values());
    await this.db.close();
  }
}
