/**
 * Bounds on the credit a supplier extends: work it runs beyond what a payer's best voucher pays for.
 * Credit per payer alone is not enough: one libp2p peer could name many payers (each with a little escrow)
 * and take the per-payer limit from each. So every base unit of credit is also attributed to the remote peer
 * that asked for it, and bounded per peer and in total over all payers. In memory only: after a restart
 * the unpaid work of earlier runs is attributed to the next peer that adds to it (conservative).
 */

/** Why credit was refused (the gate turns it into an UNPAID error). */
export interface CreditRefusal { message: string }

export interface CreditLimitsInit {
  /** Most credit all payers asked for by one remote peer may hold, base units. */
  perPeer: bigint;
  /** Most credit held over all payers and peers, base units. */
  total: bigint;
}

export class CreditLimits {
  /** Per payer: credit held, by the peer it was extended to. */
  private readonly byPayer = new Map<string, Map<string, bigint>>();
  private readonly byPeer = new Map<string, bigint>();
  private totalHeld = 0n;

  constructor(private readonly init: CreditLimitsInit) {}

  /** Credit held for `payer`, over all peers. */
  held(payer: string): bigint {
    let sum = 0n;
    for (const v of this.byPayer.get(payer)?.values() ?? []) sum += v;
    return sum;
  }

  /** Credit held by the steps of `peer`, over all payers. */
  heldByPeer(peer: string): bigint {
    return this.byPeer.get(peer) ?? 0n;
  }

  get total(): bigint {
    return this.totalHeld;
  }

  /**
   * Sets the credit of `payer` to `unpaid` (its work beyond its best voucher), attributing any growth to
   * `peer`. Returns a refusal, and changes nothing, when the growth would pass the peer's or the total bound.
   */
  reserve(payer: string, peer: string, unpaid: bigint): CreditRefusal | undefined {
    const held = this.held(payer);
    if (unpaid <= held) {
      this.shrink(payer, unpaid);
      return undefined;
    }
    const grow = unpaid - held;
    const peerHeld = this.heldByPeer(peer);
    if (peerHeld + grow > this.init.perPeer) {
      return { message: `peer ${peer} already holds ${peerHeld} base units of unpaid work over all its payers; this step would pass this supplier's limit of ${this.init.perPeer} per peer` };
    }
    if (this.totalHeld + grow > this.init.total) {
      return { message: `this supplier already extends ${this.totalHeld} base units of credit over all payers; this step would pass its total limit of ${this.init.total}` };
    }
    let perPeer = this.byPayer.get(payer);
    if (!perPeer) this.byPayer.set(payer, (perPeer = new Map()));
    perPeer.set(peer, (perPeer.get(peer) ?? 0n) + grow);
    this.byPeer.set(peer, peerHeld + grow);
    this.totalHeld += grow;
    return undefined;
  }

  /** Lowers the credit of `payer` to at most `unpaid` (a voucher paid for work, a step was given back). */
  shrink(payer: string, unpaid: bigint): void {
    const perPeer = this.byPayer.get(payer);
    if (!perPeer) return; // the common case: a payer that pays in advance holds no credit
    let excess = this.held(payer) - (unpaid > 0n ? unpaid : 0n);
    for (const [peer, amount] of perPeer) {
      if (excess <= 0n) break;
      const cut = amount < excess ? amount : excess;
      excess -= cut;
      this.totalHeld -= cut;
      const peerLeft = (this.byPeer.get(peer) ?? 0n) - cut;
      if (peerLeft > 0n) this.byPeer.set(peer, peerLeft); else this.byPeer.delete(peer);
      if (amount === cut) perPeer.delete(peer); else perPeer.set(peer, amount - cut);
    }
    if (perPeer.size === 0) this.byPayer.delete(payer);
  }
}
