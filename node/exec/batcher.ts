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
 * When: a step is batched with steps of other sessions of the same span that arrive while a batch of that
 * span is running (they wait for it anyway: runs of a fragment are serial), or that are expected soon: an idle
 * span holds a step while other sessions active on it are predicted (their last step + their interval between
 * steps) before the wait's end, which is `windowUs` and at most half the waiting session's own interval. Sessions
 * that drifted apart thus merge into one convoy that stays in step through the pipeline, so each span runs one
 * full batch per token instead of several small ones that compete for the same cores. A lone session never
 * waits and runs unbatched on its own cache.
 *
 * Copies: the batch's caches stay stacked after a run; each session holds a view of its row (masked padding in
 * front, `kvPadding`). When the same sessions meet again, the stacked tensors are fed as they are, with no KV
 * copy (the steady state of a convoy); otherwise rows are re-stacked without their old padding. A session that
 * runs alone or rewinds first drops its padding (one copy). Views keep the whole batch's buffer alive until each
 * session's next step or close. When a batched row costs more than an unbatched run did, rows run alone (a batch
 * is tried again now and then). A batch that fails runs its rows alone, so a bad row fails only its own session.
 */
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { ExecError } from '../../net/exec/errors.js';
import type { IoSpec } from './executor.js';
import type { ExecMetrics } from './metrics.js';
import type { SpanProgram, SpanRunResult } from './span.js';

export interface BatcherOptions {
  /** Longest wait for other sessions' steps when the span is idle, in microseconds (default 200000, and at most half a session's interval between steps; 0: never wait). */
  windowUs?: number;
  /**
   * The longest wait at the head of a pipeline (the span that takes the model's first fragment), as a share of the
   * waiting session's interval between steps on the span (default 0.5).
   */
  waitShare?: number;
  /** The same further down a pipeline, where a convoy only needs its arrivals gathered (default 0.1). */
  innerWaitShare?: number;
  /** The longest wait while no session's interval on the span is known yet, ms (default: the window). */
  firstStepWaitMs?: number;
  /** Most rows in one run (default 16; 1 turns batching off). */
  maxBatch?: number;
  logger?: Logger;
  /** Where rows per run, waits and copy time are counted (the exec server's metrics). */
  metrics?: Pick<ExecMetrics, 'batchRows' | 'batchWaitSeconds' | 'batchCopySeconds'>;
}

/** What the batcher needs of a session. */
export interface BatchableSession {
  readonly key: string;
  readonly program: SpanProgram;
  readonly state: string;
  kv: Map<string, ort.Tensor>;
  /** Real positions in the KV cache (its tensors may hold `kvPadding` more, masked, in front). */
  length: number;
  kvPadding: number;
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
  /** Batched runs that fed the previous run's caches as they were (same sessions as before: no KV copy). */
  residentRuns: number;
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
  kvPadding: number;
  queuedAt: number;
  /** The session's first step on this span (it had opened here and not stepped yet). */
  firstStep: boolean;
  resolve: (r: SpanRunResult) => void;
  reject: (e: unknown) => void;
}

interface Group {
  pending: Row[];
  running: boolean;
  timer?: ReturnType<typeof setTimeout>;
  /** Sessions that stepped on this span lately: when, and the time between their last two steps. */
  recent: Map<BatchableSession, { at: number; interval: number }>;
  /**
   * Sessions opened on this span that have not stepped yet, and when they opened: sessions that open together
   * (a client starting several generations at once) are expected to start together, so a first step waits for them.
   */
  unstepped: Map<BatchableSession, number>;
  /**
   * When each session last stepped here, kept after it leaves `recent`: a session dropped as inactive between two
   * steps (its rounds slower than its guessed interval) still learns its real interval at the next one.
   */
  lastStep: WeakMap<BatchableSession, number>;
  /** Sessions' interval between steps on this span, moving average: the guess for a session with one step so far. */
  interval?: number;
  /** Unbatched compute ms per row, moving average (undefined until measured). */
  singleMs?: number;
  /** Batched compute + copy ms per row, moving average. */
  batchedMs?: number;
  flushes: number;
  /**
   * The last batched run's caches, still stacked: its sessions in row order, the batched KV tensors, and the
   * row views each session was handed. When the next run has the same sessions and each still holds its view,
   * the stacked tensors are fed as they are (the steady state of a convoy of sessions: no KV copy per step).
   */
  resident?: { sessions: BatchableSession[]; kv: Map<string, ort.Tensor>; views: Map<string, ort.Tensor>[] };
}

