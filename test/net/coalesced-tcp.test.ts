/**
 * The TCP write coalescing under every libp2p connection (net/coalesced-tcp.ts): a tick's small writes leave
 * in one system call, big writes go at once after what waits, and bytes arrive whole and in order. Real
 * sockets on 127.0.0.1; the count of flushes is read off the sending socket's own `_write`/`_writev`.
 */
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import type { MultiaddrConnection } from '@libp2p/interface';
import { coalesceWritesPerTick } from '../../net/coalesced-tcp.js';

interface Pair { client: net.Socket; server: net.Socket; received: () => Buffer; close: () => void }

async function socketPair(): Promise<Pair> {
  const listener = net.createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const { port } = listener.address() as net.AddressInfo;
  const accepted = once(listener, 'connection');
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [server] = (await accepted) as [net.Socket];
  const chunks: Buffer[] = [];
  server.on('data', (b: Buffer) => chunks.push(b));
  return {
    client,
    server,
    received: () => Buffer.concat(chunks),
    close: () => { client.destroy(); server.destroy(); listener.close(); },
  };
}

/** A connection shaped like @libp2p/tcp's: `socket` and a `sendData` that writes each buffer of a list. */
function tcpLikeConnection(socket: net.Socket): MultiaddrConnection & { sendData: (data: Uint8Array[] & { byteLength: number }) => unknown } {
  return {
    socket,
    sendData(data: Uint8Array[]) {
      let canSendMore = true;
      for (const buf of data) canSendMore = socket.write(buf);
      return { sentBytes: data.reduce((n, b) => n + b.byteLength, 0), canSendMore };
    },
  } as unknown as MultiaddrConnection & { sendData: (data: Uint8Array[] & { byteLength: number }) => unknown };
}

function list(...bufs: Uint8Array[]): Uint8Array[] & { byteLength: number } {
  return Object.assign([...bufs], { byteLength: bufs.reduce((n, b) => n + b.byteLength, 0) });
}

/** Counts the socket's flushes (each one system call). */
function countFlushes(socket: net.Socket): () => number {
  let flushes = 0;
  const s = socket as unknown as { _write: (...a: unknown[]) => unknown; _writev: (...a: unknown[]) => unknown };
  const write = s._write.bind(socket);
  const writev = s._writev.bind(socket);
  s._write = (...a) => { flushes++; return write(...a); };
  s._writev = (...a) => { flushes++; return writev(...a); };
  return () => flushes;
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

describe('coalesced TCP writes', () => {
  let pair: Pair | undefined;
  afterEach(() => pair?.close());

  it('sends one tick of small frames in one flush, and without it one flush per buffer', async () => {
    pair = await socketPair();
    const flushes = countFlushes(pair.client);
    const plain = tcpLikeConnection(pair.client);
    const frames = Array.from({ length: 10 }, (_, i) => list(new Uint8Array([2, i]), new Uint8Array(300).fill(i)));
    for (const f of frames) plain.sendData(f);
    await until(() => pair!.received().length === 10 * 302);
    const uncoalesced = flushes();

    const coalesced = tcpLikeConnection(pair.client);
    coalesceWritesPerTick(coalesced);
    for (const f of frames) coalesced.sendData(f);
    await until(() => pair!.received().length === 2 * 10 * 302);
    expect(uncoalesced).toBe(20);
    expect(flushes() - uncoalesced).toBe(1);
    const expected = Buffer.concat(frames.flatMap((f) => f.map((b) => Buffer.from(b))));
    expect(pair.received().subarray(10 * 302).equals(expected)).toBe(true);
  });

  it('keeps a tick of frames together past the socket\'s high-water mark: it reports room, so libp2p does not wait for drain', async () => {
    pair = await socketPair();
    const conn = tcpLikeConnection(pair.client);
    coalesceWritesPerTick(conn);
    const flushes = countFlushes(pair.client);
    // 12 frames of 10 KB (each below the big-write threshold): 120 KB, past Node's mark (16 KiB on 20, 64 KiB on 22+).
    const frames = Array.from({ length: 12 }, (_, i) => list(new Uint8Array(10_000).fill(i)));
    const replies = frames.map((f) => conn.sendData(f) as { sentBytes: number; canSendMore: boolean });
    expect(pair.client.writableLength).toBeGreaterThan(pair.client.writableHighWaterMark);
    expect(replies.map((r) => r.canSendMore)).toEqual(frames.map(() => true));
    expect(replies.map((r) => r.sentBytes)).toEqual(frames.map(() => 10_000));
    await until(() => pair!.received().length === 12 * 10_000);
    expect(flushes()).toBe(1);
    expect(pair.received().equals(Buffer.concat(frames.flatMap((f) => f.map((b) => Buffer.from(b)))))).toBe(true);
  });

  it('still reports a full socket once a tick has buffered a mebibyte', async () => {
    pair = await socketPair();
    const conn = tcpLikeConnection(pair.client);
    coalesceWritesPerTick(conn);
    const frames = Array.from({ length: 120 }, () => list(new Uint8Array(10_000).fill(7)));
    const room = frames.map((f) => (conn.sendData(f) as { canSendMore: boolean }).canSendMore);
    expect(room.indexOf(false)).toBe(Math.ceil((1024 * 1024) / 10_000) - 1);
    await until(() => pair!.received().length === 120 * 10_000);
  });

  it('writes a big frame at once, after the small ones queued before it, in order', async () => {
    pair = await socketPair();
    const conn = tcpLikeConnection(pair.client);
    coalesceWritesPerTick(conn);
    const flushes = countFlushes(pair.client);
    const small1 = new Uint8Array(100).fill(1);
    const big = new Uint8Array(256 * 1024).fill(2);
    const small2 = new Uint8Array(100).fill(3);
    conn.sendData(list(small1));
    conn.sendData(list(big));
    const afterBig = flushes();
    conn.sendData(list(small2));
    await until(() => pair!.received().length === 100 + big.length + 100);
    expect(afterBig).toBeGreaterThanOrEqual(2); // the queued small frame, then the big one, before the tick ended
    expect(pair.received().equals(Buffer.concat([small1, big, small2]))).toBe(true);
  });

  it('leaves a connection without a TCP socket as it is', () => {
    const sendData = (): { sentBytes: number; canSendMore: boolean } => ({ sentBytes: 0, canSendMore: true });
    const relayed = { sendData } as unknown as MultiaddrConnection;
    coalesceWritesPerTick(relayed);
    expect((relayed as unknown as { sendData: unknown }).sendData).toBe(sendData);
  });
});
