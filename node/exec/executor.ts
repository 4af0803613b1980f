/**
 * The executor: one onnxruntime InferenceSession per hosted fragment file, on the best execution provider
 * that loads, with runs queued one at a time per fragment.
 *
 * onnxruntime-node's `run()` executes synchronously on the JavaScript thread (it is only deferred with
 * `setImmediate`), so by default each fragment's session lives in its own worker thread (ort-worker.ts) and
 * a long run no longer freezes the node's event loop; `offThread: false` keeps it on the main thread. Runs
 * measured short in the worker (a small span's decode steps) move to a second session of the fragment on the
 * main thread, where they skip the hand-off (run-placement.ts, `inlineBelowMs`; CPU only, and only fragments
 * that load fast: onnxruntime-node loads a session synchronously, so the twin's load blocks the loop). A FIFO
 * per fragment makes the wait explicit and measurable (queue time) and keeps one fragment's steps in arrival
 * order. Parallelism inside a run comes from onnxruntime's intra-op threads (`ShareLimits.threads`).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { dataTypeFromOrt } from '../../fragments/onnx/dtype.js';
import { ExecError } from '../../net/exec/errors.js';
import { WorkerSession } from './ort-worker.js';
import { RunPlacement } from './run-placement.js';
import { runFailure } from './run-failure.js';
import { faultyFragmentFile, testFault } from './test-fault.js';

/** GRIDPIPE_TEST_FAULT=int8: a cheating supplier for tests (test-fault.ts); unset in every real deployment. */
const TEST_FAULT = testFault();

export type ExecutionProviderName = 'cpu' | 'cuda' | 'webgpu';
/** `auto`: CUDA when its provider library is installed, then WebGPU when bundled, then CPU. */
export type ProviderChoice = 'auto' | ExecutionProviderName;

export interface ExecutorOptions {
  /** Which execution provider to try first (default 'auto'); whatever fails falls back to CPU, logged. */
  provider?: ProviderChoice;
  /** onnxruntime intra-op threads (ShareLimits.threads). */
  threads?: number;
  /** Let onnxruntime's worker threads spin between the ops of a run (they stop when it returns); default false. */
  allowSpinning?: boolean;
  /**
   * Run each fragment's session in its own worker thread (ort-worker.ts) so a long run does not block the
   * event loop (default true).
   */
  offThread?: boolean;
  /**
   * With `offThread`, runs of a work class measured below this many ms in the worker go to the main thread
   * instead (run-placement.ts; default 20, 0: never). Costs a second copy of the fragment's weights, so only
   * CPU fragments up to `inlineTwinMaxBytes` qualify.
   */
  inlineBelowMs?: number;
  /** Largest fragment file that may get a main-thread twin session (default 512 MiB). */
  inlineTwinMaxBytes?: number;
  /**
   * Longest load (in the worker) of a fragment that may get a main-thread twin (default 250 ms): onnxruntime-node
   * loads a session synchronously, so the twin's load blocks the event loop about as long. Measured on 2 busy
   * cores, GPT-2-small's fragments (170–280 MB) took 0.8–8.5 s to load: they keep every run in the worker.
   */
  inlineTwinMaxLoadMs?: number;
  logger?: Logger;
}

/** Runs shorter than this may leave the worker for the main thread (ExecutorOptions.inlineBelowMs). */
export const DEFAULT_INLINE_BELOW_MS = 20;
const DEFAULT_INLINE_TWIN_MAX_BYTES = 512 * 1024 * 1024;
const DEFAULT_INLINE_TWIN_MAX_LOAD_MS = 250;

/** A model input or output: name, ONNX dtype code, onnxruntime type and shape (numbers or symbols). */
export interface IoSpec {
  name: string;
  dtype: number;
  type: ort.Tensor.Type;
  shape: readonly (number | string)[];
}

export interface RunResult {
  outputs: Record<string, ort.Tensor>;
  /** Time waiting for earlier runs of this fragment. */
  queueMs: number;
  /** Time inside onnxruntime. */
  computeMs: number;
  /** Whether it ran on the main thread. */
  inline?: boolean;
}

