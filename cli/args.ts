/** Parsers for CLI option values; each throws an error naming the option and what was wrong. */
import { InvalidArgumentError } from 'commander';

/** A positive integer. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

/** A non-negative integer. */
export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${value}"`);
  return n;
}

/** A TCP port, 0-65535 (0: any free port). */
export function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`expected a port number (0-65535), got "${value}"`);
  return n;
}

/** A positive number. */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got "${value}"`);
  return n;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3, t: 1e12, tb: 1e12, tib: 1024 ** 4 };

/** A byte count such as 1048576, 512MB or 1.5GiB. */
export function byteSize(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InvalidArgumentError(`expected a byte size like 1048576, 512MB or 2GiB, got "${value}"`);
  const n = Math.floor(Number(m[1]) * unit);
  if (n <= 0) throw new InvalidArgumentError(`expected a positive byte size, got "${value}"`);
  return n;
}

/** Collects a repeatable option into an array. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Collects repeated `SYMBOL=VALUE` options into a record of positive integers. */
export function dimAssignment(value: string, previous: Record<string, number> = {}): Record<string, number> {
  const m = /^([^=]+)=(\d+)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected SYMBOL=VALUE (e.g. batch_size=1), got "${value}"`);
  return { ...previous, [m[1]]: Number(m[2]) };
}

/** Collects repeated `INPUT=D1,D2,...` options into a record of shapes. */
export function shapeAssignment(value: string, previous: Record<string, number[]> = {}): Record<string, number[]> {
  const m = /^([^=]+)=(\d+(?:,\d+)*)?$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected INPUT=D1,D2,... (e.g. input_ids=1,16), got "${value}"`);
  return { ...previous, [m[1]]: m[2] ? m[2].split(',').map(Number) : [] };
}

/** A whole number of token base units (a price or an amount). */
export function baseUnitAmount(value: string): bigint {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`expected a whole number of token base units, got "${value}"`);
  return BigInt(value);
}
