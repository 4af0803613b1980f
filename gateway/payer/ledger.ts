/**
 * The payer's ledger: per (payer, payee), the latest cumulative voucher signed (amount, deadline, signature). It is a
 * LevelDB (classic-level) written with `sync: true` before a voucher leaves the gateway, so a restarted
 * gateway continues each payee's cumulative amount instead of signing from zero again (which a supplier
 * would ignore as superseded, leaving the work unpaid).
 */
import type { ClassicLevel } from 'classic-level';
import { signedVoucherFromJson, signedVoucherToJson, type SignedVoucher, type SignedVoucherJson } from '../../contracts/eip712.js';
import { openDurableDb } from '../../net/durable-db.js';
import { GridpipeError } from '../../errors/base.js';

export class PayerLedgerError extends GridpipeError<'LOCKED'> {
  override name = 'PayerLedgerError';
  constructor(code: 'LOCKED', message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

const PREFIX = 'voucher/';
const keyOf = (payer: string, payee: string): string => `${payer}/${payee}`;

export class PayerLedger {
  private readonly latest = new Map<string, SignedVoucher>();

  private constructor(private readonly db: ClassicLevel<string, string>) {}

  /** Opens (creating) the ledger in `dir`. */
  static async open(dir: string): Promise<PayerLedger> {
    const db = await openDurableDb(dir, (cause) => new PayerLedgerError('LOCKED', `the payer ledger at ${dir} is in use by another process (a running gateway?)`, { cause }));
    const ledger = new PayerLedger(db);
    for await (const [, value] of db.iterator({ gte: PREFIX, lt: `${PREFIX}\xff` })) {
      const v = signedVoucherFromJson(JSON.parse(value) as SignedVoucherJson);
      ledger.latest.set(keyOf(v.payer, v.payee), v);
    }
    return ledger;
  }

  /** The latest voucher `payer` signed to `payee` (checksummed addresses). */
  get(payer: string, payee: string): SignedVoucher | undefined {
    return this.latest.get(keyOf(payer, payee));
  }

  /** The latest voucher to each payee of `payer`. */
  all(payer: string): SignedVoucher[] {
    return [...this.latest.values()].filter((v) => v.payer === payer);
  }

  /** Stores a new latest voucher, fsync'd, before anyone sees it. */
  async record(v: SignedVoucher): Promise<void> {
    await this.db.put(`${PREFIX}${keyOf(v.payer, v.payee)}`, JSON.stringify(signedVoucherToJson(v)), { sync: true });
    this.latest.set(keyOf(v.payer, v.payee), v);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
