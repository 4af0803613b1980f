/**
 * Client sessions on this node: per session the KV cache of its span (kept here, never shipped), the
 * position bookkeeping, step-id dedup, an idle TTL, and a memory cap over all sessions.
 *
 * Positions: a step carries `position`, the KV length before it. The cache is truncated to that position
 * before the step appends, so a retry, a replay or a speculative rollback re-run from the same state and give
 * the same result. Step ids: a step id seen before returns the cached reply (a retry, or the same step pushed
 * by the previous server in a ring); an older id that is no longer cached is refused. Step id 0 means "no
 * dedup". Steps of one session run one at a time, in arrival order.
 *
 * Memory: the bytes of KV held (plus cached replies) are summed over all sessions; past the cap the least
 * recently used sessions are evicted, and their next step gets SESSION_EVICTED. Never a crash: a session
 * that alone exceeds the cap keeps its last reply and is evicted after it.
 */
import type ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { ShareLimits } from '../limits.js';
import type { WireTensor } from '../../proto/grid.js';
import { ExecError } from '../../net/exec/errors.js';
import type { ExecMetrics } from './metrics.js';
import type { PreparedShape, SpanProgram } from './span.js';
import { tensorBytes } from '../../net/exec/tensors.js';
import { lastRow, sampledRows, topEntries, truncateAxis } from './reply.js';
import type { WireSampling } from '../../net/exec/codec.js';
import { withoutPadding, type StepBatcher } from './batcher.js';

export interface SessionManagerOptions {
  limits: ShareLimits;
  /** Idle time after which a session is evicted (default 5 minutes, as Petals). */
  ttlMs?: number;
  /** Cap on KV cache plus cached replies over all sessions (default `limits.maxMemoryBytes`). */
  maxMemoryBytes?: number;
  /** Replies kept per session for step-id dedup (default 2). */
  replyCache?: number;
  metrics?: ExecMetrics;
  logger?: Logger;
  /** Clock in ms (tests inject one). */
  now?: () => number;
  /** How often idle sessions are swept (default min(ttl/4, 30 s); false: only when touched or `sweep()`). */
  sweepIntervalMs?: number | false;
  /** Merges concurrent sessions' single-chunk steps on one span into batched runs (absent: every step runs alone). */
  batcher?: StepBatcher;
}

export interface StepChunkIn { position: number; inputs: readonly WireTensor[] }

export interface StepRequestIn {
  stepId: bigint;
  position: number;
  inputs: readonly WireTensor[];
  replay?: readonly StepChunkIn[];
  want?: readonly string[];
  /** Outputs of which only the last row (position) is returned. */
  lastRowOnly?: readonly string[];
  /** With lastRowOnly: return only that row's k largest entries (NAME.top_values, NAME.top_indices). */
  topK?: number;
  /** With lastRowOnly: return the token drawn from that row (NAME.sampled) instead; takes the place of topK. */
  sample?: WireSampling;
  draftTokens?: number;
  /** performance.now() when the step arrived (queue time is measured from it). */
  receivedAt?: number;
}

export interface StepOutcome {
  outputs: Map<string, ort.Tensor>;
  replayOutputs: { position: number; outputs: Map<string, ort.Tensor> }[];
  /** Server time not spent computing: waiting for the session and fragments, validation, conversion. */
  queueMs: number;
  computeMs: number;
  /** Answered from the reply cache (a repeated step id). */
  cached: boolean;
}

export interface OpenRequest {
  sessionId: string;
  program: SpanProgram;
  maxLength: number;
  batch: number;
  /** The manifest the span's fragments were named from (what paid steps are priced with). */
  manifestCid?: string;
  /** Never batch this session's steps with other sessions' (OpenSession.solo). */
  solo?: boolean;
}

type State = 'open' | 'closed' | 'evicted';

