/**
 * Escrow balances of payers, read from PaymentEscrow and cached for a while: a step must not wait for an
 * RPC round trip each time, and a balance only matters when a voucher would go beyond it (then it is read
 * again before the voucher is refused).
 */
export interface BalanceSource {
  balanceOf(payer: string): Promise<bigint>;
}

export class CachedBalances {
  private readonly cache = new Map<string, { value: bigint; at: number }>();

  constructor(private readonly source: BalanceSource, private readonly ttlMs = 15_000, private readonly now: () => number = Date.now) {}

  /** The balance, from the cache when younger than the TTL (or always fresh with `fresh`). */
  async get(payer: string, fresh = false): Promise<bigint> {
    const hit = this.cache.get(payer);
    if (!fresh && hit && this.now() - hit.at < this.ttlMs) return hit.value;
    const value = await this.source.balanceOf(payer);
    this.cache.set(payer, { value, at: this.now() });
    return value;
  }

  /** Whether the balance covers `amount`: a cached shortfall is re-read once before answering no. */
  async covers(payer: string, amount: bigint): Promise<{ ok: boolean; balance: bigint }> {
    let balance = await this.get(payer);
    if (balance < amount) balance = await this.get(payer, true);
    return { ok: balance >= amount, balance };
  }

  forget(payer: string): void {
    this.cache.delete(payer);
  }
}

/** Runs tasks one at a time per key (check-then-write sequences on one payer's account). */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    const result = before.then(task, task);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => { if (this.tails.get(key) === tail) this.tails.delete(key); });
    return result;
  }
}
