/** The network explorer: its state (Explorer), its HTTP routes and page, its own server for a node, the API's types. */
export { Explorer, type ExplorerOptions, type SwarmSource, type KnownManifest } from './explorer.js';
export { registerExplorerRoutes, EXPLORER_PREFIX, EXPLORER_API, pageDir } from './routes.js';
export { startExplorerServer, type ExplorerServer } from './server.js';
export { ChainReader, type ChainReaderOptions } from './chain-reader.js';
export { LiveLog, type FeedSource, type FeedEventLike } from './live-log.js';
export { Liveness, type PingNode } from './liveness.js';
export type * from './types.js';
