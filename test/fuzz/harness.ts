/**
 * What every fuzzer of test/fuzz shares, so their runs are reproducible and their verdicts the same:
 * - the run settings: a fixed seed and a bounded count in the normal test run, 10,000 inputs per target
 *   with `npm run fuzz` (GRIDPIPE_FUZZ_RUNS / GRIDPIPE_FUZZ_SEED override both);
 * - structure-aware inputs: bytes of a valid message, then mutated (bit flips, cuts, splices, inserted
 *   varints, repeated slices), as well as raw random bytes, so inputs get past the first tag;
 * - the verdict on an error: a GridpipeError with a message that says something (no TypeError, RangeError
 *   or protobufjs "index out of range" escaping a decoder);
 * - heap measurement after a forced collection, to show a run does not grow without bound;
 * - the run's report: with GRIDPIPE_FUZZ_REPORT set (the `fuzz` bench sets it), each target appends one JSON
 *   line (inputs, outcomes, heap) to that file, which bench/fuzz.ts turns into bench/results/fuzz.json.
 */
import fc from 'fast-check';
import { appendFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect } from 'vitest';
import { isGridpipeError } from '../../errors/base.js';

/** Inputs per target: small in the normal test run, 10,000 under `npm run fuzz`. */
export const FUZZ_RUNS = Number(process.env.GRIDPIPE_FUZZ_RUNS ?? 300);
/** The seed every fuzzer starts from (the normal run is the same inputs every time). */
export const FUZZ_SEED = Number(process.env.GRIDPIPE_FUZZ_SEED ?? 21);

/** fast-check settings of one target. */
export function fuzzParameters(runs = FUZZ_RUNS): fc.Parameters<unknown> {
  return { seed: FUZZ_SEED, numRuns: runs, endOnFailure: true };
}

/** Whether a whole fuzz run was asked for (longer timeouts then). */
export const LONG_RUN = FUZZ_RUNS > 1000;

/** One edit of a byte string. */
type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'cut'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'repeat'; at: number; length: number; times: number }
  | { kind: 'drop'; at: number; length: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0x00, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12, 0x1a, 0x22, 0x2a) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 12 }), varintBytes()) }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }), times: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('drop' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
);

/** A varint of an interesting size (0, small, around 2^31, 2^53, 2^64-1, over 10 bytes). */
function varintBytes(): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.constantFrom(
      Uint8Array.of(0), Uint8Array.of(0x7f), Uint8Array.of(0xff, 0x7f),
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f), Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x10),
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f),
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
    ),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map(encodeBigVarint),
  );
}

function encodeBigVarint(n: bigint): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80n) { out.push(Number(n & 0x7fn) | 0x80); n >>= 7n; }
  out.push(Number(n));
  return Uint8Array.from(out);
}

function apply(bytes: Uint8Array, m: Mutation): Uint8Array {
  const n = bytes.byteLength;
  const at = n === 0 ? 0 : m.at % (n + (m.kind === 'insert' || m.kind === 'cut' ? 1 : 0));
  switch (m.kind) {
    case 'flip': {
      if (n === 0) return bytes;
      const out = Uint8Array.from(bytes);
      out[at % n] ^= 1 << m.bit;
      return out;
    }
    case 'set': {
      if (n === 0) return bytes;
      const out = Uint8Array.from(bytes);
      out[at % n] = m.value;
      return out;
    }
    case 'cut':
      return bytes.subarray(0, at);
    case 'insert':
      return concatBytes(bytes.subarray(0, at), m.bytes, bytes.subarray(at));
    case 'repeat': {
      const slice = bytes.subarray(at, at + m.length);
      return concatBytes(bytes.subarray(0, at), ...new Array<Uint8Array>(m.times).fill(slice), bytes.subarray(at));
    }
    case 'drop':
      return concatBytes(bytes.subarray(0, at), bytes.subarray(at + m.length));
  }
}

function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let pos = 0;
  for (const p of parts) { out.set(p, pos); pos += p.byteLength; }
  return out;
}