/** Whether the CUDA provider library sits beside onnxruntime-node's binding (ONNXRUNTIME_NODE_INSTALL=cuda12). */
export function cudaProviderInstalled(): boolean {
  try {
    const pkg = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    const dir = path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
    return readdirSync(dir).some((f) => /providers_cuda/.test(f));
  } catch {
    return false;
  }
}

/** Whether a GPU a WebGPU adapter could use seems present (Linux: a DRM render node or an NVIDIA device). */
export function gpuDevicePresent(): boolean {
  if (process.platform !== 'linux') return true;
  try {
    return readdirSync('/dev/dri').some((f) => f.startsWith('renderD')) || existsSync('/dev/nvidia0');
  } catch {
    return existsSync('/dev/nvidia0');
  }
}

/**
 * Execution providers to try, best first, for a choice: an explicit provider, then CPU; for `auto`, CUDA when
 * its provider library is installed (it is never bundled in the npm package), WebGPU when bundled and a GPU
 * device is present (on a machine without one it only fails, noisily), then CPU.
 */
export function providerCandidates(choice: ProviderChoice): ExecutionProviderName[] {
  if (choice === 'cpu') return ['cpu'];
  if (choice !== 'auto') return [choice, 'cpu'];
  const bundled = new Map(ort.listSupportedBackends().map((b) => [b.name, b.bundled]));
  const out: ExecutionProviderName[] = [];
  if (bundled.has('cuda') && cudaProviderInstalled()) out.push('cuda');
  if (bundled.get('webgpu') && gpuDevicePresent()) out.push('webgpu');
  out.push('cpu');
  return out;
}

function specsOf(metadata: readonly ort.InferenceSession.ValueMetadata[], file: string): IoSpec[] {
  return metadata.map((m) => {
    if (!m.isTensor) throw new ExecError('EXECUTION_FAILED', `${file}: "${m.name}" is not a tensor; only tensor inputs and outputs can travel`);
    return { name: m.name, dtype: dataTypeFromOrt(m.type), type: m.type, shape: m.shape };
  });
}

/** What the executor needs of a session: onnxruntime's own, or one in a worker thread. */
type RunnableSession = Pick<ort.InferenceSession, 'inputMetadata' | 'outputMetadata' | 'release'> & {
  run(feeds: Record<string, ort.Tensor>, fetches?: string[]): Promise<Record<string, ort.Tensor>>;
  /** A worker session's run, with onnxruntime's time as the worker measured it. */
  runTimed?(feeds: Record<string, ort.Tensor>, fetches?: string[]): Promise<{ outputs: Record<string, ort.Tensor>; runMs: number }>;
  /** A worker session whose thread stopped. */
  readonly dead?: boolean;
};

/** onnxruntime's own session as a RunnableSession (runs on the calling thread). */
function onThread(s: ort.InferenceSession): RunnableSession {
  return {
    inputMetadata: s.inputMetadata,
    outputMetadata: s.outputMetadata,
    release: () => s.release(),
    run: async (feeds, fetches) => (fetches ? await s.run(feeds, fetches) : await s.run(feeds)) as Record<string, ort.Tensor>,
  };
}

/** One loaded fragment. */
export class FragmentExecutor {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;
  private closed = false;
  /** The main-thread session short runs move to (loaded once some work class qualifies). */
  private twin?: RunnableSession;
  private twinLoading = false;
  /** Runs that went to the main thread, and all runs. */
  private counts = { inline: 0, total: 0 };

  private constructor(
    readonly file: string,
    readonly provider: ExecutionProviderName,
    private readonly session: RunnableSession,
    /** Whether runs happen in a worker thread (short ones may still move to the main thread: `placement`). */
    readonly offThread: boolean,
    readonly inputs: readonly IoSpec[],
    readonly outputs: readonly IoSpec[],
    /** Where each run goes, for a worker session that may get a main-thread twin. */
    private readonly placement?: RunPlacement,
    private readonly twinOptions?: ort.InferenceSession.SessionOptions,
    private readonly logger?: Logger,
  ) {}

