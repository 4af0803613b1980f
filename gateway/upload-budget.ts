/**
 * Bytes of request bodies the gateway may be receiving at once, in total and per key, taken from each
 * request's declared length (or its route's body limit when it declares none) before its body is read, and
 * given back when the response ends or the connection drops. Per-route limits bound one upload; this bounds
 * many at once, so a keyed client cannot make the gateway buffer `N × --max-tensor-bytes`. O(1) per request.
 */
export class UploadBudget {
  private used = 0;
  private readonly byKey = new Map<string, number>();

  constructor(readonly totalBytes: number, readonly perKeyBytes: number) {}

  /** Takes `bytes` for `keyId`: 'ok', or which budget it would exceed. */
  take(keyId: string, bytes: number): 'ok' | 'total' | 'key' {
    const mine = this.byKey.get(keyId) ?? 0;
    if (mine + bytes > this.perKeyBytes) return 'key';
    if (this.used + bytes > this.totalBytes) return 'total';
    this.used += bytes;
    this.byKey.set(keyId, mine + bytes);
    return 'ok';
  }

  /** Gives back what `take` took. */
  give(keyId: string, bytes: number): void {
    this.used -= bytes;
    const left = (this.byKey.get(keyId) ?? 0) - bytes;
    if (left > 0) this.byKey.set(keyId, left);
    else this.byKey.delete(keyId);
  }

  /** Bytes taken now (tests, metrics). */
  get inFlight(): number { return this.used; }
}
