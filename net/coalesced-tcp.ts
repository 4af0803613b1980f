/**
 * libp2p's TCP transport, with each connection's writes of one event-loop tick sent in one system call.
 *
 * Why: below a stream, every frame becomes several socket writes (yamux header + data go through Noise as a
 * 2-byte length and a ciphertext, each its own `socket.write`; window updates add more). Measured on the
 * pipeline's 8-session convoys: 6.5 writes per exec step in the grid client, half of them under 16 bytes, and
 * `writeBuffer` (the syscall) the top self-time in the client and every supplier. A batch's replies to 8
 * sessions, or a convoy's 8 requests, leave in the same tick, so corking the socket for the rest of the tick
 * sends them as one `writev`. `process.nextTick` runs before the loop polls for I/O again, so no write waits
 * for anything but the code already running; Node's own HTTP server corks the same way.
 */
import net from 'node:net';
import { tcp, type TCPOptions } from '@libp2p/tcp';
import type { MultiaddrConnection, Transport, Upgrader } from '@libp2p/interface';

type TransportFactory = ReturnType<typeof tcp>;
/** Writes at least this big go out at once: their system call is already amortised over many bytes. */
const COALESCE_BELOW_BYTES = 64 * 1024;
/**
 * How much a corked tick may buffer before libp2p is told the socket is full. Node's own high-water mark (16 KiB
 * on Node 20) counts the corked bytes too, so after five 3 KB frames `write` says "full" and libp2p holds the
 * tick's other frames until 'drain', an event-loop turn later: a batch's 8 replies left as 4 + 4, 2–17 ms apart,
 * and the next span ran the late half as its own batch or waited for it.
 */
const TICK_BUFFER_BYTES = 1024 * 1024;

type SendData = (data: unknown) => { sentBytes: number; canSendMore: boolean };

/** Makes `maConn` cork its socket on the first write of a tick and uncork after the tick; other connections untouched. */
export function coalesceWritesPerTick(maConn: MultiaddrConnection): void {
  const conn = maConn as unknown as { socket?: unknown; sendData?: SendData };
  const socket = conn.socket;
  const send = conn.sendData;
  // Only TCP connections have a socket (a relayed connection rides on another connection's streams).
  if (!(socket instanceof net.Socket) || typeof send !== 'function') return;
  let corked = false;
  const uncork = (): void => {
    if (!corked) return;
    corked = false;
    if (!socket.destroyed) socket.uncork();
  };
  conn.sendData = function sendCoalesced(this: unknown, data: unknown) {
    if ((data as { byteLength?: number }).byteLength! >= COALESCE_BELOW_BYTES) {
      // A big write gains nothing from company: flush what waits (order is kept) and write as libp2p would.
      uncork();
    } else if (!corked && !socket.destroyed && socket.writable) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    if (!corked) return send.call(this, data);
    // Corked: write every buffer (libp2p's loop stops at the first "full"), and report full only past the tick's budget.
    let sentBytes = 0;
    for (const buf of data as Iterable<Uint8Array>) {
      socket.write(buf);
      sentBytes += buf.byteLength;
    }
    return { sentBytes, canSendMore: socket.writableLength < TICK_BUFFER_BYTES };
  };
}

function coalescingUpgrader(upgrader: Upgrader): Upgrader {
  // A proxy, so methods the interface gains later still reach the real upgrader (bound to it).
  return new Proxy(upgrader, {
    get(target, prop) {
      if (prop === 'upgradeInbound' || prop === 'upgradeOutbound') {
        return (maConn: MultiaddrConnection, opts: unknown) => {
          coalesceWritesPerTick(maConn);
          return (target[prop] as (m: MultiaddrConnection, o: unknown) => unknown).call(target, maConn, opts);
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** `tcp(init)` whose connections coalesce each tick's writes (see the module comment). */
export function coalescedTcp(init?: TCPOptions): TransportFactory {
  const factory = tcp(init);
  return ((components: Parameters<TransportFactory>[0]) => {
    const transport = factory(components) as Transport;
    const dial = transport.dial.bind(transport);
    const createListener = transport.createListener.bind(transport);
    transport.dial = (ma, options) => dial(ma, { ...options, upgrader: coalescingUpgrader(options.upgrader) });
    transport.createListener = (options) => createListener({ ...options, upgrader: coalescingUpgrader(options.upgrader) });
    return transport;
  }) as TransportFactory;
}