  /** Loads a fragment file on the first provider of `options.provider` that works, falling back to CPU. */
  static async load(file: string, options: ExecutorOptions = {}): Promise<FragmentExecutor> {
    const candidates = providerCandidates(options.provider ?? 'auto');
    const failures: string[] = [];
    for (const provider of candidates) {
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        executionMode: 'sequential',
        interOpNumThreads: 1,
        // Spinning (when allowed) lasts only while a run is in progress: force_spinning_stop parks the workers as a
        // run returns, so they do not burn the cores the network stack and the other fragments need between steps.
        extra: { session: { intra_op: { allow_spinning: options.allowSpinning ? '1' : '0' }, ...(options.allowSpinning ? { force_spinning_stop: '1' } : {}) } },
      };
      if (options.threads) sessionOptions.intraOpNumThreads = options.threads;
      try {
        const offThread = options.offThread ?? true;
        const session: RunnableSession = offThread ? await WorkerSession.create(file, sessionOptions) : onThread(await ort.InferenceSession.create(file, sessionOptions));
        if (failures.length) {
          options.logger?.warn({ file, provider, failed: failures }, `execution provider ${candidates[0]} did not load (${failures.join('; ')}); running on ${provider}`);
        } else if (provider === 'cpu' && (options.provider ?? 'auto') === 'auto') {
          options.logger?.info({ file, provider }, 'running on cpu: no CUDA provider library installed and no GPU device found');
        } else {
          options.logger?.info({ file, provider }, `fragment loaded on ${provider}`);
        }
        // onnxruntime's own load time in the worker: a main-thread twin's load blocks the event loop about as long
        const loadMs = session instanceof WorkerSession ? session.loadMs : Infinity;
        const inlineBelowMs = options.inlineBelowMs ?? DEFAULT_INLINE_BELOW_MS;
        const twinAllowed = offThread && provider === 'cpu' && inlineBelowMs > 0
          && fileBytes(file) <= (options.inlineTwinMaxBytes ?? DEFAULT_INLINE_TWIN_MAX_BYTES)
          && loadMs <= (options.inlineTwinMaxLoadMs ?? DEFAULT_INLINE_TWIN_MAX_LOAD_MS);
        const placement = twinAllowed ? new RunPlacement(inlineBelowMs) : undefined;
        return new FragmentExecutor(file, provider, session, offThread, specsOf(session.inputMetadata, file), specsOf(session.outputMetadata, file), placement, sessionOptions, options.logger);
      } catch (err) {
        const message = (err as Error).message.split('\n')[0];
        failures.push(`${provider}: ${message}`);
        if (provider === 'cpu') throw new ExecError('EXECUTION_FAILED', `${file}: onnxruntime cannot load it: ${message}`, { cause: err });
      }
    }
    throw new ExecError('EXECUTION_FAILED', `${file}: no execution provider loaded it (${failures.join('; ')})`);
  }

  /** Whether the session's worker thread stopped (every run fails; ExecutorPool loads the fragment again). */
  get broken(): boolean {
    return this.session.dead === true;
  }

  /** Runs waiting or in progress. */
  get queued(): number {
    return this.pending;
  }

  /** Runs that went to the main thread out of all runs (a worker session's short runs: run-placement.ts). */
  get inlineRuns(): { inline: number; total: number } {
    return { ...this.counts };
  }

  /**
   * Runs the fragment once `feeds` are complete; `fetches` limits the outputs (default: all). `work` (the
   * elements of the feeds that are not KV cache: runWork) lets a run measured short go to the main thread.
   */
  run(feeds: Record<string, ort.Tensor>, fetches?: readonly string[], work?: number): Promise<RunResult> {
    if (this.closed) return Promise.reject(new ExecError('INTERNAL', `${this.file}: executor closed`));
    const enqueued = performance.now();
    const go = async (): Promise<RunResult> => {
      const start = performance.now();
      const wanted = fetches && fetches.length ? [...fetches] : undefined;
      try {
        const twin = this.twin && this.placement?.inline(work) ? this.twin : undefined;
        let outputs: Record<string, ort.Tensor>;
        if (twin) {
          outputs = wanted ? await twin.run(feeds, wanted) : await twin.run(feeds);
          this.placement!.record(work, performance.now() - start);
        } else if (this.placement && this.session.runTimed) {
          const r = await this.session.runTimed(feeds, wanted);
          outputs = r.outputs;
          this.placement.record(work, r.runMs);
          if (this.placement.wantsInline) this.loadTwin();
        } else {
          outputs = wanted ? await this.session.run(feeds, wanted) : await this.session.run(feeds);
        }
        this.counts.total++;
        if (twin || !this.offThread) this.counts.inline++;
        return { outputs, queueMs: start - enqueued, computeMs: performance.now() - start, inline: twin !== undefined || !this.offThread };
      } catch (err) {
        throw runFailure(err);
      } finally {
        this.pending--;
      }
    };
    // nothing queued: start now rather than one promise turn later
    const result = this.pending++ === 0 ? go() : this.tail.then(go);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Loads the main-thread twin in the background; until it is there, runs stay in the worker. */
  private loadTwin(): void {
    if (this.twin || this.twinLoading || this.closed) return;
    this.twinLoading = true;
    ort.InferenceSession.create(this.file, this.twinOptions).then(async (s) => {
      if (this.closed) return s.release();
      this.twin = onThread(s);
      this.logger?.info({ file: this.file }, 'short runs of this fragment move to the main thread');
    }, (err: Error) => {
      // stay in the worker for good
      this.logger?.warn({ file: this.file, err: err.message }, 'could not load a main-thread session for short runs; all runs stay in the worker');
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.session.release();
    await this.twin?.release();
  }
}

/** A file's size in bytes (Infinity when it cannot be read). */
function fileBytes(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return Infinity;
  }
}

/** Resolves a fragment (or manifest) CID to a local file path, or undefined when it is not hosted here. */
export type FragmentResolver = (cid: string) => string | undefined | Promise<string | undefined>;

/** Executors by CID, loaded on first use (concurrent loads of one CID share one load). */
export class ExecutorPool {
  private readonly loaded = new Map<string, Promise<FragmentExecutor>>();
  /** Executors whose load finished, to notice a broken one without awaiting. */
  private readonly ready = new Map<string, FragmentExecutor>();

  constructor(private readonly resolve: FragmentResolver, private readonly options: ExecutorOptions = {}) {}

  /** The executor of a hosted fragment; ExecError NOT_FOUND when the CID is not hosted here. */
  async get(cid: string): Promise<FragmentExecutor> {
    const current = this.ready.get(cid);
    if (current?.broken) {
      // its worker thread died (a crash inside onnxruntime): new sessions get a fresh one
      this.options.logger?.warn({ cid, file: current.file }, 'onnxruntime worker of a fragment stopped; loading the fragment again');
      this.ready.delete(cid);
      this.loaded.delete(cid);
      void current.close().catch(() => undefined);
    }
    let p = this.loaded.get(cid);
    if (!p) {
      p = (async () => {
        const file = await this.resolve(cid);
        if (!file) throw new ExecError('NOT_FOUND', `fragment ${cid} is not hosted on this node`);
        const executor = await FragmentExecutor.load(await faultyFragmentFile(TEST_FAULT, file), this.options);
        if (this.loaded.get(cid) === p) this.ready.set(cid, executor);
        return executor;
      })();
      this.loaded.set(cid, p);
      p.catch(() => this.loaded.delete(cid));
    }
    return p;
  }

  /** Whether the fragment's onnxruntime session has finished loading (and is not broken). */
  isLoaded(cid: string): boolean {
    const e = this.ready.get(cid);
    return e !== undefined && !e.broken;
  }

  /** Unloads a fragment (e.g. when the store drops it). */
  async unload(cid: string): Promise<void> {
    const p = this.loaded.get(cid);
    this.loaded.delete(cid);
    this.ready.delete(cid);
    if (p) await p.then((e) => e.close(), () => undefined);
  }

  async close(): Promise<void> {
    const all = [...this.loaded.values()];
    this.loaded.clear();
    this.ready.clear();
    await Promise.all(all.map((p) => p.then((e) => e.close(), () => undefined)));
  }
}