/** One client session: its span program, KV cache and reply cache. */
export class ExecSession {
  state: State = 'open';
  evictedBecause = '';
  kv: Map<string, ort.Tensor>;
  /** Positions held in the KV cache. */
  length = 0;
  lastUsed: number;
  busy = 0;
  lastStepId = 0n;
  /** The manifest the span was opened from, when the client named one. */
  manifestCid?: string;
  /** Steps always run alone, never in a batch (OpenSession.solo). */
  solo = false;
  kvBytes = 0;
  replyBytes = 0;
  /** Masked positions in front of the KV tensors' positions axis (left there by a batched run; batcher.ts). */
  kvPadding = 0;
  readonly replies = new Map<bigint, StepOutcome>();
  chain: Promise<unknown> = Promise.resolve();

  constructor(readonly key: string, readonly id: string, readonly program: SpanProgram, readonly maxLength: number, readonly batch: number, now: number, readonly owner = '') {
    this.kv = program.emptyKv(batch);
    this.lastUsed = now;
  }

  get bytes(): number {
    return this.kvBytes + this.replyBytes;
  }

  /** The KV dims after truncation to `position` (without truncating). */
  kvDimsAt(position: number): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const slot of this.program.kv) {
      const t = this.kv.get(slot.input)!;
      const dims = t.dims.slice();
      dims[slot.seqAxis] = position;
      out.set(slot.input, dims);
    }
    return out;
  }

  free(): void {
    this.kv.clear();
    this.replies.clear();
    this.kvBytes = 0;
    this.replyBytes = 0;
  }
}

function outcomeBytes(o: StepOutcome): number {
  let n = 0;
  for (const t of o.outputs.values()) n += tensorBytes(t);
  for (const r of o.replayOutputs) for (const t of r.outputs.values()) n += tensorBytes(t);
  return n;
}

const MAX_TOMBSTONES = 4096;

export class SessionManager {
  private readonly sessions = new Map<string, ExecSession>();
  /** Sessions open per remote peer (the per-peer quota). */
  private readonly perOwner = new Map<string, number>();
  private readonly tombstones = new Map<string, string>();
  private readonly limits: ShareLimits;
  private readonly ttlMs: number;
  readonly maxMemoryBytes: number;
  private readonly replyCache: number;
  private readonly metrics?: ExecMetrics;
  private readonly logger?: Logger;
  private readonly now: () => number;
  private totalBytes = 0;
  private timer?: ReturnType<typeof setInterval>;
  /** Merges concurrent steps per span (absent: batching off). */
  readonly batcher?: StepBatcher;

  constructor(options: SessionManagerOptions) {
    this.limits = options.limits;
    this.ttlMs = options.ttlMs ?? 5 * 60_000;
    this.maxMemoryBytes = options.maxMemoryBytes ?? options.limits.maxMemoryBytes;
    this.replyCache = options.replyCache ?? 2;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.batcher = options.batcher;
    const every = options.sweepIntervalMs ?? Math.min(Math.max(this.ttlMs / 4, 10), 30_000);
    if (every !== false) {
      this.timer = setInterval(() => this.sweep(), every);
      this.timer.unref();
    }
  }

  /** Sessions open. */
  get size(): number {
    return this.sessions.size;
  }

  /** Bytes held by all sessions (KV cache and cached replies). */
  get bytesHeld(): number {
    return this.totalBytes;
  }

  /** Whether `owner` has session `sessionId` open. */
  has(owner: string, sessionId: string): boolean {
    return this.sessions.has(`${owner}/${sessionId}`);
  }

  /** Sessions `owner` holds open. */
  sessionsOf(owner: string): number {
    return this.perOwner.get(owner) ?? 0;
  }

  /** Whether `owner` could open a new session now (share limits: paused, hours, max sessions, per-peer quota). */
  admit(owner?: string): void {
    const a = this.limits.admit(this.sessions.size, new Date(), owner === undefined ? 0 : this.sessionsOf(owner));
    if (!a.ok) throw new ExecError('BUSY', a.reason);
  }

