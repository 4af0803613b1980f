/**
 * The NAT test harness itself (test/helpers/netns*.ts): the user-space link emulator on loopback (its own
 * added latency is measured and printed: the goal is < 0.2 ms per traversal; delay and order are checked),
 * and the namespaces: a home host reaches the public side only through the router, which the public side
 * sees as the source; nothing on the public side can open a connection to the home host; namespaces are
 * gone after destroy(); with the kernel's NAT (iptables masquerade), the public side sees the router's address
 * and home's own source port (a port-preserving, cone-like mapping), nothing reaches home, and a firewalled
 * public port refuses the router. Skips, saying why, where the kernel (or the user) cannot make namespaces.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { startForwarder, type Forwarder } from '../helpers/netns-link.js';
import { createNatTopology, kernelNatUnsupportedReason, netnsUnsupportedReason, HOME_IP, PUBLIC_IP, ROUTER_PUBLIC_IP, type NatTopology } from '../helpers/netns.js';

/** An echo server on 127.0.0.1. */
async function echoServer(): Promise<net.Server & { port: number }> {
  const server = net.createServer({ noDelay: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
}

/** Round trips of a 64-byte message over one connection, ms each. */
async function roundTrips(port: number, count: number): Promise<number[]> {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((r) => socket.once('connect', r));
  const payload = Buffer.alloc(64, 7);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    socket.write(payload);
    let got = 0;
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer): void => {
        got += d.byteLength;
        if (got >= payload.byteLength) { socket.off('data', onData); resolve(); }
      };
      socket.on('data', onData);
    });
    times.push(performance.now() - t0);
  }
  socket.destroy();
  return times;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('user-space link emulator (loopback)', () => {
  const closers: Array<() => Promise<void> | void> = [];
  afterAll(async () => { for (const c of closers) await c(); });

  it('adds little of its own with a zero shape (measured, printed) and holds chunks for the configured delay', async () => {
    const echo = await echoServer();
    closers.push(() => { echo.close(); });
    const plain = await startForwarder({ target: { host: '127.0.0.1', port: echo.port } });
    closers.push(() => plain.close());
    const delayed = await startForwarder({ target: { host: '127.0.0.1', port: echo.port }, up: { delayMs: 10 }, down: { delayMs: 10 } });
    closers.push(() => delayed.close());
    await roundTrips(echo.port, 200); // warm up
    await roundTrips(plain.port, 200);
    const direct = median(await roundTrips(echo.port, 1000));
    const through = median(await roundTrips(plain.port, 1000));
    const added = (through - direct) / 2;
    console.info(`[netns harness] link emulator, zero shape: round trip ${direct.toFixed(3)} ms direct, ${through.toFixed(3)} ms through it: ${added.toFixed(3)} ms added per traversal (goal < 0.2 ms)`);
    expect(plain.accepted()).toBe(2);
    // a 10 ms link each way cannot answer in less than 20 ms (timers fire late, never early)
    const slow = await roundTrips(delayed.port, 20);
    console.info(`[netns harness] link emulator, 10 ms each way: round trip ${median(slow).toFixed(3)} ms (timer lateness ${(median(slow) - 20 - direct).toFixed(3)} ms per round trip)`);
    for (const t of slow) expect(t).toBeGreaterThanOrEqual(19.5);
  });

  it('keeps a stream in order and whole through jitter, loss and a rate limit', async () => {
    const echo = await echoServer();
    closers.push(() => { echo.close(); });
    const shape = { delayMs: 2, jitterMs: 5, lossRate: 0.05, rateBitsPerS: 50e6 };
    const fwd: Forwarder = await startForwarder({ target: { host: '127.0.0.1', port: echo.port }, up: shape, down: shape });
    closers.push(() => fwd.close());
    const sent = Buffer.alloc(2 * 1024 * 1024);
    for (let i = 0; i < sent.length; i += 4) sent.writeUInt32LE(i / 4, i);
    const socket = net.connect({ host: '127.0.0.1', port: fwd.port });
    const chunks: Buffer[] = [];
    let got = 0;
    const received = new Promise<void>((resolve) => socket.on('data', (d: Buffer) => { chunks.push(d); got += d.byteLength; if (got >= sent.length) resolve(); }));
    for (let i = 0; i < sent.length; i += 16 * 1024) socket.write(sent.subarray(i, i + 16 * 1024));
    await received;
    socket.destroy();
    expect(Buffer.concat(chunks).equals(sent)).toBe(true);
  });
});

const unsupported = netnsUnsupportedReason();
if (unsupported) console.warn(`[netns harness] SKIPPED: ${unsupported}`);

