/**
 * Server-side batching: concurrent sessions' steps on the same span merged into one onnxruntime run.
 *
 * Why: each step of a decode runs one position through the span; on its own that run is dominated by
 * reading the weights, so many sessions' steps cost little more together than one alone (Petals, vLLM and
 * Parallax batch the same way). Each session keeps its own KV cache; a batch stacks the rows along the
 * batch axis (Optimum layout: axis 0), left-padding each cache to the longest along its positions axis. The
 * padding is hidden by the attention mask the client sends (its positions dim "past + seq" is padded with
 * zeros on the left too), and position ids are per row, so every row computes what it would alone. Spans
 * whose inputs have no mask are batched only across rows of equal KV length.
 *
 * When: a step is batched only with steps of other sessions of the same span that arrive while a batch of
 * that span is running (they wait for it anyway: runs of a fragment are serial) or within a short window
 * (`windowUs`) that opens only when other sessions of the span stepped recently; a lone session runs at
 * once, unbatched, on its own cache (no copy). The cost of stacking and splitting the caches is measured per
 * batch; when a batched row costs more than an unbatched run did, rows run alone (a batch is tried again
 * now and then). A batch that fails runs its rows alone, so a bad row fails only its own session.
 */
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { ExecError } from '../../net/exec/errors.js';
import type { IoSpec } from './executor.js';
import type { SpanProgram, SpanRunResult } from './span.js';

export interface BatcherOptions {
  /** Longest wait for other sessions' steps when the span is idle, in microseconds (default 4000; 0: never wait). */
  windowUs?: number;
  /** Most rows in one run (default 16; 1 turns batching off). */
  maxBatch?: number;
  logger?: Logger;
}

/** What the batcher needs of a session. */
export interface BatchableSession {
  readonly key: string;
  readonly program: SpanProgram;
  readonly state: string;
  kv: Map<string, ort.Tensor>;
  length: number;
}

/** Counters of the batcher (what batching did and what the KV copy cost). */
export interface BatcherStats {
  /** Runs of more than one row. */
  batches: number;
  /** Rows that ran in those runs. */
  batchedRows: number;
  /** Rows that ran alone. */
  singleRuns: number;
  /** Time stacking caches and inputs into batches and splitting outputs back, ms in total. */
  copyMs: number;
  /** onnxruntime time of the batched runs, ms in total. */
  batchComputeMs: number;
}

/** How a span's tensors stack into a batch; undefined when the span cannot be batched. */
interface BatchPlan {
  /** Client inputs with a positions axis ("past + seq") to left-pad (attention masks), by name. */
  padded: Map<string, number>;
  /** Returned outputs with a positions axis (masks passed on to the next span), by name: split without the padding. */
  unpadded: Map<string, number>;
  /** Whether rows of different KV lengths can share a run (some mask covers the positions). */
  mixedLengths: boolean;
}

interface Row {
  session: BatchableSession;
  feeds: Map<string, ort.Tensor>;
  kv: Map<string, ort.Tensor>;
  length: number;
  queuedAt: number;
  resolve: (r: SpanRunResult) => void;
  reject: (e: unknown) => void;
}

interface Group {
  pending: Row[];
  running: boolean;
  timer?: ReturnType<typeof setTimeout>;
  /** Sessions that stepped on this span lately: when, and the time between their last two steps. */
  recent: Map<BatchableSession, { at: number; interval: number }>;
  /** Unbatched compute ms per row, moving average (undefined until measured). */
  singleMs?: number;
  /** Batched compute + copy ms per row, moving average. */
  batchedMs?: number;
  flushes: number;
}

/**
 * A session counts as active on a span (its next step is expected soon) until twice its last interval between
 * steps has passed, at least ACTIVE_MIN_MS and at most ACTIVE_MAX_MS after its last step.
 */
const ACTIVE_MIN_MS = 100;
const ACTIVE_MAX_MS = 5000;
/** When batching looks worse than single runs, still try a batch every this many flushes. */
const PROBE_EVERY = 16;

type TypedArray = Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Uint16Array | Int16Array | BigInt64Array | BigUint64Array | Uint32Array;
type TypedArrayCtor = new (n: number) => TypedArray;

