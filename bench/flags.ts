/** The benches' numeric flags (`--name=N`), checked: a bench run with a typo must not measure something else. */
import { GridpipeError } from '../errors/base.js';

/** A bench flag with a bad value (the runner prints it as one line and exits 2). */
export class BenchFlagError extends GridpipeError<'BENCH_FLAG'> {
  constructor(message: string) {
    super('BENCH_FLAG', message, { badInput: true });
  }
}

/** The value of `--name=N` among `flags`, or `fallback`; BenchFlagError unless it is a positive integer. */
export function positiveIntFlag(flags: readonly string[], name: string, fallback: number): number {
  const hit = flags.find((f) => f.startsWith(`--${name}=`));
  const value = hit ? Number(hit.slice(name.length + 3)) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new BenchFlagError(`--${name} must be a positive integer, not "${hit?.slice(name.length + 3)}"`);
  return value;
}
