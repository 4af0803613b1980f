/**
 * What suppliers bring: GPU classes (memory, fp16 tensor throughput, memory bandwidth, how many steps
 * they run at once), where they are (regions with inter-region round trips), and their links.
 * Figures are vendor peak numbers; the simulator applies efficiencies (see SimConfig.hardware).
 */

export interface GpuClass {
  name: string;
  memoryGB: number;
  /** Dense fp16 tensor TFLOPS (fp32 accumulate). */
  tflops: number;
  /** Memory bandwidth, GB/s. */
  memoryGBs: number;
  /** Steps the server runs at once (batch slots). */
  slots: number;
  /** In a data centre (fast, low-latency link) rather than at home. */
  datacenter: boolean;
  /** Share of the swarm's suppliers with this GPU. */
  weight: number;
}

/** A consumer-heavy mix, 8 to 80 GB. */
export const GPU_MIX: readonly GpuClass[] = [
  { name: 'RTX 3060', memoryGB: 12, tflops: 25.6, memoryGBs: 360, slots: 2, datacenter: false, weight: 18 },
  { name: 'RTX 3070', memoryGB: 8, tflops: 20.3, memoryGBs: 448, slots: 2, datacenter: false, weight: 8 },
  { name: 'RTX 3080', memoryGB: 10, tflops: 29.8, memoryGBs: 760, slots: 2, datacenter: false, weight: 8 },
  { name: 'RTX 3090', memoryGB: 24, tflops: 35.6, memoryGBs: 936, slots: 4, datacenter: false, weight: 14 },
  { name: 'RTX 4070', memoryGB: 12, tflops: 29.1, memoryGBs: 504, slots: 2, datacenter: false, weight: 8 },
  { name: 'RTX 4080', memoryGB: 16, tflops: 48.7, memoryGBs: 717, slots: 4, datacenter: false, weight: 8 },
  { name: 'RTX 4090', memoryGB: 24, tflops: 82.6, memoryGBs: 1008, slots: 4, datacenter: false, weight: 16 },
  { name: 'A100 40GB', memoryGB: 40, tflops: 312, memoryGBs: 1555, slots: 8, datacenter: true, weight: 6 },
  { name: 'A100 80GB', memoryGB: 80, tflops: 312, memoryGBs: 2039, slots: 8, datacenter: true, weight: 6 },
];

/** The same GPU everywhere (for tests that want a homogeneous swarm). */
export function uniformMix(name = 'RTX 4090'): GpuClass[] {
  const g = GPU_MIX.find((c) => c.name === name);
  if (!g) throw new Error(`unknown GPU class ${name}`);
  return [{ ...g, weight: 1 }];
}

export interface Region { name: string; weight: number }

export const REGIONS: readonly Region[] = [
  { name: 'north-america', weight: 0.4 },
  { name: 'europe', weight: 0.35 },
  { name: 'asia', weight: 0.2 },
  { name: 'south-america', weight: 0.05 },
];

/** Backbone round trips between regions, ms (within a region: a metro-to-metro average). */
export const REGION_RTT_MS: readonly (readonly number[])[] = [
  [30, 95, 170, 130],
  [95, 25, 230, 200],
  [170, 230, 45, 310],
  [130, 200, 310, 35],
];