/**
 * A session counts as active on a span (its next step is expected soon) until twice its last interval between
 * steps has passed, at least ACTIVE_MIN_MS and at most ACTIVE_MAX_MS after its last step.
 */
const ACTIVE_MIN_MS = 100;
const ACTIVE_MAX_MS = 5000;
/** Default cap on a step's wait for other sessions, µs: the share of the interval below binds in practice; the cap only stops a wait on sessions with very long intervals (a cap below half the interval would leave cohorts offset by more than it apart for good). */
export const DEFAULT_WINDOW_US = 200_000;
/** The longest a step waits for other sessions, as a share of its session's own interval between steps (default). */
const WAIT_SHARE = 0.5;
/**
 * Further down a pipeline a span waits only a short share: convoys form at the head, and spans that each waited
 * long for sessions held up at another span's wait would hold each other up in a circle.
 */
const INNER_WAIT_SHARE = 0.1;
/**
 * The longest a session's first step at the head of a pipeline waits for sessions that opened on the span and have
 * not stepped yet: a client starting several generations at once opens them within a few tens of ms.
 */
const OPENED_WAIT_MS = 100;
/** When batching looks worse than single runs, still try a batch every this many flushes. */
const PROBE_EVERY = 4;
/**
 * Batching counts as worse only when a batched row costs this many times an unbatched run: both are measured
 * on a machine that other work shares (other spans, other processes), and a few slow batches must not turn
 * batching off for everyone.
 */
const WORSE_BY = 1.5;

type TypedArray = Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Uint16Array | Int16Array | BigInt64Array | BigUint64Array | Uint32Array;
type TypedArrayCtor = new (n: number) => TypedArray;

const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/**
 * Stacks one-row tensors along axis 0; with `padAxis` > 0, left-pads that axis of each row to `padTo` with
 * zeros (masked positions), keeping only the last `keep[r]` entries of row r's axis (its own padding dropped).
 */
export function stackRows(rows: readonly ort.Tensor[], padAxis = -1, padTo = 0, keep?: readonly number[]): ort.Tensor {
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
    const kept = keep?.[r] ?? len;
    const block = len * inner;
    for (let p = 0; p < outer; p++) out.set(src.subarray(p * block + (len - kept) * inner, (p + 1) * block) as never, r * rowOut + p * padTo * inner + (padTo - kept) * inner);
  });
  return new ort.Tensor(first.type, out, dims);
}

/** Row `r` of a batched tensor without a copy: a view of its rows' contiguous block. */
function rowView(t: ort.Tensor, r: number): ort.Tensor {
  const src = t.data as TypedArray;
  const rowIn = src.length / t.dims[0];
  const dims = t.dims.slice();
  dims[0] = 1;
  return new ort.Tensor(t.type, src.subarray(r * rowIn, (r + 1) * rowIn) as never, dims);
}