const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/**
 * Stacks one-row tensors along axis 0; with `padAxis` > 0, left-pads that axis of each row to `padTo` with
 * zeros (masked positions).
 */
export function stackRows(rows: readonly ort.Tensor[], padAxis = -1, padTo = 0): ort.Tensor {
  const first = rows[0];
  const dims = first.dims.slice();
  dims[0] = rows.length;
  if (padAxis > 0) dims[padAxis] = padTo;
  const total = product(dims);
  const out = new (first.data.constructor as TypedArrayCtor)(total);
  const rowOut = total / rows.length;
  const inner = padAxis > 0 ? product(dims.slice(padAxis + 1)) : 0;
  const outer = padAxis > 0 ? product(dims.slice(1, padAxis)) : 0;
  rows.forEach((t, r) => {
    const src = t.data as TypedArray;
    if (padAxis <= 0) {
      out.set(src as never, r * rowOut);
      return;
    }
    const len = t.dims[padAxis];
    const block = len * inner;
    for (let p = 0; p < outer; p++) out.set(src.subarray(p * block, (p + 1) * block) as never, r * rowOut + p * padTo * inner + (padTo - len) * inner);
  });
  return new ort.Tensor(first.type, out, dims);
}

/** Row `r` of a batched tensor (a copy); with `padAxis` > 0, only the last `keep` entries of that axis. */
export function rowOf(t: ort.Tensor, r: number, padAxis = -1, keep = 0): ort.Tensor {
  const dims = t.dims.slice();
  const src = t.data as TypedArray;
  const rowIn = src.length / dims[0];
  dims[0] = 1;
  if (padAxis <= 0) return new ort.Tensor(t.type, src.slice(r * rowIn, (r + 1) * rowIn), dims);
  const len = t.dims[padAxis];
  const inner = product(t.dims.slice(padAxis + 1));
  const outer = product(t.dims.slice(1, padAxis));
  dims[padAxis] = keep;
  const out = new (src.constructor as TypedArrayCtor)(outer * keep * inner);
  for (let p = 0; p < outer; p++) {
    const from = r * rowIn + p * len * inner + (len - keep) * inner;
    out.set(src.subarray(from, from + keep * inner) as never, p * keep * inner);
  }
  return new ort.Tensor(t.type, out, dims);
}

const isBatchDim = (d: number | string | undefined): boolean => typeof d === 'string' && /batch/i.test(d);

/** How `program` batches, or undefined when its tensors do not all carry a leading batch axis. */
function planOf(program: SpanProgram): BatchPlan | undefined {
  for (const s of program.kv) if (s.batchAxis !== 0 || s.seqAxis <= 0) return undefined;
  const padded = new Map<string, number>();
  for (const [name, spec] of program.clientInputs) {
    if (!isBatchDim(spec.shape[0]) || spec.type === 'string') return undefined;
    const growing = spec.shape.findIndex((d) => typeof d === 'string' && d.includes('+'));
    if (growing < 0) continue;
    if (growing === 0 || !/mask/i.test(name) || spec.shape.filter((d) => typeof d === 'string' && d.includes('+')).length > 1) return undefined;
    padded.set(name, growing);
  }
  const outputs = new Map<string, IoSpec>();
  for (const m of program.members) for (const o of m.executor.outputs) outputs.set(o.name, o);
  const unpadded = new Map<string, number>();
  for (const name of program.returned) {
    const spec = outputs.get(name);
    if (!spec || !isBatchDim(spec.shape[0])) return undefined;
    const growing = spec.shape.findIndex((d) => typeof d === 'string' && d.includes('+'));
    if (growing < 0) continue;
    if (growing === 0 || !/mask/i.test(name) || spec.shape.filter((d) => typeof d === 'string' && d.includes('+')).length > 1) return undefined;
    unpadded.set(name, growing);
  }
  return { padded, unpadded, mixedLengths: padded.size > 0 };
}

const plans = new WeakMap<SpanProgram, BatchPlan | null>();

function cachedPlan(program: SpanProgram): BatchPlan | undefined {
  let p = plans.get(program);
  if (p === undefined) {
    p = planOf(program) ?? null;
    plans.set(program, p);
  }
  return p ?? undefined;
}

