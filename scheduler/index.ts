/** The grid client: the swarm view, discovery, fault-tolerant pipeline sessions, generation, payment hooks. */
export * from './swarm-view.js';
export * from './discovery.js';
export * from './session.js';
export * from './generate.js';
export * from './local-runner.js';
export * from './client.js';
export * from './payment.js';
