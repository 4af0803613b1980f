/**
 * Swarm simulator: a discrete-event model of suppliers (GPU classes, regions, links, churn) serving a model
 * cut into fragments, driven by the real placement (`chooseSpan`, `shouldMove`) and routing (`findRoute`).
 *
 * What it models, and where it simplifies:
 * - Suppliers: GPU class (memory, fp16 TFLOPS, memory bandwidth, batch slots), memory share, true speed
 *   (class × log-normal) and a noisy self-test; Petals' T_p for coverage; KV room per server (Petals'
 *   memory cache: a session reserves prompt + new tokens up front or is refused).
 * - Compute per call: roofline max(tokens·FLOPs / (F·eff), weight bytes / (BW·eff)) + overhead, ×jitter;
 *   a server runs `slots` calls at once, FIFO; KV reads and batching speed-ups are ignored.
 * - Network: backbone RTT by region pair + last miles, per-message jitter and spikes, transfer at the
 *   slower end's link. Star topology (the gateway relays every hop).
 * - Churn: exponential lifetimes, graceful leaves (record withdrawn) or crashes (record lingers until it
 *   expires; calls time out); Poisson joins placed with chooseSpan after Petals' join jitter; periodic
 *   shouldMove checks confirmed on consecutive checks (skipped when a sound bound shows it must say no).
 * - Clients see the DHT listing at once (no refresh period) but not which listed servers are dead; they
 *   learn RTT/speed/queue per server from replies and pings (EMA), ban failures with back-off, route one
 *   chain per session, repair from the failed fragment with replay, and fail a request when a fragment
 *   has no server (or after `maxAttempts` consecutive failures at one point).
 */
export { simulate, Simulation, type SimResult, type Distribution } from './simulation.js';
export { defaultConfig, resolveConfig, type SimConfig, type SimOptions } from './config.js';
export { decoderModel, llama70bClass, fragmentCosts, placementModel, type SimModel, type DecoderModelOptions } from './model.js';
export { GPU_MIX, REGIONS, REGION_RTT_MS, uniformMix, type GpuClass, type Region } from './hardware.js';
export { randomRoute } from './random-route.js';
export { EventQueue, type Fireable } from './event-queue.js';
export type { RequestFailure } from './client.js';
export type { SimPeer, CoverageSample } from './swarm.js';
