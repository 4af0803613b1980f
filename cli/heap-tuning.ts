/**
 * V8 heap tuning for the long-running serving commands (`supply`, `gateway`).
 *
 * Why: a server moves megabytes of tensors per step through ArrayBuffers (KV caches to and from the onnxruntime
 * worker, batches stacked and split). After a spell of idling, V8 lets the heap grow again only slowly (its growing
 * factor follows the low allocation rate it measured while idle), so the next busy spell runs an incremental
 * mark-compact every ~150 ms. Measured on the pipeline bench's grid (3 suppliers, 8 sessions batched, after 30 s
 * idle): 14–21 full GCs per 3-s round instead of none, about 2× the CPU per token, 56–64 tok/s instead of 80–90.
 * A fixed growing factor of 3 (`--heap-growing-percent=200`) keeps a busy spell after idle as fast as the first
 * (1 full GC per round, 80–85 tok/s), for a heap that may grow to 3× its live size before a full GC (a supplier's
 * JS heap is ~30 MB live).
 */
import v8 from 'node:v8';
import { UsageError } from './errors.js';

/** The heap growing percent set unless GRIDPIPE_HEAP_GROWING_PERCENT says otherwise (0: V8's own heuristics). */
export const DEFAULT_HEAP_GROWING_PERCENT = 200;

/** Sets V8's heap growing factor for this process (and its worker threads) from GRIDPIPE_HEAP_GROWING_PERCENT or the default. */
export function tuneHeapForServing(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.GRIDPIPE_HEAP_GROWING_PERCENT?.trim();
  const percent = raw === undefined || raw === '' ? DEFAULT_HEAP_GROWING_PERCENT : Number(raw);
  if (!Number.isInteger(percent) || percent < 0 || percent > 1000) {
    throw new UsageError(`GRIDPIPE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 (0: V8's own heap sizing), not "${raw}"`);
  }
  // The flag is read each time V8 sizes the heap after a full GC, so setting it at run time takes effect.
  if (percent > 0) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  return percent;
}
