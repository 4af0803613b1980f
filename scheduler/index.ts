/** The compute scheduler: routing, placement, discovery, fault-tolerant pipeline sessions, generation. */
export * from './routing.js';
export * from './placement.js';
export * from './discovery.js';
export * from './estimates.js';
export * from './session.js';
export * from './generate.js';
export * from './sampling.js';
export * from './tokenizer.js';
export * from './local-runner.js';
export * from './client.js';
export * from './payment.js';
