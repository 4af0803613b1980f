/**
 * Runs a model's own chat template (untrusted Jinja from tokenizer_config.json) off the event loop, within a
 * budget. @huggingface/jinja renders synchronously and has no step limit: `{% for i in range(3e6) %}` froze
 * the gateway for 41 s and took 463 MB. Here one persistent worker thread renders, with a V8 heap cap
 * (resourceLimits) and a wall-clock timeout; a template that goes over either is stopped (the worker is
 * terminated and a fresh one started for the next render) and the caller gets a TemplateBudgetError that
 * names the budget. Renders queue behind each other (one worker), so a bomb delays others by at most the
 * timeout, and the queue is bounded.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { GridpipeError } from '../../errors/base.js';

export interface TemplateBudget {
  /** Wall-clock time one render may take (default 1000 ms). */
  timeoutMs: number;
  /** V8 old-generation heap of the rendering thread, in MB (default 64). */
  maxHeapMb: number;
  /** Longest rendered prompt, in characters (default 4 Mi). */
  maxOutputChars: number;
  /** Renders waiting at most (default 256); more get a TemplateBudgetError (busy). */
  maxQueued: number;
}

export const DEFAULT_TEMPLATE_BUDGET: TemplateBudget = { timeoutMs: 1000, maxHeapMb: 64, maxOutputChars: 4 << 20, maxQueued: 256 };

/** A template stopped for going over its budget (time, memory, output size) or refused because the queue is full. */
export class TemplateBudgetError extends GridpipeError<'CHAT_TEMPLATE_BUDGET'> {
  override name = 'TemplateBudgetError';
  constructor(message: string, readonly limit: 'time' | 'memory' | 'output' | 'busy') { super('CHAT_TEMPLATE_BUDGET', message); }
}

/** The template itself failed (syntax error, raise_exception, a bad filter): its own message. */
export class TemplateRenderError extends GridpipeError<'CHAT_TEMPLATE_ERROR'> {
  override name = 'TemplateRenderError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CHAT_TEMPLATE_ERROR', message, options);
  }
}

// The worker's code: CommonJS (eval), so it runs the same from the TypeScript sources (tests) and from dist/.
// Compiled templates are cached per source (a few models, a few templates).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Template } = require(workerData.jinja);
const compiled = new Map();
parentPort.on('message', (job) => {
  try {
    let t = compiled.get(job.source);
    if (!t) {
      t = new Template(job.source);
      if (compiled.size >= 32) compiled.delete(compiled.keys().next().value);
      compiled.set(job.source, t);
    }
    const out = t.render(job.context);
    if (typeof out !== 'string') throw new Error('the template did not render to text');
    if (out.length > workerData.maxOutputChars) parentPort.postMessage({ id: job.id, tooLong: out.length });
    else parentPort.postMessage({ id: job.id, out });
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err).slice(0, 300) });
  }
});`;

interface Job { id: number; source: string; context: Record<string, unknown>; resolve: (s: string) => void; reject: (e: Error) => void }
type Reply = { id: number; out?: string; error?: string; tooLong?: number };

/** One worker thread rendering templates one at a time, replaced whenever a render goes over its budget. */
export class TemplateSandbox {
  readonly budget: TemplateBudget;
  private worker?: Worker;
  private readonly queue: Job[] = [];
  private current?: { job: Job; timer: NodeJS.Timeout };
  private nextId = 1;
  private readonly jinjaPath = createRequire(import.meta.url).resolve('@huggingface/jinja');

  constructor(budget: Partial<TemplateBudget> = {}) {
    this.budget = { ...DEFAULT_TEMPLATE_BUDGET, ...budget };
  }

  /** Renders `source` with `context` (plain JSON data) in the worker, within the budget. */
  render(source: string, context: Record<string, unknown>): Promise<string> {
    if (this.queue.length >= this.budget.maxQueued) {
      return Promise.reject(new TemplateBudgetError(`chat template renderer busy: ${this.queue.length} renders already waiting`, 'busy'));
    }
    return new Promise<string>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, source, context, resolve, reject });
      this.pump();
    });
  }

  /** Stops the worker (pending renders fail). */
  async close(): Promise<void> {
    const pending = [...this.queue, ...(this.current ? [this.current.job] : [])];
    this.queue.length = 0;
    if (this.current) clearTimeout(this.current.timer);
    this.current = undefined;
    for (const job of pending) job.reject(new TemplateRenderError('the chat template renderer was closed'));
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }

  private spawn(): Worker {
    const w = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { jinja: this.jinjaPath, maxOutputChars: this.budget.maxOutputChars },
      resourceLimits: { maxOldGenerationSizeMb: this.budget.maxHeapMb, maxYoungGenerationSizeMb: Math.max(4, Math.ceil(this.budget.maxHeapMb / 4)), stackSizeMb: 4 },
    });
    w.on('message', (reply: Reply) => this.settle(reply));
    // A heap over its cap (ERR_WORKER_OUT_OF_MEMORY) or any other death: fail the render under way, start afresh.
    w.on('error', (err: Error & { code?: string }) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      const memory = err.code === 'ERR_WORKER_OUT_OF_MEMORY';
      this.fail(memory
        ? new TemplateBudgetError(`chat template went over its memory budget (${this.budget.maxHeapMb} MB heap) and was stopped`, 'memory')
        : new TemplateRenderError(`chat template renderer failed: ${err.message}`));
    });
    w.on('exit', () => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.fail(new TemplateRenderError('chat template renderer exited'));
    });
    // After the listeners (adding a 'message' listener refs the worker again): an idle renderer never keeps the process alive.
    w.unref();
    return w;
  }

  private pump(): void {
    if (this.current || this.queue.length === 0) return;
    const job = this.queue.shift()!;
    this.worker ??= this.spawn();
    const timer = setTimeout(() => {
      // Over time: the only way to stop synchronous JS is to end its thread.
      const w = this.worker;
      this.worker = undefined;
      void w?.terminate();
      this.fail(new TemplateBudgetError(`chat template went over its time budget (${this.budget.timeoutMs} ms) and was stopped`, 'time'));
    }, this.budget.timeoutMs);
    timer.unref();
    this.current = { job, timer };
    // Held while it renders (someone awaits the result); let go when idle.
    this.worker.ref();
    this.worker.postMessage({ id: job.id, source: job.source, context: job.context });
  }

  private settle(reply: Reply): void {
    const cur = this.current;
    if (!cur || cur.job.id !== reply.id) return;
    clearTimeout(cur.timer);
    this.current = undefined;
    if (this.queue.length === 0) this.worker?.unref();
    if (reply.out !== undefined) cur.job.resolve(reply.out);
    else if (reply.tooLong !== undefined) cur.job.reject(new TemplateBudgetError(`chat template rendered ${reply.tooLong} characters, over its budget of ${this.budget.maxOutputChars}`, 'output'));
    else cur.job.reject(new TemplateRenderError(`chat template failed: ${reply.error ?? 'unknown error'}`));
    this.pump();
  }

  private fail(err: Error): void {
    const cur = this.current;
    if (!cur) return;
    clearTimeout(cur.timer);
    this.current = undefined;
    cur.job.reject(err);
    this.pump();
  }
}

let shared: TemplateSandbox | undefined;

/** The process's sandbox (one rendering thread for every model), made on first use. */
export function sharedTemplateSandbox(): TemplateSandbox {
  shared ??= new TemplateSandbox();
  return shared;
}

/** Stops the shared sandbox's thread (the gateway's close); a later render starts a new one. */
export async function closeSharedTemplateSandbox(): Promise<void> {
  await shared?.close();
}
