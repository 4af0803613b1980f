/** Bounding how long shutdown work may take. */

/** `work`, or a rejection naming `what` once `ms` have passed (the work itself goes on; its result is dropped). */
export function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took more than ${ms / 1000} s`)), ms); });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
