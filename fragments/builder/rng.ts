/**
 * Seeded, counter-based pseudo-random weights. The generator is mulberry32 used in counter mode: element
 * n of a stream is mix(seed + (n + 1)·0x6D2B79F5), so any element range can be produced on its own (a
 * chunk does not depend on the chunks before it) and the same seed always gives the same bytes. Weights
 * are produced in chunks of a few MiB as `GeneratedBytes`, so a model of many GB is never held in memory.
 */
import { endianness } from 'node:os';
import type { GeneratedBytes } from '../onnx/model-doc.js';

/** How a float tensor is filled. `normal` is approximate (Irwin–Hall sum of four bytes of one draw). */
export type WeightInit =
  | { kind: 'normal'; std: number; mean?: number }
  | { kind: 'uniform'; limit: number; mean?: number }
  | { kind: 'constant'; value: number };

/** Elements per generated chunk: 1 Mi float32 = 4 MiB. */
export const CHUNK_ELEMENTS = 1 << 20;

const GOLDEN = 0x6d2b79f5;
/** Standard deviation of the sum of four independent uniform bytes: sqrt(4 · (256² − 1) / 12). */
const BYTE_SUM_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);
const BYTE_SUM_MEAN = 4 * 127.5;

if (endianness() !== 'LE') throw new Error('gridpipe synthetic weights assume a little-endian host');

/** The mulberry32 output function applied to one counter value. */
function mix(a: number): number {
  let t = Math.imul(a ^ (a >>> 15), a | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** A 32-bit seed derived from a model seed and a tensor name (FNV-1a over the name, then mixed). */
export function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ mix((seed >>> 0) ^ 0x9e3779b9) ^ Math.floor(seed / 2 ** 32);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix(h ^ GOLDEN);
}

/** Fills `out` with elements [start, start + out.length) of the stream of `seed` under `init`. */
export function fillFloat32(out: Float32Array, seed: number, start: number, init: WeightInit): void {
  const n = out.length;
  if (init.kind === 'constant') {
    out.fill(init.value);
    return;
  }
  // Counter before element `start`: seed + start·GOLDEN modulo 2^32 (only start mod 2^32 matters).
  let a = (seed + Math.imul(start >>> 0, GOLDEN)) | 0;
  const mean = init.mean ?? 0;
  if (init.kind === 'uniform') {
    const k = init.limit / 2147483648;
    for (let i = 0; i < n; i++) {
      a = (a + GOLDEN) | 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = (t ^ (t >>> 14)) * k + mean;
    }
    return;
  }
  const k = init.std / BYTE_SUM_STD;
  const base = mean - BYTE_SUM_MEAN * k;
  for (let i = 0; i < n; i++) {
    a = (a + GOLDEN) | 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    t ^= t >>> 14;
    const s = (t & 0x00ff00ff) + ((t >>> 8) & 0x00ff00ff);
    out[i] = ((s & 0xffff) + (s >>> 16)) * k + base;
  }
}

/** Float32 bytes of `count` elements produced chunk by chunk by `fill(out, startElement)`. */
export function computedFloat32(count: number, fill: (out: Float32Array, start: number) => void, chunkElements = CHUNK_ELEMENTS): GeneratedBytes {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`bad element count ${count}`);
  return {
    kind: 'generated',
    length: count * 4,
    *chunks() {
      for (let start = 0; start < count; start += chunkElements) {
        const out = new Float32Array(Math.min(chunkElements, count - start));
        fill(out, start);
        yield new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      }
    },
  };
}

/** Seeded float32 weights of `count` elements, generated in chunks on demand (same seed ⇒ same bytes). */
export function generatedFloat32(count: number, seed: number, init: WeightInit, chunkElements = CHUNK_ELEMENTS): GeneratedBytes {
  return computedFloat32(count, (out, start) => fillFloat32(out, seed, start, init), chunkElements);
}

/** A small seeded PRNG (mulberry32) for test inputs and other scalar draws. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed | 0;
  }
  /** Next uniform 32-bit unsigned integer. */
  nextU32(): number {
    this.state = (this.state + GOLDEN) | 0;
    return mix(this.state);
  }
  /** Next float uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }
  /** Next integer uniform in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Next standard normal draw (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}
