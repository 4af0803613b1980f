/** Prometheus metrics of the fragment store and the blob protocol (prom-client). */
import { Counter, Registry } from 'prom-client';

export interface StoreMetrics {
  readonly registry: Registry;
  /** Blob bytes this node sent to peers. */
  bytesServed: Counter;
  /** Blob bytes this node received from peers (all attempts, including bytes later discarded). */
  bytesFetched: Counter;
  /** Providers dropped for serving bytes that do not match the CID or breaking the protocol. */
  badProviders: Counter;
  /** Blob requests served, by result: ok, not_found, bad_request, busy, aborted, error. */
  requests: Counter<'result'>;
  /** Local blobs found corrupt (bytes no longer match the CID) and removed. */
  corruptBlobs: Counter;
}

function counter<L extends string = string>(registry: Registry, name: string, help: string, labelNames: L[] = []): Counter<L> {
  // Several stores (e.g. many nodes in one test process) may share a registry: reuse the metric.
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: [registry] });
}

/** The store's metrics in `registry` (a new Registry when none is given). */
export function createStoreMetrics(registry: Registry = new Registry()): StoreMetrics {
  return {
    registry,
    bytesServed: counter(registry, 'gridpipe_blob_served_bytes_total', 'Blob bytes sent to peers'),
    bytesFetched: counter(registry, 'gridpipe_blob_fetched_bytes_total', 'Blob bytes received from peers'),
    badProviders: counter(registry, 'gridpipe_blob_bad_provider_total', 'Providers dropped for serving bytes that do not match the CID'),
    requests: counter(registry, 'gridpipe_blob_requests_total', 'Blob requests served, by result', ['result']),
    corruptBlobs: counter(registry, 'gridpipe_store_corrupt_blobs_total', 'Local blobs whose bytes no longer matched their CID (removed)'),
  };
}

/** The current value of an unlabelled counter (or the sum over its labels). */
export async function counterValue(c: Counter): Promise<number> {
  const { values } = await c.get();
  return values.reduce((s, v) => s + v.value, 0);
}
