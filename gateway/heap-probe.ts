/**
 * Heap used after a full collection, as a gauge (`gridpipe_heap_after_gc_bytes`), only when node runs with
 * `--expose-gc` (e.g. `NODE_OPTIONS=--expose-gc`): RSS alone cannot tell a leak from the allocator keeping pages
 * it once needed, the live heap after a collection can. The fuzz test reads it before and after tens of
 * thousands of hostile requests (issue 21); without the flag nothing is registered and no scrape ever runs a GC.
 */
import { Gauge, type Registry } from 'prom-client';

/** Registers the gauge in `registry` when `gc` is exposed; whether it did. */
export function registerHeapAfterGc(registry: Registry): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function' || registry.getSingleMetric('gridpipe_heap_after_gc_bytes')) return false;
  new Gauge({
    name: 'gridpipe_heap_after_gc_bytes',
    help: 'V8 heap used right after two full collections (present only when node runs with --expose-gc).',
    registers: [registry],
    collect() {
      gc();
      gc();
      this.set(process.memoryUsage().heapUsed);
    },
  });
  return true;
}
