/**
 * Capacity metrics of one node, in that node's own prom-client Registry (never the global default, so
 * several nodes in one process keep their numbers apart).
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { CapacityRecordRejection } from './record.js';

export type PublishFailureReason = 'no-peers' | 'too-few-peers' | 'error' | 'timeout' | 'invalid-record';

export class CapacityMetrics {
  readonly published: Counter;
  readonly publishFailures: Counter<'reason'>;
  readonly rejected: Counter<'reason'>;
  readonly storedBy: Gauge;

  constructor(readonly registry: Registry) {
    this.published = new Counter({
      name: 'gridpipe_capacity_records_published_total',
      help: 'Capacity records (and tombstones) this node published that at least the required number of DHT peers stored',
      registers: [registry],
    });
    this.publishFailures = new Counter({
      name: 'gridpipe_capacity_publish_failures_total',
      help: 'Capacity record publications that too few DHT peers stored, by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
    this.rejected = new Counter({
      name: 'gridpipe_capacity_records_rejected_total',
      help: 'Capacity records this node\'s DHT validator or readers rejected, by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
    this.storedBy = new Gauge({
      name: 'gridpipe_capacity_record_stored_by_peers',
      help: 'How many DHT peers accepted this node\'s last capacity record',
      registers: [registry],
    });
  }

  recordRejected(reason: CapacityRecordRejection | 'UNKNOWN'): void {
    this.rejected.inc({ reason });
  }

  publishFailed(reason: PublishFailureReason): void {
    this.publishFailures.inc({ reason });
  }
}
