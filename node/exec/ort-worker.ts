/**
 * One onnxruntime InferenceSession in a worker thread, so a long run does not freeze the node's event loop.
 *
 * Why: onnxruntime-node 1.30's `run()` executes synchronously on the JavaScript thread (backend.js only
 * defers it with setImmediate): while a 10 s prefill ran, the supplier answered nothing (no other session's
 * step, no admin /status, no libp2p keep-alive) (issue 13, attack 7). In a worker the run blocks only that
 * thread; the node's loop goes on.
 *
 * Tensors cross by transfer, not copy, where the sender owns the whole buffer: outputs always (they are
 * fresh), feeds when their data spans its ArrayBuffer (KV caches, earlier outputs); feeds that are views
 * into a bigger buffer (a frame's tensors) are copied by the structured clone. A transferred feed is
 * detached in the caller until the run ends: the worker sends every transferred feed back with the result
 * or the error, and the caller's tensors are re-attached to them, so a failed run leaves the KV cache as it
 * was. The worker's code is an eval'd CommonJS string so it runs the same from the TypeScript sources
 * (tests) and from dist/.
 */
import { Worker } from 'node:worker_threads';
import ort from 'onnxruntime-node';

/** A tensor as it crosses the thread boundary. */
interface TensorMessage { type: ort.Tensor.Type; dims: readonly number[]; data: ort.Tensor.DataType }

interface RunReply {
  id: number;
  outputs?: Record<string, TensorMessage>;
  error?: string;
  /** onnxruntime's time for the run, measured in the worker (without the hand-off). */
  runMs?: number;
  /** The feeds that were transferred in, transferred back. */
  returned: Record<string, ort.Tensor.DataType>;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
function owned(d) { return ArrayBuffer.isView(d) && d.byteOffset === 0 && d.byteLength === d.buffer.byteLength && d.byteLength > 0; }
function post(msg, transfer) {
  try { parentPort.postMessage(msg, transfer); } catch { parentPort.postMessage(msg); }
}
const loadStarted = performance.now();
ort.InferenceSession.create(workerData.file, workerData.options).then((session) => {
  const meta = (list) => list.map((m) => ({ name: m.name, isTensor: m.isTensor, type: m.type, shape: m.shape }));
  parentPort.postMessage({ ready: true, inputs: meta(session.inputMetadata), outputs: meta(session.outputMetadata), loadMs: performance.now() - loadStarted });
  parentPort.on('message', async (m) => {
    if (m.close) { await session.release(); parentPort.close(); return; }
    const feeds = {};
    for (const name in m.feeds) { const t = m.feeds[name]; feeds[name] = new ort.Tensor(t.type, t.data, t.dims); }
    const returned = {};
    const back = [];
    for (const name of m.transferred) { const d = m.feeds[name].data; returned[name] = d; back.push(d.buffer); }
    try {
      const started = performance.now();
      const out = m.fetches ? await session.run(feeds, m.fetches) : await session.run(feeds);
      const runMs = performance.now() - started;
      const outputs = {};
      const transfer = back.slice();
      for (const name in out) {
        const t = out[name];
        outputs[name] = { type: t.type, dims: t.dims, data: t.data };
        if (owned(t.data) && !transfer.includes(t.data.buffer)) transfer.push(t.data.buffer);
      }
      post({ id: m.id, outputs, returned, runMs }, transfer);
    } catch (err) {
      post({ id: m.id, error: String(err && err.message || err), returned }, back);
    }
  });
}, (err) => parentPort.postMessage({ ready: false, error: String(err && err.message || err) }));
`;

/** Whether a feed's data may be transferred: it spans its whole (non-shared) ArrayBuffer. */
function transferable(data: unknown): data is ArrayBufferView & { buffer: ArrayBuffer } {
  return ArrayBuffer.isView(data) && data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.byteLength > 0;
}

/** The InferenceSession surface the executor uses, backed by a worker thread. */
export class WorkerSession {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: RunReply) => void; reject: (e: Error) => void; feeds: Record<string, ort.Tensor> }>();
  private failure?: Error;

  private constructor(
    private readonly worker: Worker,
    readonly inputMetadata: readonly ort.InferenceSession.ValueMetadata[],
    readonly outputMetadata: readonly ort.InferenceSession.ValueMetadata[],
    /** How long onnxruntime took to load the session in the worker (what a load on the main thread would block it). */
    readonly loadMs: number,
  ) {
    worker.on('message', (r: RunReply) => {
      const w = this.waiting.get(r.id);
      if (!w) return;
      this.waiting.delete(r.id);
      if (this.waiting.size === 0) worker.unref(); // idle: a loaded fragment alone does not keep the process alive
      w.resolve(r);
    });
    const fail = (err: Error): void => {
      this.failure ??= err;
      for (const w of this.waiting.values()) w.reject(this.failure);
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`onnxruntime worker exited (code ${code})`)));
  }

  /** Whether the worker has stopped (crashed or exited): every run fails; load the fragment again. */
  get dead(): boolean {
    return this.failure !== undefined;
  }

  /** Starts a worker and loads `file` there with `options`; rejects with onnxruntime's message. */
  static async create(file: string, options: ort.InferenceSession.SessionOptions): Promise<WorkerSession> {
    const { createRequire } = await import('node:module');
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { file, options, ortPath } });
    const first = await new Promise<{ ready: boolean; error?: string; inputs?: ort.InferenceSession.ValueMetadata[]; outputs?: ort.InferenceSession.ValueMetadata[]; loadMs?: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    if (!first.ready) {
      await worker.terminate();
      throw new Error(first.error ?? 'onnxruntime worker failed to start');
    }
    worker.unref();
    return new WorkerSession(worker, first.inputs!, first.outputs!, first.loadMs ?? Number.NaN);
  }

  /** Runs the session in the worker; outputs come back as tensors that own their buffers. */
  async run(feeds: Record<string, ort.Tensor>, fetches?: string[]): Promise<Record<string, ort.Tensor>> {
    return (await this.runTimed(feeds, fetches)).outputs;
  }

  /** `run`, with onnxruntime's own time for it as the worker measured it (the hand-off excluded). */
  async runTimed(feeds: Record<string, ort.Tensor>, fetches?: string[]): Promise<{ outputs: Record<string, ort.Tensor>; runMs: number }> {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    const message: Record<string, TensorMessage> = {};
    const transferred: string[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const name in feeds) {
      const t = feeds[name];
      message[name] = { type: t.type, dims: t.dims, data: t.data };
      if (transferable(t.data) && !transfer.includes(t.data.buffer)) {
        transferred.push(name);
        transfer.push(t.data.buffer);
      }
    }
    const reply = await new Promise<RunReply>((resolve, reject) => {
      if (this.waiting.size === 0) this.worker.ref(); // a run in progress keeps the process alive
      this.waiting.set(id, { resolve, reject, feeds });
      this.worker.postMessage({ id, feeds: message, transferred, fetches }, transfer);
    });
    // re-attach the caller's tensors to their buffers, back from the worker
    for (const name in reply.returned) (feeds[name] as unknown as { cpuData: unknown }).cpuData = reply.returned[name];
    if (reply.error !== undefined) throw new Error(reply.error);
    const outputs: Record<string, ort.Tensor> = {};
    for (const name in reply.outputs) {
      const t = reply.outputs[name];
      outputs[name] = new ort.Tensor(t.type, t.data as never, t.dims);
    }
    return { outputs, runMs: reply.runMs ?? Number.NaN };
  }

  async release(): Promise<void> {
    if (this.failure) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.ref(); // wait for it to go
    this.worker.postMessage({ close: true });
    await exited;
  }
}
