/**
 * Yamux window updates at half a window (net/yamux-window-updates.ts), between two real gridpipe hosts over
 * TCP on 127.0.0.1: a stream that echoes small messages sends no window update until half its window is used
 * (yamux 8 alone answered every frame with one, refilling the sender's window at once), and a transfer many
 * windows long still arrives whole, since updates do come at half a window.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiaddr } from '@multiformats/multiaddr';
import type { Stream } from '@libp2p/interface';
import { createGridHost, stopGridHost, type GridHost } from '../../net/host.js';
import { testLogger } from '../helpers/swarm.js';

const ECHO = '/gridpipe-test/echo/1.0.0';
const SINK = '/gridpipe-test/sink/1.0.0';

/** The yamux stream's send window (private in its typings). */
function sendWindow(stream: Stream): number {
  const w = (stream as unknown as { sendWindowCapacity?: number }).sendWindowCapacity;
  if (typeof w !== 'number') throw new Error('not a yamux stream');
  return w;
}

/** Reads `bytes` bytes from the stream's iterator. */
async function readBytes(iterator: AsyncIterator<Uint8Array | { byteLength: number }>, bytes: number): Promise<number> {
  let got = 0;
  while (got < bytes) {
    const { value, done } = await iterator.next();
    if (done) break;
    got += value.byteLength;
  }
  return got;
}

describe('yamux window updates', () => {
  let a: GridHost;
  let b: GridHost;

  beforeAll(async () => {
    a = await createGridHost({ network: 'local', logger: testLogger() });
    b = await createGridHost({ network: 'local', logger: testLogger() });
    await b.node.handle(ECHO, async (stream) => {
      for await (const chunk of stream) stream.send('subarray' in chunk ? chunk.subarray() : chunk);
    });
    let sunk = 0;
    await b.node.handle(SINK, async (stream) => {
      for await (const chunk of stream) sunk += chunk.byteLength;
      stream.send(new TextEncoder().encode(String(sunk)));
      await stream.close();
    });
  });
  afterAll(async () => {
    await stopGridHost(a);
    await stopGridHost(b);
  });

  it('an echoed exchange of small messages sends no window update before half the window is used', async () => {
    const stream = await a.node.dialProtocol(multiaddr(b.addresses()[0]), ECHO);
    const iterator = stream[Symbol.asyncIterator]();
    const before = sendWindow(stream);
    const message = new Uint8Array(200).fill(7);
    for (let i = 0; i < 50; i++) {
      stream.send(message);
      expect(await readBytes(iterator, message.byteLength)).toBe(message.byteLength);
    }
    // Every byte sent still counts against the window: the echo side announced nothing back (it would have
    // refilled it to `before` after each message).
    expect(sendWindow(stream)).toBe(before - 50 * message.byteLength);
    await stream.close();
  });

  it('a transfer of many windows arrives whole', async () => {
    const stream = await a.node.dialProtocol(multiaddr(b.addresses()[0]), SINK);
    const total = 8 * 1024 * 1024;
    const chunk = new Uint8Array(64 * 1024).fill(1);
    for (let sent = 0; sent < total; sent += chunk.byteLength) {
      if (!stream.send(chunk)) await new Promise((r) => stream.addEventListener('drain', r, { once: true }));
    }
    await stream.close();
    let answer = '';
    for await (const c of stream) answer += new TextDecoder().decode('subarray' in c ? c.subarray() : c);
    expect(Number(answer)).toBe(total);
  });
});
