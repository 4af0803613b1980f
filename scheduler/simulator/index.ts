/**
 * Swarm simulator: a discrete-event model of peers (GPU classes, regions, links, churn) serving a model
 * cut into fragments, with the real placement (`chooseSpan`, `shouldMove`) and routing (`findRoute`).
 */
export { simulate, Simulation, type SimResult, type Distribution } from './simulation.js';
export { defaultConfig, resolveConfig, type SimConfig, type SimOptions } from './config.js';
export { decoderModel, llama70bClass, fragmentCosts, placementModel, type SimModel, type DecoderModelOptions } from './model.js';
export { GPU_MIX, REGIONS, REGION_RTT_MS, uniformMix, type GpuClass, type Region } from './hardware.js';
export { randomRoute } from './random-route.js';
export { EventQueue } from './event-queue.js';
export type { RequestFailure } from './client.js';
export type { SimPeer, CoverageSample } from './swarm.js';
