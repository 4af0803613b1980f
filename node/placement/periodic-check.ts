/**
 * The loop the placement agents share: run a check at random intervals, uniform(0.5, 1.5) × the mean (so suppliers
 * that started together do not check in step), one at a time, until stopped. A check's failure is logged by the
 * caller's handler and the loop goes on; `stop` waits for a check in flight.
 */
export interface PeriodicCheckInit {
  /** Mean time between checks, ms. */
  meanMs: number;
  random: () => number;
  check: () => Promise<unknown>;
  /** A failed check (the loop goes on). */
  onError: (err: Error) => void;
}

export class PeriodicCheck {
  private timer?: ReturnType<typeof setTimeout>;
  private running?: Promise<unknown>;
  private stopped = false;
  /** Multiplies the next wait only. */
  private backoff = 1;

  constructor(private readonly init: PeriodicCheckInit) {}

  /** Starts the loop (again a no-op while it runs or after stop). */
  start(): void {
    if (this.stopped || this.timer) return;
    this.schedule();
  }

  /** Makes the next wait `factor` times as long (after an abandoned move, say). */
  backOff(factor: number): void {
    this.backoff = factor;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const run = this.init.check().catch((err: unknown) => { if (!this.stopped) this.init.onError(err as Error); });
      this.running = run;
      void run.finally(() => { if (this.running === run) this.running = undefined; this.schedule(); });
    }, this.init.meanMs * (0.5 + this.init.random()) * this.backoff);
    this.backoff = 1;
    this.timer.unref?.();
  }

  /** Stops the loop and waits for a check in flight to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }
}