/** Whether two rows may share a run: same fragments (same loaded executors) and the same dims but padding. */
function compatible(a: Row, b: Row, plan: BatchPlan): boolean {
  const pa = a.session.program;
  const pb = b.session.program;
  if (pa !== pb && (pa.members.length !== pb.members.length || pa.members.some((m, i) => m.executor !== pb.members[i].executor))) return false;
  if (!plan.mixedLengths && a.length !== b.length) return false;
  for (const [name, t] of a.feeds) {
    const u = b.feeds.get(name);
    if (!u || u.type !== t.type || u.dims.length !== t.dims.length) return false;
    const padAxis = plan.padded.get(name) ?? -1;
    for (let i = 1; i < t.dims.length; i++) if (i !== padAxis && t.dims[i] !== u.dims[i]) return false;
  }
  return true;
}

/** Merges concurrent sessions' steps per span into batched runs. */
export class StepBatcher {
  readonly windowUs: number;
  readonly maxBatch: number;
  readonly stats: BatcherStats = { batches: 0, batchedRows: 0, singleRuns: 0, copyMs: 0, batchComputeMs: 0 };
  private readonly groups = new Map<string, Group>();
  private readonly logger?: Logger;

  constructor(options: BatcherOptions = {}) {
    this.windowUs = options.windowUs ?? 4000;
    this.maxBatch = options.maxBatch ?? 16;
    this.logger = options.logger;
    if (!Number.isFinite(this.windowUs) || this.windowUs < 0) throw new ExecError('INTERNAL', 'the batch window must be ≥ 0 µs');
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new ExecError('INTERNAL', 'the batch size must be a positive integer');
  }

  /** Whether a step of `session` with these feeds may join a batch (otherwise run it with program.run). */
  accepts(session: BatchableSession, feeds: Map<string, ort.Tensor>): boolean {
    if (this.maxBatch < 2) return false;
    const plan = cachedPlan(session.program);
    if (!plan) return false;
    for (const t of feeds.values()) if (t.dims[0] !== 1) return false;
    for (const t of session.kv.values()) if (t.dims[0] !== 1) return false;
    return true;
  }

  /** Runs one step of `session` (its KV cache as it is now), alone or in a batch; the session's cache is not modified. */
  run(session: BatchableSession, feeds: Map<string, ort.Tensor>): Promise<SpanRunResult> {
    const key = session.program.cids.join('\n');
    let group = this.groups.get(key);
    if (!group) {
      group = { pending: [], running: false, recent: new Map(), flushes: 0 };
      this.groups.set(key, group);
    }
    const now = performance.now();
    const before = group.recent.get(session);
    group.recent.set(session, { at: now, interval: before ? now - before.at : 0 });
    for (const [s, seen] of group.recent) {
      if (s.state !== 'open' || now - seen.at > Math.min(ACTIVE_MAX_MS, Math.max(ACTIVE_MIN_MS, 2 * seen.interval))) group.recent.delete(s);
    }
    return new Promise<SpanRunResult>((resolve, reject) => {
      group.pending.push({ session, feeds, kv: new Map(session.kv), length: session.length, queuedAt: now, resolve, reject });
      this.schedule(key, group);
    });
  }

  /** Starts a run now, later (window), or after the running one. */
  private schedule(key: string, group: Group): void {
    if (group.running || !group.pending.length) return;
    const expected = Math.min(this.maxBatch, Math.max(1, group.recent.size));
    if (group.pending.length >= expected || this.windowUs === 0) {
      this.flush(key, group);
      return;
    }
    if (!group.timer) {
      group.timer = setTimeout(() => this.flush(key, group), this.windowUs / 1000);
    }
  }

  private flush(key: string, group: Group): void {
    if (group.timer) clearTimeout(group.timer);
    group.timer = undefined;
    if (group.running || !group.pending.length) return;
    group.running = true;
    const first = group.pending[0];
    const plan = cachedPlan(first.session.program)!;
    const rows: Row[] = [];
    const rest: Row[] = [];
    for (const r of group.pending) {
      if (rows.length < this.maxBatch && compatible(first, r, plan)) rows.push(r);
      else rest.push(r);
    }
    group.pending = rest;
    void this.runRows(group, rows, plan).finally(() => {
      group.running = false;
      if (!group.pending.length && !group.recent.size) this.groups.delete(key);
      else if (group.pending.length) this.flush(key, group); // whoever waited for the running batch goes now
    });
  }

