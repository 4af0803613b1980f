/** Pure decisions over plain data, no I/O: routing, placement, sampling, estimates, pricing, price limits. */
export * from './routing.js';
export * from './placement.js';
export * from './placement-model.js';
export * from './sampling.js';
export * from './estimates.js';
export * from './pricing.js';
export * from './price-limits.js';
export * from './verification.js';
export * from './route-mode.js';
