/** What the gateway's routes share: the grid client, the model catalog, keys, the feed, metrics, payments. */
import type { Logger } from 'pino';
import type { GridClient } from '../scheduler/client.js';
import type { StepPayer } from '../scheduler/payment.js';
import type { PriceLimits } from '../policy/price-limits.js';
import type { ModelCatalog } from './catalog.js';
import type { EventFeed } from './feed.js';
import type { ApiKey, KeyRing } from './keys.js';
import type { GatewayMetrics } from './metrics.js';
import type { Verifier } from './verify/verifier.js';

export interface GatewayContext {
  client: GridClient;
  catalog: ModelCatalog;
  keys: KeyRing;
  feed: EventFeed;
  metrics: GatewayMetrics;
  logger: Logger;
  /** The payer a key's sessions pay suppliers through (payments on), or undefined (price from adverts). */
  payerFor?: (key: ApiKey) => StepPayer | undefined;
  /** Prices the gateway accepts from suppliers (default policy/price-limits' DEFAULT_PRICE_LIMITS). */
  priceLimits?: PriceLimits;
  /** Bearer token for /metrics from other hosts (absent: loopback clients only). */
  metricsToken?: string;
  /** Re-runs a share of the suppliers' work on other hosts and excludes those that lie (gateway/verify/). */
  verifier?: Verifier;
}
