/**
 * Emulated internet links in user space, because this kernel has no `netem` qdisc (`tc qdisc ... netem`:
 * "Specified qdisc kind is unknown"): a TCP forwarder that holds every chunk for the link's one-way delay
 * (plus jitter), serialises it at the link's rate, and models loss as TCP sees it (a lost segment is
 * retransmitted one timeout later, so loss shows as a late chunk; bytes are never dropped from a stream).
 * Order is kept: a chunk is never delivered before the one ahead of it. With a zero shape the bytes are
 * written on arrival (no timer), so the forwarder's own cost is one extra socket hop.
 *
 * `startNatProxy` is the same forwarder acting as a home router's NAT: in the router namespace every
 * connection from the home side to a public address is accepted locally (the router owns the public range
 * through a `local` route, see netns.ts) and re-opened from the router's own public address, so the public
 * side sees the router, each connection gets a fresh source port (a symmetric NAT, as far as hole punching
 * goes) and nothing from the public side can open a connection inward.
 */
import net from 'node:net';

/** One direction of an emulated link. */
export interface LinkShape {
  /** One-way delay, ms (default 0). */
  delayMs?: number;
  /** Extra delay, uniform in [0, jitterMs), order kept (default 0). */
  jitterMs?: number;
  /** Share of chunks that arrive one retransmission timeout late (default 0). */
  lossRate?: number;
  /** Link rate in bits per second (default: unlimited). */
  rateBitsPerS?: number;
}

/** One chunk's passage through a shaped direction (for tracing where a link's time goes). */
export interface LinkTraceEvent {
  /** When the chunk arrived, when the shape said to deliver it, when it was written on (performance.now(), ms). */
  arrivedAt: number;
  dueAt: number;
  deliveredAt: number;
  bytes: number;
}

/** The retransmission timeout a lost chunk pays: Linux's floor (200 ms) or two round trips. */
function retransmitDelayMs(shape: LinkShape): number {
  return Math.max(200, 4 * (shape.delayMs ?? 0));
}

function isZero(shape: LinkShape): boolean {
  return !shape.delayMs && !shape.jitterMs && !shape.lossRate && !shape.rateBitsPerS;
}

/**
 * Copies `from` to `to` through `shape`, keeping order, passing back-pressure on and half-closing `to`
 * once `from` has ended and every held chunk is out. `random` is injectable for seeded runs.
 */
export function shapeDirection(from: net.Socket, to: net.Socket, shape: LinkShape, random: () => number = Math.random, trace?: (event: LinkTraceEvent) => void): void {
  if (isZero(shape) && !trace) {
    from.pipe(to);
    return;
  }
  const queue: Array<{ at: number; arrivedAt: number; chunk: Buffer }> = []; // delivery times never decrease along it
  let lastDeliveryAt = 0;
  let linkFreeAt = 0; // when the link has serialised every byte handed to it so far
  let ended = false;
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  // Node's timers fire up to ~1 ms late: wake a millisecond early and poll (setImmediate) for the rest.
  const wake = (at: number, now: number): void => {
    timer = at - now > 1.5 ? setTimeout(pump, at - now - 1) : setImmediate(pump);
  };
  const pump = (): void => {
    timer = undefined;
    const now = performance.now();
    const delivered: LinkTraceEvent[] = [];
    while (queue.length && queue[0].at <= now + 0.05) {
      const { chunk, at, arrivedAt } = queue.shift()!;
      if (trace) delivered.push({ arrivedAt, dueAt: at, deliveredAt: now, bytes: chunk.byteLength });
      if (!to.destroyed && !to.write(chunk) && !from.isPaused()) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    }
    for (const event of delivered) trace?.(event); // after the writes: tracing never delays a chunk
    if (queue.length) wake(queue[0].at, now);
    else if (ended) to.end();
  };
  from.on('data', (chunk: Buffer) => {
    const now = performance.now();
    let sentAt = now;
    if (shape.rateBitsPerS) {
      linkFreeAt = Math.max(linkFreeAt, now) + (chunk.byteLength * 8 * 1000) / shape.rateBitsPerS;
      sentAt = linkFreeAt;
    }
    let at = sentAt + (shape.delayMs ?? 0) + (shape.jitterMs ? random() * shape.jitterMs : 0);
    if (shape.lossRate && random() < shape.lossRate) at += retransmitDelayMs(shape);
    at = Math.max(at, lastDeliveryAt); // a TCP stream: never overtake the chunk ahead
    lastDeliveryAt = at;
    queue.push({ at, arrivedAt: now, chunk });
    if (!timer) wake(queue[0].at, now);
  });
  from.on('end', () => {
    ended = true;
    if (!queue.length && !timer) to.end();
  });
}

