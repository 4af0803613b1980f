/** The developer gateway: an OpenAI-compatible API and raw tensors over the grid, with keys, metrics and a live feed. */
export { startGateway, buildApp, type Gateway, type GatewayOptions } from './server.js';
export { ModelCatalog, type CatalogModel } from './catalog.js';
export { KeyRing, parseKeys, readKeysFile, KeysFileError, type ApiKey, type ApiKeyConfig } from './keys.js';
export { EventFeed, type FeedEvent } from './feed.js';
export { GatewayMetrics } from './metrics.js';
export { ApiError } from './errors.js';
export { openPayers, type Payers, type PaymentOptions } from './payments.js';
export { TENSORS_MEDIA_TYPE, tensorsFromFrames, tensorsToFrames } from './tensors.js';
export type { RouteMetadata, HopSummary } from './trace.js';
