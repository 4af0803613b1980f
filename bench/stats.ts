/** The figures every benchmark reports from its samples (one definition, so results compare across benches). */

/** The median of unsorted samples (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The sample at rank floor(q·n) of the sorted samples (q in [0, 1]): p90 is quantile(xs, 0.9). */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