/** A session's KV cache without its padding (a copy), or the cache itself when it has none. */
export function withoutPadding(kv: Map<string, ort.Tensor>, program: SpanProgram, padding: number): Map<string, ort.Tensor> {
  if (padding <= 0) return kv;
  const out = new Map<string, ort.Tensor>();
  for (const slot of program.kv) {
    const t = kv.get(slot.input)!;
    out.set(slot.input, rowOf(t, 0, slot.seqAxis, t.dims[slot.seqAxis] - padding));
  }
  return out;
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

/** Whether the span starts a pipeline (its first member is the model's fragment 0, or it takes token ids). */
function isPipelineHead(program: SpanProgram): boolean {
  const first = program.members[0]?.info;
  if (first) return first.index === 0;
  for (const [name] of program.clientInputs) if (name === 'input_ids') return true;
  return false;
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

/** Drops sessions that closed before their first step here, or opened too long ago to be waited for. */
function pruneUnstepped(group: Group, now: number): void {
  for (const [s, at] of group.unstepped) if (s.state !== 'open' || now - at > ACTIVE_MAX_MS) group.unstepped.delete(s);
}

/** Merges concurrent sessions' steps per span into batched runs. */
export class StepBatcher {
  readonly windowUs: number;
  readonly maxBatch: number;
  readonly waitShare: number;
  readonly innerWaitShare: number;
  readonly firstStepWaitMs: number;
  readonly stats: BatcherStats = { batches: 0, batchedRows: 0, singleRuns: 0, copyMs: 0, batchComputeMs: 0, residentRuns: 0 };
  private readonly groups = new Map<string, Group>();
  private readonly logger?: Logger;
  private readonly metrics?: BatcherOptions['metrics'];

  constructor(options: BatcherOptions = {}) {
    this.windowUs = options.windowUs ?? DEFAULT_WINDOW_US;
    this.maxBatch = options.maxBatch ?? 16;
    this.waitShare = options.waitShare ?? WAIT_SHARE;
    this.innerWaitShare = options.innerWaitShare ?? INNER_WAIT_SHARE;
    this.firstStepWaitMs = options.firstStepWaitMs ?? this.windowUs / 1000;
    this.logger = options.logger;
    this.metrics = options.metrics;
    if (!Number.isFinite(this.windowUs) || this.windowUs < 0) throw new ExecError('INTERNAL', 'the batch window must be ≥ 0 µs');
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new ExecError('INTERNAL', 'the batch size must be a positive integer');
  }

  /** Whether a step of `session` with these feeds may join a batch (otherwise run it with program.run). */
  accepts(session: BatchableSession, feeds: Map<string, ort.Tensor>): boolean {
    if (!this.batchable(session)) return false;
    for (const t of feeds.values()) if (t.dims[0] !== 1) return false;
    return true;
  }

  /** Whether any step of `session` could join a batch: batching on, a span it can stack, a cache of one row. */
  private batchable(session: BatchableSession): boolean {
    if (this.maxBatch < 2 || !cachedPlan(session.program)) return false;
    for (const t of session.kv.values()) if (t.dims[0] !== 1) return false;
    return true;
  }

  /**
   * Notes that `session` opened on its span and will step soon: until it does (at most ACTIVE_MAX_MS), the first
   * steps of other sessions on the span wait for it, as for any expected session, so sessions started together
   * run their first steps as one batch and stay in one convoy from the start (otherwise the first to arrive runs
   * alone, the rest queue behind it, and the convoy takes many tokens to form).
   */
  opened(session: BatchableSession): void {
    if (!this.batchable(session)) return;
    const key = session.program.cids.join('\n');
    const group = this.groups.get(key) ?? this.newGroup(key);
    const now = performance.now();
    pruneUnstepped(group, now);
    group.unstepped.set(session, now);
  }

  /** Forgets that `session` opened and has not stepped (it closed, was evicted, or stepped outside a batch); its rows finish as they are. */
  forget(session: BatchableSession): void {
    const key = session.program.cids.join('\n');
    const group = this.groups.get(key);
    if (!group?.unstepped.delete(session)) return;
    if (!group.running && !group.pending.length && !group.recent.size && !group.unstepped.size) this.groups.delete(key);
  }

  private newGroup(key: string): Group {
    const group: Group = { pending: [], running: false, recent: new Map(), unstepped: new Map(), lastStep: new WeakMap(), flushes: 0 };
    this.groups.set(key, group);
    return group;
  }

  /** Runs one step of `session` (its KV cache as it is now), alone or in a batch; the session's cache is not modified. */
  run(session: BatchableSession, feeds: Map<string, ort.Tensor>): Promise<SpanRunResult> {
    const key = session.program.cids.join('\n');
    let group = this.groups.get(key);
    if (!group) {
      group = this.newGroup(key);
    }
    const now = performance.now();
    const firstStep = group.unstepped.delete(session);
    pruneUnstepped(group, now);
    const last = group.lastStep.get(session);
    const interval = last !== undefined ? now - last : 0;
    group.lastStep.set(session, now);
    group.recent.set(session, { at: now, interval });
    if (interval > 0 && interval <= ACTIVE_MAX_MS) group.interval = ewma(group.interval, interval);
    for (const [s, seen] of group.recent) {
      if (s.state !== 'open' || now - seen.at > Math.min(ACTIVE_MAX_MS, Math.max(ACTIVE_MIN_MS, 2 * seen.interval))) group.recent.delete(s);
    }
    return new Promise<SpanRunResult>((resolve, reject) => {
      group.pending.push({ session, feeds, kv: new Map(session.kv), length: session.length, kvPadding: session.kvPadding, queuedAt: now, firstStep, resolve, reject });
      this.schedule(key, group);
    });
  }

  /**
   * Starts a run now, later, or after the running one. An idle span holds its waiting steps for:
   * - the rest of their cohort: when every waiting step's session was in the span's last batch, the others of that
   *   batch still open, for at most `waitShare` of a session's interval between steps (a convoy stays whole);
   * - other sessions predicted (their last step here + their interval) before the wait's end: at the head of a
   *   pipeline the wait's end is `waitShare` of the interval (cohorts that drifted apart merge there), further
   *   down only `innerWaitShare` (spans that each waited long for sessions held at another span's wait would
   *   hold each other up in a circle).
   * - for a session's first step: the other sessions that opened on the span and have not stepped yet (they started
   *   together), at the head for at most OPENED_WAIT_MS.
   * Every wait also ends at `windowUs`. A lone session never waits.
   */
  private schedule(key: string, group: Group): void {
    if (group.running || !group.pending.length) return;
    if (this.windowUs === 0 || group.pending.length >= this.maxBatch) {
      this.flush(key, group);
      return;
    }
    const waiting = new Set(group.pending.map((r) => r.session));
    const intervalOf = (seen: { interval: number } | undefined): number => (seen?.interval || group.interval) ?? 0;
    const endOfWait = (share: number): number => {
      let until = Infinity;
      for (const r of group.pending) {
        const interval = intervalOf(group.recent.get(r.session));
        until = Math.min(until, r.queuedAt + Math.min(this.windowUs / 1000, interval > 0 ? share * interval : this.firstStepWaitMs));
      }
      return until;
    };
    const cohort = group.resident?.sessions;
    const cohortWaiting = cohort !== undefined && [...waiting].every((s) => cohort.includes(s));
    const cohortMissing = cohortWaiting && cohort.some((s) => s.state === 'open' && !waiting.has(s));
    const cohortUntil = cohortMissing ? endOfWait(this.waitShare) : -Infinity;
    const head = isPipelineHead(group.pending[0].session.program);
    const until = endOfWait(head ? this.waitShare : this.innerWaitShare);
    // other sessions worth waiting for: active here, not waiting already, next expected before `until` (or not known yet)
    const expected = [...group.recent].some(([s, seen]) => {
      if (waiting.has(s) || s.state !== 'open') return false;
      const interval = intervalOf(seen);
      return interval <= 0 || seen.at + interval <= until;
    });
    // sessions that opened here together start together: a first step also waits for the others opened here that
    // have not stepped yet; at the head for up to OPENED_WAIT_MS (its own interval is not known yet), further down
    // as for any expected session
    const openedWith = group.pending.some((r) => r.firstStep) && [...group.unstepped.keys()].some((s) => s.state === 'open' && !waiting.has(s));
    const openedUntil = openedWith && head ? Math.min(...group.pending.map((r) => r.queuedAt)) + Math.min(this.windowUs / 1000, this.firstStepWaitMs, OPENED_WAIT_MS) : -Infinity;
    const deadline = Math.max(cohortUntil, expected || (openedWith && !head) ? until : -Infinity, openedUntil);
    const now = performance.now();
    if (deadline <= now) {
      this.flush(key, group);
      return;
    }
    if (group.timer) clearTimeout(group.timer);
    group.timer = setTimeout(() => this.flush(key, group), deadline - now);
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
      if (!group.pending.length && !group.recent.size && !group.unstepped.size) this.groups.delete(key);
      else if (group.pending.length) this.schedule(key, group); // whoever waited for the running batch goes now, or with the rest of its cohort
    });
  }

  private async runRows(group: Group, rows: Row[], plan: BatchPlan): Promise<void> {
    group.flushes++;
    const batchLooksWorse = group.singleMs !== undefined && group.batchedMs !== undefined && group.batchedMs > WORSE_BY * group.singleMs;
    if (rows.length === 1 || (batchLooksWorse && group.flushes % PROBE_EVERY !== 0)) {
      for (const row of rows) await this.runAlone(group, row);
      return;
    }
    let results: [Row, SpanRunResult][];
    try {
      results = await this.runBatch(group, rows, plan);
    } catch (err) {
      // one bad row (or a run the batch shape broke) must not fail the others: each runs alone
      this.logger?.debug({ rows: rows.length, err: (err as Error).message }, 'batched run failed; running its rows alone');
      for (const row of rows) await this.runAlone(group, row);
      return;
    }
    for (const [row, result] of results) row.resolve(result);
  }

  private async runAlone(group: Group, row: Row): Promise<void> {
    const waited = performance.now() - row.queuedAt;
    this.metrics?.batchRows.observe(1);
    this.metrics?.batchWaitSeconds.observe(waited / 1000);
    try {
      if (row.session.state !== 'open') throw new ExecError('SESSION_EVICTED', 'the session was evicted while its step waited');
      const r = await row.session.program.run(row.feeds, withoutPadding(row.kv, row.session.program, row.kvPadding));
      this.stats.singleRuns++;
      group.singleMs = ewma(group.singleMs, r.computeMs);
      row.resolve({ ...r, queueMs: r.queueMs + waited });
    } catch (err) {
      row.reject(err);
    }
  }

  /**
   * The rows in the order of the span's resident batch when they are exactly its sessions, each still holding
   * the views it was handed (nothing truncated or run alone since); undefined otherwise.
   */
  private residentOrder(group: Group, rows: Row[]): Row[] | undefined {
    const resident = group.resident;
    if (!resident || resident.sessions.length !== rows.length) return undefined;
    const bySession = new Map(rows.map((r) => [r.session, r]));
    const ordered: Row[] = [];
    for (const [i, session] of resident.sessions.entries()) {
      const row = bySession.get(session);
      if (!row) return undefined;
      for (const [input, view] of resident.views[i]) if (row.kv.get(input) !== view) return undefined;
      ordered.push(row);
    }
    return ordered;
  }

  /**
   * Sessions of the last batch that are not in the next one get their rows copied out of its buffers, so those
   * buffers are freed with the batch and no session holds more memory than it is counted for.
   */
  private releaseLeftovers(group: Group, rows: Row[]): void {
    const resident = group.resident;
    if (!resident) return;
    const next = new Set(rows.map((r) => r.session));
    for (const [i, s] of resident.sessions.entries()) {
      if (next.has(s) || s.state !== 'open') continue;
      const holdsView = [...resident.views[i]].every(([input, view]) => s.kv.get(input) === view);
      if (!holdsView) continue;
      s.kv = withoutPadding(s.kv, s.program, s.kvPadding);
      s.kvPadding = 0;
    }
  }

  /** Stacks the rows (or reuses the resident batch's caches), runs the span once, hands each row its part. */
  private async runBatch(group: Group, given: Row[], plan: BatchPlan): Promise<[Row, SpanRunResult][]> {
    const program = given[0].session.program;
    const started = performance.now();
    const ordered = this.residentOrder(group, given);
    const rows = ordered ?? given;
    let kv: Map<string, ort.Tensor>;
    let positions: number; // KV positions of the stacked caches (the longest row; shorter rows padded in front)
    if (ordered) {
      kv = group.resident!.kv;
      positions = Math.max(...rows.map((r) => r.length + r.kvPadding));
      this.stats.residentRuns++;
    } else {
      positions = Math.max(...rows.map((r) => r.length));
      this.releaseLeftovers(group, rows);
      kv = new Map();
      for (const slot of program.kv) kv.set(slot.input, stackRows(rows.map((r) => r.kv.get(slot.input)!), slot.seqAxis, positions, rows.map((r) => r.length)));
    }
    const feeds = new Map<string, ort.Tensor>();
    for (const name of rows[0].feeds.keys()) {
      const axis = plan.padded.get(name) ?? -1;
      const parts = rows.map((r) => r.feeds.get(name)!);
      // a mask covers the row's positions + the new ones: pad it to the stacked caches' positions + the new ones
      const padTo = axis > 0 ? positions + parts[0].dims[axis] - rows[0].length : 0;
      feeds.set(name, stackRows(parts, axis, padTo));
    }
    const stacked = performance.now();
    group.resident = undefined; // its buffers go to the run (and its views with them) whatever happens next
    let r: SpanRunResult;
    try {
      r = await program.run(feeds, kv);
    } catch (err) {
      // the run handed the caches back: rows that held views of them get fresh views, so each can run alone
      if (ordered) for (const [i, row] of rows.entries()) row.kv = new Map(program.kv.map((slot) => [slot.input, rowView(kv.get(slot.input)!, i)]));
      throw err;
    }
    const ran = performance.now();
    const views: Map<string, ort.Tensor>[] = [];
    const results = rows.map((row, i): [Row, SpanRunResult] => {
      const outputs = new Map<string, ort.Tensor>();
      for (const [name, t] of r.outputs) {
        const axis = plan.unpadded.get(name);
        outputs.set(name, axis === undefined ? rowOf(t, i) : rowOf(t, i, axis, row.length + t.dims[axis] - positions));
      }
      const rowKv = new Map<string, ort.Tensor>();
      for (const slot of program.kv) {
        const t = r.kv.get(slot.input);
        if (!t) throw new ExecError('EXECUTION_FAILED', `the fragment did not produce "${slot.output}"`);
        rowKv.set(slot.input, rowView(t, i));
      }
      views.push(rowKv);
      return [row, { outputs, kv: rowKv, kvPadding: positions - row.length, queueMs: 0, computeMs: 0 }];
    });
    group.resident = { sessions: rows.map((row) => row.session), kv: r.kv, views };
    const done = performance.now();
    const copyMs = (stacked - started) + (done - ran);
    this.stats.batches++;
    this.stats.batchedRows += rows.length;
    this.stats.copyMs += copyMs;
    this.stats.batchComputeMs += r.computeMs;
    this.metrics?.batchRows.observe(rows.length);
    this.metrics?.batchCopySeconds.inc(copyMs / 1000);
    for (const row of rows) this.metrics?.batchWaitSeconds.observe((started - row.queuedAt) / 1000);
    group.batchedMs = ewma(group.batchedMs, (r.computeMs + copyMs) / rows.length);
    // each row reports the whole run as its compute (what it waited for) and the rest as queue time
    for (const [row, res] of results) {
      res.computeMs = r.computeMs + copyMs;
      res.queueMs = started - row.queuedAt + r.queueMs;
    }
    return results;
  }
}

function ewma(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : 0.8 * previous + 0.2 * sample;
}