/** Runs a small Node program inside a namespace; resolves with its stdout. */
function nodeIn(topology: NatTopology, ns: string, program: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(topology.inside(ns)[0], [...topology.inside(ns).slice(1), process.execPath, '--input-type=module', '-e', program], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}: ${err}`))));
  });
}

describe.skipIf(unsupported !== undefined)('namespaces with a NAT router', () => {
  let topology: NatTopology | undefined;
  afterAll(() => topology?.destroy());

  it('home reaches the public side only through the router (seen as the router), and nothing reaches home', async () => {
    topology = createNatTopology();
    const port = 4100;
    const router = await topology.startRouter([port], { up: { delayMs: 5 }, down: { delayMs: 5 } });
    // A server on the public side that says who connected, for two connections.
    const server = spawn(topology.inside(topology.pub)[0], [...topology.inside(topology.pub).slice(1), process.execPath, '-e',
      `const s = require('net').createServer((c) => c.end(c.remoteAddress + '\\n')).listen(${port}, '${PUBLIC_IP}', () => console.log('up'));`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => server.stdout.once('data', () => r()));
    try {
      const seen = await nodeIn(topology, topology.home, `
        import net from 'node:net';
        const t0 = performance.now();
        const c = net.connect({ host: '${PUBLIC_IP}', port: ${port} });
        let text = '';
        c.on('data', (d) => { text += d; });
        c.on('end', () => { console.log(JSON.stringify({ seen: text.trim(), ms: performance.now() - t0 })); });`);
      const { seen: source, ms } = JSON.parse(seen) as { seen: string; ms: number };
      expect(source).toBe(ROUTER_PUBLIC_IP);
      expect(ms).toBeGreaterThanOrEqual(10); // the answer crossed the 5 ms downlink and the request the uplink
      const inward = await nodeIn(topology, topology.pub, `
        import net from 'node:net';
        const c = net.connect({ host: '${HOME_IP}', port: 22, timeout: 2000 });
        c.on('connect', () => { console.log('connected'); c.destroy(); });
        c.on('timeout', () => { console.log('timeout'); c.destroy(); });
        c.on('error', (e) => console.log(e.code));`);
      expect(inward).toBe('ENETUNREACH');
    } finally {
      server.kill('SIGKILL');
      await router.stop('SIGKILL');
    }
    const names = [topology.pub, topology.rtr, topology.home];
    topology.destroy();
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const ns of names) expect(left).not.toContain(ns);
  });
});

const noKernelNat = unsupported ?? kernelNatUnsupportedReason();
if (!unsupported && noKernelNat) console.warn(`[netns harness] kernel NAT SKIPPED: ${noKernelNat}`);

describe.skipIf(noKernelNat !== undefined)('namespaces with a kernel NAT router (iptables masquerade)', () => {
  let topology: NatTopology | undefined;
  afterAll(() => topology?.destroy());

  it('home is seen as the router with its own source port; nothing reaches home; a firewalled port refuses the router', async () => {
    topology = createNatTopology({ nat: 'kernel' });
    const port = 4100;
    const closed = 4101;
    topology.firewall(closed);
    // A server on the public side that says who connected (address and port), on two ports.
    const server = spawn(topology.inside(topology.pub)[0], [...topology.inside(topology.pub).slice(1), process.execPath, '-e',
      `const net = require('net');
       let up = 0;
       for (const p of [${port}, ${closed}]) net.createServer((c) => c.end(c.remoteAddress + ' ' + c.remotePort + '\\n')).listen(p, '${PUBLIC_IP}', () => { if (++up === 2) console.log('up'); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => server.stdout.once('data', () => r()));
    try {
      const seen = await nodeIn(topology, topology.home, `
        import net from 'node:net';
        const c = net.connect({ host: '${PUBLIC_IP}', port: ${port} });
        let text = '';
        c.on('data', (d) => { text += d; });
        c.on('end', () => { console.log(JSON.stringify({ seen: text.trim(), localPort: c.localPort })); });`);
      const { seen: source, localPort } = JSON.parse(seen) as { seen: string; localPort: number };
      expect(source).toBe(`${ROUTER_PUBLIC_IP} ${localPort}`);
      const firewalled = await nodeIn(topology, topology.home, `
        import net from 'node:net';
        const c = net.connect({ host: '${PUBLIC_IP}', port: ${closed}, timeout: 1500 });
        c.on('connect', () => { console.log('connected'); c.destroy(); });
        c.on('timeout', () => { console.log('timeout'); c.destroy(); });
        c.on('error', (e) => console.log(e.code));`);
      expect(firewalled).toBe('timeout');
      const inward = await nodeIn(topology, topology.pub, `
        import net from 'node:net';
        const c = net.connect({ host: '${HOME_IP}', port: 22, timeout: 2000 });
        c.on('connect', () => { console.log('connected'); c.destroy(); });
        c.on('timeout', () => { console.log('timeout'); c.destroy(); });
        c.on('error', (e) => console.log(e.code));`);
      expect(inward).toBe('ENETUNREACH');
    } finally {
      server.kill('SIGKILL');
    }
  });
});