  private async runRows(group: Group, rows: Row[], plan: BatchPlan): Promise<void> {
    group.flushes++;
    const batchLooksWorse = group.singleMs !== undefined && group.batchedMs !== undefined && group.batchedMs > group.singleMs;
    if (rows.length === 1 || (batchLooksWorse && group.flushes % PROBE_EVERY !== 0)) {
      for (const row of rows) await this.runAlone(group, row);
      return;
    }
    let results: SpanRunResult[];
    try {
      results = await this.runBatch(group, rows, plan);
    } catch (err) {
      // one bad row (or a run the batch shape broke) must not fail the others: each runs alone
      this.logger?.debug({ rows: rows.length, err: (err as Error).message }, 'batched run failed; running its rows alone');
      for (const row of rows) await this.runAlone(group, row);
      return;
    }
    rows.forEach((row, i) => row.resolve(results[i]));
  }

  private async runAlone(group: Group, row: Row): Promise<void> {
    const waited = performance.now() - row.queuedAt;
    try {
      if (row.session.state !== 'open') throw new ExecError('SESSION_EVICTED', 'the session was evicted while its step waited');
      const r = await row.session.program.run(row.feeds, row.kv);
      this.stats.singleRuns++;
      group.singleMs = ewma(group.singleMs, r.computeMs);
      row.resolve({ ...r, queueMs: r.queueMs + waited });
    } catch (err) {
      row.reject(err);
    }
  }

  /** Stacks the rows, runs the span once, splits outputs and KV caches back per row. */
  private async runBatch(group: Group, rows: Row[], plan: BatchPlan): Promise<SpanRunResult[]> {
    const program = rows[0].session.program;
    const started = performance.now();
    const maxLength = Math.max(...rows.map((r) => r.length));
    const feeds = new Map<string, ort.Tensor>();
    for (const name of rows[0].feeds.keys()) {
      const axis = plan.padded.get(name) ?? -1;
      const parts = rows.map((r) => r.feeds.get(name)!);
      const padTo = axis > 0 ? Math.max(...parts.map((t) => t.dims[axis])) : 0;
      feeds.set(name, stackRows(parts, axis, padTo));
    }
    const kv = new Map<string, ort.Tensor>();
    for (const slot of program.kv) kv.set(slot.input, stackRows(rows.map((r) => r.kv.get(slot.input)!), slot.seqAxis, maxLength));
    const stacked = performance.now();
    const r = await program.run(feeds, kv);
    const ran = performance.now();
    const results = rows.map((row, i): SpanRunResult => {
      const outputs = new Map<string, ort.Tensor>();
      for (const [name, t] of r.outputs) {
        const axis = plan.unpadded.get(name);
        outputs.set(name, axis === undefined ? rowOf(t, i) : rowOf(t, i, axis, row.length + t.dims[axis] - maxLength));
      }
      const rowKv = new Map<string, ort.Tensor>();
      for (const slot of program.kv) {
        const t = r.kv.get(slot.input);
        if (!t) throw new ExecError('EXECUTION_FAILED', `the fragment did not produce "${slot.output}"`);
        rowKv.set(slot.input, rowOf(t, i, slot.seqAxis, row.length + t.dims[slot.seqAxis] - maxLength));
      }
      return { outputs, kv: rowKv, queueMs: 0, computeMs: 0 };
    });
    const done = performance.now();
    const copyMs = (stacked - started) + (done - ran);
    this.stats.batches++;
    this.stats.batchedRows += rows.length;
    this.stats.copyMs += copyMs;
    this.stats.batchComputeMs += r.computeMs;
    group.batchedMs = ewma(group.batchedMs, (r.computeMs + copyMs) / rows.length);
    // each row reports the whole run as its compute (what it waited for) and the rest as queue time
    for (const [i, res] of results.entries()) {
      res.computeMs = r.computeMs + copyMs;
      res.queueMs = started - rows[i].queuedAt + r.queueMs;
    }
    return results;
  }
}

function ewma(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : 0.8 * previous + 0.2 * sample;
}
