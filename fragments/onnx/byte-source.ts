/** Positional reads of a file through a small block cache, for walking protobuf structure without loading the file. */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

const BLOCK = 1 << 20;
const MAX_BLOCKS = 8;

export class ByteSource {
  readonly size: number;
  private readonly fd: number;
  private readonly blocks = new Map<number, Buffer>();

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    this.size = fstatSync(this.fd).size;
  }

  /** Reads `length` bytes at `offset`; throws RangeError past the end of the file. */
  read(offset: number, length: number): Buffer {
    if (offset < 0 || offset + length > this.size) throw new RangeError(`read ${offset}+${length} past end ${this.size}`);
    if (length > BLOCK) {
      const out = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) done += readSync(this.fd, out, done, length - done, offset + done);
      return out;
    }
    const first = Math.floor(offset / BLOCK);
    const last = Math.floor((offset + length - 1) / BLOCK);
    if (first === last) {
      const block = this.block(first);
      return block.subarray(offset - first * BLOCK, offset - first * BLOCK + length);
    }
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    for (let b = first; b <= last; b++) {
      const block = this.block(b);
      const start = b === first ? offset - first * BLOCK : 0;
      const take = Math.min(block.length - start, length - done);
      block.copy(out, done, start, start + take);
      done += take;
    }
    return out;
  }

  /** One byte at `offset`. */
  byte(offset: number): number {
    return this.read(offset, 1)[0];
  }

  private block(index: number): Buffer {
    let block = this.blocks.get(index);
    if (block) return block;
    const start = index * BLOCK;
    const length = Math.min(BLOCK, this.size - start);
    block = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) done += readSync(this.fd, block, done, length - done, start + done);
    if (this.blocks.size >= MAX_BLOCKS) this.blocks.delete(this.blocks.keys().next().value as number);
    this.blocks.set(index, block);
    return block;
  }

  close(): void {
    this.blocks.clear();
    closeSync(this.fd);
  }
}
