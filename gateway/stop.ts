/**
 * `stop` strings over streamed text: text is released only once no stop string can still begin in it, so a
 * stop string split over several tokens (or chunks) is caught and never shown.
 */
export class StopMatcher {
  private held = '';
  private stopped = false;

  constructor(private readonly stops: string[]) {}

  get done(): boolean { return this.stopped; }

  /** Adds text; returns what can be shown now. After a stop string is found, returns the text before it and is done. */
  push(text: string): string {
    if (this.stopped) return '';
    if (this.stops.length === 0) return text;
    this.held += text;
    let cut = -1;
    for (const s of this.stops) {
      const at = this.held.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      const out = this.held.slice(0, cut);
      this.held = '';
      return out;
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.held.length); n > keep; n--) {
        if (this.held.endsWith(s.slice(0, n))) { keep = n; break; }
      }
    }
    const out = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return out;
  }

  /** The text still held when generation ends without a stop. */
  flush(): string {
    const out = this.stopped ? '' : this.held;
    this.held = '';
    return out;
  }
}
