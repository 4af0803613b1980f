/** How the page writes numbers: sizes, token amounts (18 decimals), short peer ids and addresses, times. */

export function bytes(n: number | undefined): string {
  if (n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** Base units (a decimal string) as tokens with up to 6 decimals; amounts below 10^-6 tokens in scientific notation. */
export function tokens(baseUnits: string | undefined, decimals = 18): string {
  if (baseUnits === undefined || baseUnits === '') return '–';
  const v = BigInt(baseUnits);
  const unit = 10n ** BigInt(decimals);
  if (v > 0n && v * 1_000_000n < unit) return (Number(v) / Number(unit)).toExponential(2);
  const whole = v / unit;
  const frac = (v % unit).toString().padStart(decimals, '0').slice(0, 6).replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : whole.toString();
}

/** Base units as a float of tokens (charts). */
export function tokenFloat(baseUnits: string, decimals = 18): number {
  return Number(BigInt(baseUnits) / 10n ** BigInt(Math.max(0, decimals - 9))) / 1e9;
}

export function shortId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}

export function ms(v: number | undefined): string {
  if (v === undefined) return '–';
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 1 : 0)} ms`;
}

export function clock(at: number): string {
  return new Date(at).toLocaleTimeString();
}

export function ago(at: number | undefined): string {
  if (!at) return 'never';
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  return s < 60 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}
