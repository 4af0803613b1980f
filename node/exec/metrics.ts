/** Prometheus metrics of the exec protocol, registered on the Registry the node passes in. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class ExecMetrics {
  readonly steps: Counter<'outcome'>;
  readonly stepSeconds: Histogram;
  readonly queueSeconds: Histogram;
  readonly sessionsOpen: Gauge;
  readonly kvBytes: Gauge;
  readonly evictions: Counter<'reason'>;
  readonly errors: Counter<'code'>;
  readonly unreadBytes: Gauge;
  readonly batchRows: Histogram;
  readonly batchWaitSeconds: Histogram;
  readonly batchCopySeconds: Counter;
  private readUnread: () => number = () => 0;

  constructor(registry: Registry = new Registry()) {
    const registers = [registry];
    this.steps = new Counter({ name: 'gridpipe_exec_steps_total', help: 'Exec steps answered, by outcome (ok, error, cached).', labelNames: ['outcome'], registers });
    this.stepSeconds = new Histogram({
      name: 'gridpipe_exec_step_seconds',
      help: 'Time from a step frame arriving to its reply being handed to the stream.',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.queueSeconds = new Histogram({
      name: 'gridpipe_exec_queue_seconds',
      help: 'Time a step waited for its session and fragments before computing.',
      buckets: [0.0001, 0.001, 0.01, 0.1, 1, 10],
      registers,
    });
    this.sessionsOpen = new Gauge({ name: 'gridpipe_exec_sessions_open', help: 'Exec sessions open (holding KV cache).', registers });
    this.kvBytes = new Gauge({ name: 'gridpipe_exec_kv_bytes', help: 'Bytes of KV cache and cached replies held by all sessions.', registers });
    this.evictions = new Counter({ name: 'gridpipe_exec_evictions_total', help: 'Sessions evicted, by reason (memory, idle).', labelNames: ['reason'], registers });
    this.errors = new Counter({ name: 'gridpipe_exec_errors_total', help: 'Error replies sent, by code.', labelNames: ['code'], registers });
    this.batchRows = new Histogram({
      name: 'gridpipe_exec_batch_rows',
      help: 'Sessions\' steps per onnxruntime run of a batchable span (1: the step ran alone).',
      buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
      registers,
    });
    this.batchWaitSeconds = new Histogram({
      name: 'gridpipe_exec_batch_wait_seconds',
      help: 'Time a step waited in the batcher (for the running batch of its span or for other sessions) before its run started.',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.05, 0.1],
      registers,
    });
    this.batchCopySeconds = new Counter({ name: 'gridpipe_exec_batch_copy_seconds_total', help: 'Time stacking KV caches and inputs into batches and splitting the outputs back.', registers });
    const read = (): number => this.readUnread();
    this.unreadBytes = new Gauge({
      name: 'gridpipe_exec_unread_bytes',
      help: 'Bytes received on exec streams and not yet taken (partial and queued frames), all peers together.',
      registers,
      collect() { this.set(read()); },
    });
  }

  /** Where gridpipe_exec_unread_bytes reads its value when scraped. */
  watchUnread(read: () => number): void {
    this.readUnread = read;
  }
}