  /** Opens a session for `owner` (the remote peer). Re-opening an open id on the same span is a no-op. */
  open(owner: string, req: OpenRequest): ExecSession {
    const key = `${owner}/${req.sessionId}`;
    const existing = this.sessions.get(key);
    if (existing) {
      if (existing.program.cids.join() === req.program.cids.join()) return existing;
      throw new ExecError('BAD_REQUEST', `session ${req.sessionId} is already open on another span`);
    }
    this.admit(owner);
    if (!req.sessionId) throw new ExecError('BAD_REQUEST', 'open needs a session_id');
    if (!Number.isSafeInteger(req.maxLength) || req.maxLength < 1) throw new ExecError('BAD_REQUEST', 'open needs max_length ≥ 1');
    const perPosition = req.program.kvBytesPerPosition(req.batch);
    if (perPosition !== undefined && perPosition * req.maxLength > this.maxMemoryBytes) {
      throw new ExecError('BUSY', `a KV cache of ${req.maxLength} positions × batch ${req.batch} needs ${perPosition * req.maxLength} bytes; this node lends ${this.maxMemoryBytes}`);
    }
    const session = new ExecSession(key, req.sessionId, req.program, req.maxLength, req.batch, this.now(), owner);
    session.manifestCid = req.manifestCid;
    session.solo = req.solo ?? false;
    if (!session.solo) this.batcher?.opened(session);
    this.perOwner.set(owner, this.sessionsOf(owner) + 1);
    this.tombstones.delete(key);
    this.sessions.set(key, session);
    this.metrics?.sessionsOpen.set(this.sessions.size);
    this.logger?.debug({ session: req.sessionId, owner, fragments: req.program.cids.length }, 'session opened');
    return session;
  }

  /** The open session `sessionId` of `owner`; NOT_FOUND or SESSION_EVICTED otherwise. */
  get(owner: string, sessionId: string): ExecSession {
    const key = `${owner}/${sessionId}`;
    const s = this.sessions.get(key);
    if (s) {
      if (!s.busy && this.now() - s.lastUsed > this.ttlMs) this.evict(s, `idle for more than ${this.ttlMs} ms`, 'idle');
      else return s;
    }
    const why = this.tombstones.get(key);
    if (why !== undefined) throw new ExecError('SESSION_EVICTED', `session ${sessionId} was evicted: ${why}`);
    throw new ExecError('NOT_FOUND', `unknown session ${sessionId}`);
  }

  /** Closes a session and frees its memory (unknown ids are ignored). */
  close(owner: string, sessionId: string): void {
    const key = `${owner}/${sessionId}`;
    const s = this.sessions.get(key);
    this.tombstones.delete(key);
    if (!s) return;
    this.remove(s);
    s.state = 'closed';
    this.logger?.debug({ session: sessionId }, 'session closed');
  }

  /** Evicts sessions idle for longer than the TTL. */
  sweep(): void {
    const now = this.now();
    for (const s of [...this.sessions.values()]) {
      if (!s.busy && now - s.lastUsed > this.ttlMs) this.evict(s, `idle for more than ${this.ttlMs} ms`, 'idle');
    }
  }

  /** Closes every session and stops the sweep timer. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const s of [...this.sessions.values()]) { this.remove(s); s.state = 'closed'; }
  }

  private remove(s: ExecSession): void {
    this.totalBytes -= s.bytes;
    s.free();
    this.batcher?.forget(s);
    if (this.sessions.delete(s.key)) {
      const left = this.sessionsOf(s.owner) - 1;
      if (left > 0) this.perOwner.set(s.owner, left);
      else this.perOwner.delete(s.owner);
    }
    this.metrics?.sessionsOpen.set(this.sessions.size);
    this.metrics?.kvBytes.set(this.totalBytes);
  }

  private evict(s: ExecSession, why: string, reason: 'memory' | 'idle'): void {
    if (s.state !== 'open') return;
    const bytes = s.bytes;
    this.remove(s);
    s.state = 'evicted';
    s.evictedBecause = why;
    this.tombstones.set(s.key, why);
    if (this.tombstones.size > MAX_TOMBSTONES) this.tombstones.delete(this.tombstones.keys().next().value!);
    this.metrics?.evictions.inc({ reason });
    this.logger?.info({ session: s.id, bytes, reason }, `session evicted: ${why}`);
  }

  private account(s: ExecSession, kvBytes: number, replyBytes: number): void {
    this.totalBytes += kvBytes - s.kvBytes + replyBytes - s.replyBytes;
    s.kvBytes = kvBytes;
    s.replyBytes = replyBytes;
    this.metrics?.kvBytes.set(this.totalBytes);
  }

  /** Evicts least recently used sessions (idle ones first, `current` last) until under the cap. */
  private enforceMemory(current: ExecSession): void {
    if (this.totalBytes <= this.maxMemoryBytes) return;
    const order = [...this.sessions.values()].filter((s) => s !== current).sort((a, b) => (a.busy - b.busy) || (a.lastUsed - b.lastUsed));
    for (const s of order) {
      if (this.totalBytes <= this.maxMemoryBytes) return;
      this.evict(s, `memory cap of ${this.maxMemoryBytes} bytes reached`, 'memory');
    }
    if (this.totalBytes > this.maxMemoryBytes) this.evict(current, `it alone holds ${current.bytes} bytes, over the memory cap of ${this.maxMemoryBytes}`, 'memory');
  }

