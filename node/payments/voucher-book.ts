/**
 * The supplier's voucher book: per payer, the work charged, the best (highest) voucher received and what
 * has been redeemed on chain. It lives in a LevelDB (classic-level) in the supplier's data folder, and a
 * new best voucher is written with `sync: true` (fsync) before the step it pays for runs: a voucher the
 * supplier has acknowledged survives a crash, and a restarted supplier redeems it. Durable writes that
 * arrive together share one fsync (group commit: one LevelDB batch with `sync: true`). Per-step charges are
 * counted in memory only (`durable: 'memory'`) and reach the disk with the account's next write.
 */
import type { ClassicLevel } from 'classic-level';
import path from 'node:path';
import { openDurableDb } from '../../net/durable-db.js';
import { KeyedMutex } from './balances.js';
import { signedVoucherFromJson, signedVoucherToJson, type SignedVoucher, type SignedVoucherJson } from '../../contracts/eip712.js';
import { GridpipeError } from '../../errors/base.js';


/** How a write is kept: true fsync'd (group commit), false written without fsync, 'memory' in memory only. */
export type Durability = boolean | 'memory';

/** What the book holds for one payer. */
export interface PayerAccount {
  payer: string;
  /** Work delivered to this payer (sum of step charges), base units. */
  charged: bigint;
  /** The highest voucher received; undefined before the first. */
  best?: SignedVoucher;
  /** Cumulative amount redeemed on chain for this payer (as far as this supplier knows). */
  redeemed: bigint;
}

interface AccountJson {
  payer: string;
  charged: string;
  redeemed: string;
  best?: SignedVoucherJson;
}

export class VoucherBookError extends GridpipeError<'LOCKED' | 'CORRUPT'> {
  override name = 'VoucherBookError';
  constructor(code: 'LOCKED' | 'CORRUPT', message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** The folder of the voucher book inside a supplier's data folder. */
export function voucherBookDir(dataDir: string): string {
  return path.join(dataDir, 'payments', 'vouchers');
}

const KEY_PREFIX = 'payer/';

function toJson(a: PayerAccount): string {
  const j: AccountJson = { payer: a.payer, charged: a.charged.toString(), redeemed: a.redeemed.toString() };
  if (a.best) j.best = signedVoucherToJson(a.best);
  return JSON.stringify(j);
}

function fromJson(text: string): PayerAccount {
  const j = JSON.parse(text) as AccountJson;
  return {
    payer: j.payer,
    charged: BigInt(j.charged),
    redeemed: BigInt(j.redeemed),
    best: j.best ? signedVoucherFromJson(j.best) : undefined,
  };
}

/** Per-payer accounts, cached in memory, written through to LevelDB. */
export class VoucherBook {
  private readonly accounts = new Map<string, PayerAccount>();
  private readonly locks = new KeyedMutex();

  private constructor(private readonly db: ClassicLevel<string, string>) {}

  /** Opens (creating) the book in `dir` and loads every account. LOCKED when another process holds it. */
  static async open(dir: string): Promise<VoucherBook> {
    const db = await openDurableDb(dir, (cause) => new VoucherBookError('LOCKED', `the voucher book at ${dir} is in use by another process (a running supplier?)`, { cause }));
    const book = new VoucherBook(db);
    for await (const [key, value] of db.iterator({ gte: KEY_PREFIX, lt: `${KEY_PREFIX}\xff` })) {
      try {
        const a = fromJson(value);
        book.accounts.set(a.payer, a);
      } catch (err) {
        await db.close();
        throw new VoucherBookError('CORRUPT', `voucher book entry ${key} cannot be read: ${(err as Error).message}`, { cause: err });
      }
    }
    return book;
  }

  /** The account of `payer` (checksummed address); a fresh empty one when unknown (not stored until saved). */
  get(payer: string): PayerAccount {
    return this.accounts.get(payer) ?? { payer, charged: 0n, redeemed: 0n };
  }

  /** Every account, in payer order. */
  all(): PayerAccount[] {
    return [...this.accounts.values()].sort((a, b) => a.payer.localeCompare(b.payer));
  }

  /**
   * Stores an account. `durable` (default true) waits for fsync: use it for anything that must survive a
   * crash (a new best voucher, what was redeemed); false writes without fsync; 'memory' keeps the change in
   * memory only (per-step charges: they go to disk with the account's next write).
   */
  save(account: PayerAccount, durable: Durability = true): Promise<void> {
    return this.update(account.payer, (_current, save) => save(account, durable));
  }

  /**
   * Reads, changes and stores one payer's account with no other change to it in between: the gate (new
   * vouchers, charges) and the redeemer (what was redeemed) both write accounts, and a write made from a copy
   * read before the other's would silently undo it — a charge, or a voucher. `fn` gets the current account and
   * a `save` (see save() for `durable`); what it returns is returned.
   */
  update<T>(payer: string, fn: (account: PayerAccount, save: (next: PayerAccount, durable?: Durability) => Promise<void>) => Promise<T>): Promise<T> {
    return this.locks.run(payer, () => fn(this.get(payer), (next, durable = true) => this.write(next, durable)));
  }

  /** fsync'd batches written so far (each may hold several accounts: group commit). */
  syncedBatches = 0;
  private queued: { key: string; value: string; done: (err?: unknown) => void }[] = [];
  private flushing?: Promise<void>;

  private async write(account: PayerAccount, durable: Durability): Promise<void> {
    const copy: PayerAccount = { ...account, best: account.best ? { ...account.best } : undefined };
    if (durable === 'memory') {
      // Only charges change this way; a voucher or a redemption never does (memory never claims more than the disk holds).
      const stored = this.accounts.get(copy.payer);
      this.accounts.set(copy.payer, { ...copy, best: stored?.best ?? copy.best, redeemed: stored?.redeemed ?? copy.redeemed });
      return;
    }
    if (durable) await this.commit(`${KEY_PREFIX}${copy.payer}`, toJson(copy));
    else await this.db.put(`${KEY_PREFIX}${copy.payer}`, toJson(copy), { sync: false });
    this.accounts.set(copy.payer, copy); // only once on disk: memory never claims more than the disk holds
  }

  /** Writes `key` with fsync, together with every other durable write queued meanwhile (one batch, one fsync). */
  private commit(key: string, value: string): Promise<void> {
    const written = new Promise<void>((resolve, reject) => this.queued.push({ key, value, done: (err) => (err ? reject(err) : resolve()) }));
    if (!this.flushing) this.flushing = this.flush();
    return written;
  }

  private async flush(): Promise<void> {
    await Promise.resolve(); // let writes issued in the same turn join the batch
    while (this.queued.length) {
      const batch = this.queued;
      this.queued = [];
      try {
        await this.db.batch(batch.map(({ key, value }) => ({ type: 'put' as const, key, value })), { sync: true });
        this.syncedBatches++;
        for (const w of batch) w.done();
      } catch (err) {
        for (const w of batch) w.done(err);
      }
    }
    this.flushing = undefined;
  }

  async close(): Promise<void> {
    await this.flushing;
    await this.db.close();
  }
}