/**
 * Inputs for a decoder: valid messages from `valid` (a quarter of them as they are), the same mutated one
 * to four times, and raw random bytes.
 */
export function hostileBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { arbitrary: valid, weight: 1 },
    { arbitrary: fc.tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([b, ms]) => ms.reduce(apply, b)), weight: 4 },
    { arbitrary: fc.uint8Array({ maxLength: 256 }), weight: 1 },
  );
}

/**
 * Runs `decode` on one input: it returns, or throws a GridpipeError whose message says something. Anything
 * else (a TypeError, a RangeError, protobufjs's own errors) fails the property with the input shown.
 */
export async function expectDecodedOrClearError<T>(decode: () => T | Promise<T>, errorCodes?: readonly string[]): Promise<{ ok: true; value: T } | { ok: false; code: string }> {
  try {
    return { ok: true, value: await decode() };
  } catch (err) {
    if (!isGridpipeError(err)) throw new Error(`not a GridpipeError: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`, { cause: err });
    expect(err.message.length, 'an error says what was wrong').toBeGreaterThan(8);
    if (errorCodes) expect(errorCodes).toContain(err.code);
    return { ok: false, code: err.code };
  }
}

/** The synchronous form of expectDecodedOrClearError, for fc.property. */
export function decodedOrClearError<T>(decode: () => T, errorCodes?: readonly string[]): { ok: true; value: T } | { ok: false; code: string } {
  try {
    return { ok: true, value: decode() };
  } catch (err) {
    if (!isGridpipeError(err)) throw new Error(`not a GridpipeError: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`, { cause: err });
    expect(err.message.length, 'an error says what was wrong').toBeGreaterThan(8);
    if (errorCodes) expect(errorCodes).toContain(err.code);
    return { ok: false, code: err.code };
  }
}

let collect: (() => void) | undefined;

/** Used heap after a full collection (V8's gc exposed for this process on first use). */
export function heapAfterCollection(): number {
  if (!collect) {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
  collect();
  return process.memoryUsage().heapUsed;
}

/** Counts outcomes by error code (what a fuzz run found, for its log line). */
export class Outcomes {
  private readonly counts = new Map<string, number>();

  add(outcome: { ok: true } | { ok: false; code: string }): void {
    const key = outcome.ok ? 'accepted' : outcome.code;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  total(): number {
    let n = 0;
    for (const c of this.counts.values()) n += c;
    return n;
  }

  /** Whether at least `min` inputs were refused (the inputs reach the checks, not only the happy path). */
  refused(): number {
    return this.total() - (this.counts.get('accepted') ?? 0);
  }

  /** Each outcome and its count. */
  entries(): [string, number][] {
    return [...this.counts];
  }

  toString(): string {
    return [...this.counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  }
}

/** One target's line in the run's report (GRIDPIPE_FUZZ_REPORT). */
export interface FuzzReportLine {
  /** Which decoder, stream or route. */
  target: string;
  inputs: number;
  /** Counts by outcome (accepted, an error code, an HTTP status). */
  outcomes: Record<string, number>;
  /** Heap growth after a full collection over the target (MiB), where measured. */
  heapGrowthMiB?: number;
  /** A process's RSS growth over the target (MiB), where its heap cannot be read. */
  rssGrowthMiB?: number;
  /** The gateway's heap after a collection as the run went: [requests so far, MiB]. */
  heapCurve?: [number, number][];
  /** Honest requests served in parallel, where any ran. */
  honest?: number;
  /** What went wrong with honest traffic, with what the processes said then (diagnostics of a long run). */
  failure?: string;
}

/** Appends `line` to the run's report when GRIDPIPE_FUZZ_REPORT names one (the `fuzz` bench). */
export function reportFuzz(line: FuzzReportLine): void {
  const file = process.env.GRIDPIPE_FUZZ_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify(line)}\n`);
}

/** Outcome counts as a plain record (for the report). */
export function outcomeCounts(outcomes: Outcomes | Map<string, number>): Record<string, number> {
  return Object.fromEntries(outcomes instanceof Outcomes ? outcomes.entries() : outcomes);
}