  /** Runs one step of a session (serialised per session). */
  step(session: ExecSession, req: StepRequestIn): Promise<StepOutcome> {
    const receivedAt = req.receivedAt ?? performance.now();
    session.lastUsed = this.now();
    // nothing in flight: start now rather than one promise turn later
    const result = session.busy++ === 0 ? this.runStep(session, req, receivedAt) : session.chain.then(() => this.runStep(session, req, receivedAt));
    session.chain = result.catch(() => undefined);
    return result.finally(() => {
      session.busy--;
      session.lastUsed = this.now();
    });
  }

  private async runStep(s: ExecSession, req: StepRequestIn, receivedAt: number): Promise<StepOutcome> {
    if (s.state === 'evicted') throw new ExecError('SESSION_EVICTED', `session ${s.id} was evicted: ${s.evictedBecause}`);
    if (s.state === 'closed') throw new ExecError('NOT_FOUND', `session ${s.id} is closed`);
    if (this.limits.paused) throw new ExecError('BUSY', 'the supplier has paused sharing');

    if (req.stepId !== 0n) {
      const cached = s.replies.get(req.stepId);
      if (cached) return { ...cached, cached: true, computeMs: 0, queueMs: performance.now() - receivedAt };
      if (req.stepId <= s.lastStepId) throw new ExecError('BAD_REQUEST', `step ${req.stepId} is not newer than step ${s.lastStepId} and its reply is no longer cached`);
    }

    const chunks: StepChunkIn[] = [...(req.replay ?? []), { position: req.position, inputs: req.inputs }];
    const hasKv = s.program.kv.length > 0;
    // Validate and convert everything before touching the cache: a bad request leaves the session as it was.
    const prepared = chunks.map((c, i) => {
      if (!Number.isSafeInteger(c.position) || c.position < 0) throw new ExecError('BAD_REQUEST', `position ${c.position} is invalid`);
      if (hasKv) {
        const limit = i === 0 ? s.length : Infinity; // later chunks start where the previous ones end (checked when run)
        if (c.position > limit) throw new ExecError('BAD_REQUEST', `position ${c.position} is ahead of the ${s.length} positions this session holds`);
        if (c.position >= s.maxLength) throw new ExecError('BAD_REQUEST', `position ${c.position} is at or beyond max_length ${s.maxLength}`);
      }
      const shape: PreparedShape = {};
      const feeds = s.program.prepare(c.inputs, s.kvDimsAt(hasKv ? c.position : 0), shape);
      // Refuse before running: a prefill past max_length (itself capped at the model's context) would take
      // the memory and the time of the whole run before the result was found too long.
      if (hasKv && shape.positionsAfter !== undefined && shape.positionsAfter > s.maxLength) {
        throw new ExecError('BAD_REQUEST', `chunk ${i} would hold ${shape.positionsAfter} positions, over max_length ${s.maxLength}`);
      }
      return feeds;
    });
    const want = req.want?.length ? req.want : undefined;
    if (want) for (const w of want) if (!s.program.returned.includes(w)) throw new ExecError('BAD_REQUEST', `output "${w}" is not returned by this span (it returns ${s.program.returned.join(', ')})`);

    let computeMs = 0;
    const results: { position: number; outputs: Map<string, ort.Tensor> }[] = [];
    for (let i = 0; i < chunks.length; i++) {
      const position = chunks[i].position;
      if (hasKv) {
        if (position > s.length) throw new ExecError('BAD_REQUEST', `chunk ${i} starts at position ${position} but the cache holds ${s.length}`);
        if (position < s.length) this.truncate(s, position);
      }
      // a single-chunk step may share one run with other sessions' steps on this span (results per row are the same)
      const batched = chunks.length === 1 && !s.solo && this.batcher?.accepts(s, prepared[i]);
      if (!batched && s.kvPadding) this.unpad(s);
      // a step that runs alone (a replay, several chunks) is a step all the same: nobody waits for this session's first one
      if (!batched) this.batcher?.forget(s);
      const r = batched ? await this.batcher!.run(s, prepared[i]) : await s.program.run(prepared[i], s.kv);
      const padding = r.kvPadding ?? 0;
      computeMs += r.computeMs;
      if (s.state !== 'open') throw new ExecError('SESSION_EVICTED', `session ${s.id} was evicted during the step: ${s.evictedBecause}`);
      if (hasKv) {
        let length = -1;
        let bytes = 0;
        for (const slot of s.program.kv) {
          const t = r.kv.get(slot.input);
          if (!t) throw new ExecError('EXECUTION_FAILED', `the fragment did not produce "${slot.output}"`);
          const n = t.dims[slot.seqAxis] - padding;
          if (length >= 0 && n !== length) throw new ExecError('EXECUTION_FAILED', `KV outputs disagree on the positions held (${n} vs ${length})`);
          length = n;
          bytes += tensorBytes(t);
        }
        if (length > s.maxLength) throw new ExecError('BAD_REQUEST', `the step would hold ${length} positions, over max_length ${s.maxLength}`);
        s.kv = r.kv;
        s.kvPadding = padding;
        s.length = length;
        this.account(s, bytes, s.replyBytes);
      }
      let outputs = r.outputs;
      if (want) outputs = new Map(want.filter((w) => outputs.has(w)).map((w) => [w, outputs.get(w)!]));
      for (const name of req.lastRowOnly ?? []) {
        const t = outputs.get(name);
        if (!t) continue;
        const row = lastRow(t, name);
        if (req.sample) {
          outputs.delete(name);
          outputs.set(`${name}.sampled`, sampledRows(row, req.sample, name));
        } else if (req.topK) {
          const top = topEntries(row, req.topK, name);
          outputs.delete(name);
          outputs.set(`${name}.top_values`, top.values);
          outputs.set(`${name}.top_indices`, top.indices);
        } else outputs.set(name, row);
      }
      results.push({ position, outputs });
    }

    const main = results.pop()!;
    const outcome: StepOutcome = {
      outputs: main.outputs,
      replayOutputs: results,
      computeMs,
      queueMs: Math.max(0, performance.now() - receivedAt - computeMs),
      cached: false,
    };
    if (req.stepId !== 0n) {
      s.lastStepId = req.stepId;
      s.replies.set(req.stepId, outcome);
      while (s.replies.size > this.replyCache) s.replies.delete(s.replies.keys().next().value!);
      let replyBytes = 0;
      for (const o of s.replies.values()) replyBytes += outcomeBytes(o);
      this.account(s, s.kvBytes, replyBytes);
    }
    s.lastUsed = this.now();
    this.enforceMemory(s);
    return outcome;
  }

  /** Drops the masked padding a batched run left in front of the session's KV cache (a copy). */
  private unpad(s: ExecSession): void {
    s.kv = withoutPadding(s.kv, s.program, s.kvPadding);
    s.kvPadding = 0;
  }

  private truncate(s: ExecSession, position: number): void {
    if (s.kvPadding) this.unpad(s);
    let bytes = 0;
    const next = new Map<string, ort.Tensor>();
    for (const slot of s.program.kv) {
      const t = truncateAxis(s.kv.get(slot.input)!, slot.seqAxis, position);
      next.set(slot.input, t);
      bytes += tensorBytes(t);
    }
    s.kv = next;
    s.length = position;
    this.account(s, bytes, s.replyBytes);
  }
}
