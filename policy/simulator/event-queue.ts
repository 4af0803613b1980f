/**
 * The simulator's clock and agenda: a binary min-heap of callbacks keyed by (time, insertion order),
 * so events at the same instant run in the order they were scheduled and a run is deterministic.
 * Times are simulated milliseconds.
 */
/** An object that handles its own events (avoids a closure per event on hot paths). */
export interface Fireable {
  fire(kind: number): void;
}

type Entry = (() => void) | Fireable;

export class EventQueue {
  /** The current simulated time, ms. */
  now = 0;
  /** Callbacks run so far. */
  processed = 0;
  private times: number[] = [];
  private seqs: number[] = [];
  private fns: Entry[] = [];
  private kinds: number[] = [];
  private seq = 0;

  get size(): number {
    return this.times.length;
  }

  /** Runs `fn` at absolute time `at` (never before now). */
  at(at: number, fn: () => void): void {
    this.push(at, fn, -1);
  }

  /** Calls `target.fire(kind)` after `delay` ms. */
  fire(delay: number, target: Fireable, kind: number): void {
    this.push(this.now + delay, target, kind);
  }

  private push(at: number, fn: Entry, kind: number): void {
    const t = at < this.now ? this.now : at;
    const s = this.seq++;
    let i = this.times.length;
    this.times.push(t);
    this.seqs.push(s);
    this.fns.push(fn);
    this.kinds.push(kind);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.times[parent] < t || (this.times[parent] === t && this.seqs[parent] < s)) break;
      this.times[i] = this.times[parent];
      this.seqs[i] = this.seqs[parent];
      this.fns[i] = this.fns[parent];
      this.kinds[i] = this.kinds[parent];
      i = parent;
    }
    this.times[i] = t;
    this.seqs[i] = s;
    this.fns[i] = fn;
    this.kinds[i] = kind;
  }

  /** Runs `fn` after `delay` ms. */
  after(delay: number, fn: () => void): void {
    this.at(this.now + delay, fn);
  }

  /** Time of the next event, or Infinity when none is left. */
  peekTime(): number {
    return this.times.length ? this.times[0] : Number.POSITIVE_INFINITY;
  }

  /** Runs events in order until the next one is later than `end` (the clock then stands at `end`). */
  runUntil(end: number): void {
    while (this.times.length && this.times[0] <= end) {
      const kind = this.kinds[0];
      const fn = this.pop();
      this.processed++;
      if (kind < 0) (fn as () => void)();
      else (fn as Fireable).fire(kind);
    }
    if (end > this.now && Number.isFinite(end)) this.now = end;
  }

  private pop(): Entry {
    const times = this.times;
    const seqs = this.seqs;
    const fns = this.fns;
    const kinds = this.kinds;
    const top = fns[0];
    this.now = times[0];
    const lastT = times.pop()!;
    const lastS = seqs.pop()!;
    const lastF = fns.pop()!;
    const lastK = kinds.pop()!;
    const n = times.length;
    if (n > 0) {
      let i = 0;
      while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        let c = l;
        if (r < n && (times[r] < times[l] || (times[r] === times[l] && seqs[r] < seqs[l]))) c = r;
        if (times[c] > lastT || (times[c] === lastT && seqs[c] > lastS)) break;
        times[i] = times[c];
        seqs[i] = seqs[c];
        fns[i] = fns[c];
        kinds[i] = kinds[c];
        i = c;
      }
      times[i] = lastT;
      seqs[i] = lastS;
      fns[i] = lastF;
      kinds[i] = lastK;
    }
    return top;
  }
}
