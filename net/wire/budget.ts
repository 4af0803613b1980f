/**
 * A byte budget shared by the frame readers of one remote peer (or one connection: the caller picks the
 * key): unread bytes summed over all its streams.
 *
 * Why: each stream's FrameReader caps its own unread bytes, but a peer can open many streams on one
 * connection and announce a big frame on each without sending its end (issue 13, attack 7: 60 MiB frames
 * held 126 MB on 4 streams; the caps multiplied to ~16 GiB per connection). With a shared budget the
 * stream whose bytes pass the shared cap fails (BUFFER_FULL) and is aborted, and its bytes are given
 * back. Costs one addition per received chunk.
 */

/** Unread bytes held by the readers that share one budget. */
export class ByteBudget {
  private held = 0;
  private users = 0;

  /** `parent`: a budget over this one and its siblings (a node-wide total), charged with every change. */
  constructor(readonly limit: number, private readonly onIdle?: () => void, private readonly parent?: ByteBudget) {}

  /** Bytes held now. */
  get bytes(): number {
    return this.held;
  }

  /** Adds `delta` (may be negative); false when the budget is now over its limit. */
  change(delta: number): boolean {
    this.held += delta;
    const parentOk = this.parent ? this.parent.change(delta) : true;
    return this.held <= this.limit && parentOk;
  }

  /** A reader starts using the budget. */
  acquire(): void {
    this.users++;
  }

  /** A reader stopped using the budget (its bytes already given back). */
  release(): void {
    if (--this.users <= 0 && this.held <= 0) this.onIdle?.();
  }
}

/** Budgets by key (a peer id, a connection id), dropped when the last reader of a key is gone. */
export class ByteBudgets {
  private readonly budgets = new Map<string, ByteBudget>();
  /** All keys together (Infinity: no total). */
  readonly total: ByteBudget;

  /** `limit` per key; `totalLimit` over all keys (many free peer ids cannot multiply `limit` without end). */
  constructor(readonly limit: number, totalLimit = Infinity) {
    this.total = new ByteBudget(totalLimit);
  }

  /** The budget of `id` (created on first use). */
  of(id: string): ByteBudget {
    let b = this.budgets.get(id);
    if (!b) {
      const budget: ByteBudget = new ByteBudget(this.limit, () => { if (this.budgets.get(id) === budget) this.budgets.delete(id); }, this.total);
      b = budget;
      this.budgets.set(id, b);
    }
    return b;
  }

  /** Keys with a budget in use. */
  get size(): number {
    return this.budgets.size;
  }

  /** The most unread bytes any one key holds now. */
  get maxHeld(): number {
    let max = 0;
    for (const b of this.budgets.values()) max = Math.max(max, b.bytes);
    return max;
  }
}
