/**
 * `npm run bench -- hop`: the round trip of one exec step between two libp2p nodes on 127.0.0.1 (TCP +
 * Noise + Yamux, one persistent session stream), for 3 KB, 64 KB and 1 MB float32 activations through an
 * Identity fragment; baseline in the same run: a raw TCP echo (node:net) of the same bytes. Medians.
 * Goal: hop_3k_ms ≤ 0.5. `--quick`: fewer iterations (smoke runs).
 */
import '../net/polyfill.js';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { pino } from 'pino';
import { DataType } from '../fragments/onnx/dtype.js';
import { GraphBuilder, makeModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { cidOfFile } from '../fragments/cid.js';
import { createGridHost, type GridHost } from '../net/host.js';
import { ShareLimits } from '../node/limits.js';
import { ExecServer } from '../node/exec/index.js';
import { ExecClient } from '../net/exec/index.js';
import { reportResult } from './report.js';
import { median, quantile } from './stats.js';

interface Size { key: string; floats: number; iterations: number }

const SIZES: Size[] = [
  { key: '3k', floats: 768, iterations: 2000 },
  { key: '64k', floats: 16384, iterations: 1000 },
  { key: '1m', floats: 262144, iterations: 150 },
];



/** An Identity graph: float32 x [1, n] → y. */
async function writeIdentity(file: string): Promise<void> {
  const g = new GraphBuilder('hop-identity');
  const x = g.input('x', DataType.FLOAT, [1, 'n']);
  const y = g.op('Identity', [x], { name: 'identity', output: 'y' });
  g.output(y, DataType.FLOAT, [1, 'n']);
  await writeModel(makeModel(g.build()), file);
}

/** Raw TCP echo of `bytes`, `iterations` times after a warm-up: round trips in ms. */
async function tcpEcho(bytes: number, iterations: number, warmup: number): Promise<number[]> {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => socket.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const payload = Buffer.alloc(bytes, 7);
  let received = 0;
  let done: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received >= bytes && done) { const d = done; done = undefined; d(); }
  });
  const times: number[] = [];
  for (let i = 0; i < warmup + iterations; i++) {
    received = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) => { done = resolve; socket.write(payload); });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return times;
}

const ECHO_PROTOCOL = '/gridpipe/bench-echo/1.0.0';

/** A libp2p echo on one persistent stream (the floor under the exec protocol): round trips in ms. */
async function libp2pEcho(caller: GridHost, supplier: GridHost, bytes: number, iterations: number, warmup: number): Promise<number[]> {
  await supplier.node.handle(ECHO_PROTOCOL, (stream) => {
    stream.addEventListener('message', (evt) => { stream.send(evt.data); });
    stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => undefined); });
  }, { force: true });
  const stream = await caller.node.dialProtocol(supplier.node.getMultiaddrs(), ECHO_PROTOCOL);
  const payload = new Uint8Array(bytes).fill(7);
  let received = 0;
  let done: (() => void) | undefined;
  stream.addEventListener('message', (evt) => {
    received += evt.data.byteLength;
    if (received >= bytes && done) { const d = done; done = undefined; d(); }
  });
  const times: number[] = [];
  for (let i = 0; i < warmup + iterations; i++) {
    received = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      done = resolve;
      stream.send(payload); // queued even when it returns false; one message in flight at a time
    });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  await stream.close();
  await supplier.node.unhandle(ECHO_PROTOCOL);
  return times;
}

/** Runs the benchmark and writes bench/results/hop.json. */
export async function hopBench(flags: string[]): Promise<void> {
  const quick = flags.includes('--quick');
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-hop-'));
  const logger = pino({ level: process.env.GRIDPIPE_LOG_LEVEL ?? 'warn' });
  const hosts: GridHost[] = [];
  let server: ExecServer | undefined;
  try {
    const file = path.join(work, 'identity.onnx');
    await writeIdentity(file);
    const cid = await cidOfFile(file);
    const supplier = await createGridHost({ network: 'local', logger });
    hosts.push(supplier);
    const caller = await createGridHost({ network: 'local', logger, clientMode: true });
    hosts.push(caller);
    const limits = new ShareLimits({ threads: 1 }, { memoryBytes: os.totalmem(), cores: os.cpus().length });
    server = new ExecServer({ resolve: (c) => (c === cid ? file : undefined), limits, logger });
    await server.start(supplier.node);
    const client = new ExecClient();
    const session = await client.openSession(caller.node, supplier.node.getMultiaddrs(), { fragments: [cid] });

    const metrics: Record<string, number> = {};
    const notes: string[] = [];
    for (const size of SIZES) {
      const iterations = quick ? Math.max(10, size.iterations >> 3) : size.iterations;
      const warmup = Math.max(10, iterations >> 2);
      const data = Float32Array.from({ length: size.floats }, (_, i) => i % 1000);
      const x = new ort.Tensor('float32', data, [1, size.floats]);
      const rtt: number[] = [];
      const server_ms: number[] = [];
      for (let i = 0; i < warmup + iterations; i++) {
        const t0 = performance.now();
        const r = await session.step({ x }, { position: 0 });
        const t = performance.now() - t0;
        if (i === 0 && (r.outputs.y.data as Float32Array).length !== size.floats) throw new Error('identity returned the wrong size');
        if (i >= warmup) { rtt.push(t); server_ms.push(r.queueMs + r.computeMs); }
      }
      const tcp = await tcpEcho(size.floats * 4, iterations, warmup);
      const p2p = await libp2pEcho(caller, supplier, size.floats * 4, iterations, warmup);
      metrics[`hop_${size.key}_ms`] = median(rtt);
      metrics[`tcp_${size.key}_ms`] = median(tcp);
      metrics[`libp2p_echo_${size.key}_ms`] = median(p2p);
      metrics[`hop_${size.key}_over_libp2p_echo`] = median(rtt) / median(p2p);
      metrics[`hop_${size.key}_p90_ms`] = quantile(rtt, 0.9);
      metrics[`hop_${size.key}_server_ms`] = median(server_ms);
      notes.push(`${size.key}: ${iterations} iterations after ${warmup} warm-up`);
    }
    await session.close();
    metrics.hop_3k_goal_ms = 0.5;
    reportResult('hop', metrics, [
      'Round trip of one exec step (float32 [1, N] through an Identity fragment) between two libp2p nodes on 127.0.0.1:',
      'TCP + Noise + Yamux, one persistent session stream, hand-encoded step frames; server_ms = queue + compute reported by the node.',
      'Baselines in the same run: tcp_* a raw node:net echo of the same bytes; libp2p_echo_* the same bytes echoed on one',
      'persistent libp2p stream between the same two hosts (the floor under the exec protocol). Echoes are cut-through',
      '(bytes go back as they arrive); a hop is store-and-forward (the whole frame in, the whole reply out), so at 1 MB it',
      `moves the bytes twice in sequence. Both hosts run in this process (one event loop). ${notes.join('; ')}.`,
    ].join(' '));
  } finally {
    await server?.stop().catch(() => undefined);
    await Promise.allSettled(hosts.map((h) => h.stop()));
    await rm(work, { recursive: true, force: true });
  }
}