/**
 * Joins two half-open-capable sockets both ways, each way through its shape: an end travels behind the
 * data held before it; either side's error (a reset) resets both at once.
 */
export function joinShaped(a: net.Socket, b: net.Socket, aToB: LinkShape, bToA: LinkShape, trace?: (direction: 'up' | 'down', event: LinkTraceEvent) => void): void {
  a.setNoDelay(true);
  b.setNoDelay(true);
  shapeDirection(a, b, aToB, Math.random, trace && ((e) => trace('up', e)));
  shapeDirection(b, a, bToA, Math.random, trace && ((e) => trace('down', e)));
  const reset = (): void => { a.destroy(); b.destroy(); };
  a.on('error', reset);
  b.on('error', reset);
}

export interface Forwarder {
  /** The port it listens on. */
  port: number;
  /** Connections accepted so far. */
  accepted(): number;
  close(): Promise<void>;
}

export interface ForwarderOptions {
  /** Listen here (default 127.0.0.1, port 0 = any). */
  host?: string;
  port?: number;
  /** Where each connection goes; default: the address it was accepted on (a NAT router's local route). */
  target?: { host: string; port: number };
  /** Bind outgoing connections to this local address (the router's public address). */
  localAddress?: string;
  /** The link towards the target (upstream) and back (downstream). */
  up?: LinkShape;
  down?: LinkShape;
  /** Called for every chunk forwarded, with the connection (its number from 1 in accept order, and who dialled) and direction. */
  trace?: (connection: { id: number; remoteAddress: string }, direction: 'up' | 'down', event: LinkTraceEvent) => void;
}

/** A TCP forwarder with an emulated link; resolves once it listens. */
export async function startForwarder(options: ForwarderOptions): Promise<Forwarder> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (inbound) => {
    const connection = ++accepted;
    const target = options.target ?? { host: inbound.localAddress!.replace(/^::ffff:/, ''), port: inbound.localPort! };
    const outbound = net.connect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    sockets.add(inbound);
    sockets.add(outbound);
    inbound.on('close', () => sockets.delete(inbound));
    outbound.on('close', () => sockets.delete(outbound));
    const trace = options.trace;
    const who = { id: connection, remoteAddress: inbound.remoteAddress?.replace(/^::ffff:/, '') ?? '' };
    joinShaped(inbound, outbound, options.up ?? {}, options.down ?? {}, trace && ((direction, e) => trace(who, direction, e)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

export interface NatProxyOptions {
  /** The public ports forwarded outward (a listener each, on every address the router owns). */
  ports: number[];
  /** The router's public address: the source of every outgoing connection. */
  publicAddress: string;
  /** The home uplink (home → internet) and downlink. */
  up?: LinkShape;
  down?: LinkShape;
}

/** The NAT of a home router in user space: one forwarder per public port, to whatever address was dialled. */
export async function startNatProxy(options: NatProxyOptions): Promise<Forwarder[]> {
  return Promise.all(options.ports.map((port) => startForwarder({
    host: '0.0.0.0', port, localAddress: options.publicAddress, up: options.up, down: options.down,
  })));
}
