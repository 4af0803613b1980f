/**
 * Where a fragment's next run goes: its onnxruntime worker thread, or the node's own thread.
 *
 * Why: a run in the worker (ort-worker.ts) pays a hand-off both ways (postMessage, a structured clone of the
 * small feeds, waking the worker thread and then the main one). For a decode step of a small span that costs
 * as much as the run: measured on 2 shared cores, a 3-fragment chain of a tiny model spent 23 ms p50 per token
 * in its servers with workers and 4.3 ms with runs on the main thread. On the main thread, though, a run
 * blocks the event loop for its whole length (a 10 s prefill froze a node: issue 13), so only runs measured
 * short go there. Runs are told apart by their work (the elements of the feeds that are not KV cache: a decode
 * step's few against a prefill's many), in power-of-two classes; a class runs in the worker until it has been
 * measured there (the worker's own time, without the hand-off) below the threshold a few times, and goes back
 * to the worker when its runs grow past one and a half thresholds (a cache that got long, a busier machine).
 */

/** Runs of one work class: their time (EWMA) and where they go. */
interface WorkClass {
  ms: number;
  samples: number;
  inline: boolean;
}

/** Weight of the newest run in a class's average. */
const EWMA_NEW = 0.25;
/** An inline class returns to the worker when its average exceeds the threshold by this factor. */
const LEAVE_FACTOR = 1.5;

/** The per-fragment rule that places each run on the main thread or in the worker. */
export class RunPlacement {
  private readonly classes = new Map<number, WorkClass>();

  /**
   * @param inlineBelowMs runs of a class measured below this go to the main thread (0: never)
   * @param minSamples measurements of a class before it may move (default 3)
   */
  constructor(readonly inlineBelowMs: number, private readonly minSamples = 3) {}

  /** The power-of-two class of a run's work (its non-KV feed elements). */
  static classOf(work: number): number {
    return work > 1 ? Math.ceil(Math.log2(work)) : 0;
  }

  /** Whether a run of `work` goes to the main thread; unknown work always goes to the worker. */
  inline(work: number | undefined): boolean {
    if (work === undefined || this.inlineBelowMs <= 0) return false;
    return this.classes.get(RunPlacement.classOf(work))?.inline ?? false;
  }

  /** Whether some class runs inline (so a main-thread session is worth loading). */
  get wantsInline(): boolean {
    for (const c of this.classes.values()) if (c.inline) return true;
    return false;
  }

  /** Records a run's onnxruntime time (in a worker: measured there, without the hand-off). */
  record(work: number | undefined, ms: number): void {
    if (work === undefined || this.inlineBelowMs <= 0 || !Number.isFinite(ms)) return;
    const key = RunPlacement.classOf(work);
    const c = this.classes.get(key);
    if (!c) {
      this.classes.set(key, { ms, samples: 1, inline: this.minSamples <= 1 && ms < this.inlineBelowMs });
      return;
    }
    c.ms = c.ms + EWMA_NEW * (ms - c.ms);
    c.samples++;
    if (c.inline) c.inline = c.ms <= LEAVE_FACTOR * this.inlineBelowMs;
    else c.inline = c.samples >= this.minSamples && c.ms < this.inlineBelowMs;
  }
}
