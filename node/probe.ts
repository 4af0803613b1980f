/**
 * Capacity probe: what this machine can lend. GPUs from nvidia-smi, the onnxruntime execution
 * providers that actually load here (not merely bundled), CPU cores and memory, and a short benchmark
 * (GFLOP/s of a MatMul through onnxruntime on the best provider). Cached in the data dir; re-run on demand.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { GraphBuilder, makeModel } from '../fragments/builder/graph-builder.js';
import { DataType } from '../fragments/onnx/dtype.js';
import { writeModel } from '../fragments/onnx/write.js';
import { VERSION } from '../fragments/version.js';
import { cudaProviderInstalled, gpuDevicePresent } from './exec/executor.js';
import type { Gpu, ProbeLike } from '../net/capacity/record.js';

/** A GPU as nvidia-smi reports it (the record's Gpu). */
export type GpuInfo = Gpu;
/** The hardware, benchmark and software version a capacity record advertises, plus notes. */
export interface ProbeResult extends ProbeLike {
  /** Plain-language notes, e.g. that no GPU provider loaded and the node runs on CPU. */
  notes: string[];
}

const CACHE_FILE = 'capacity-probe.json';
const CACHE_MAX_AGE_MS = 24 * 3600 * 1000;
/** GPU providers tried in order of preference; each is kept only if a session really loads with it. */
const GPU_PROVIDERS = ['cuda', 'webgpu'] as const;

/** Lists NVIDIA GPUs through nvidia-smi; none (and no error) when it is absent. */
export function probeNvidiaGpus(timeoutMs = 5000): Promise<GpuInfo[]> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=name,memory.total,memory.free,utilization.gpu', '--format=csv,noheader,nounits'], { timeout: timeoutMs }, (err, stdout) => {
      if (err) return resolve([]);
      resolve(parseNvidiaSmi(stdout));
    });
  });
}

/** Parses nvidia-smi's CSV (MiB and percent, no units). */
export function parseNvidiaSmi(csv: string): GpuInfo[] {
  return csv.split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
    const [name, total, free, util] = line.split(',').map((s) => s.trim());
    const mib = (s: string): number => (Number.isFinite(Number(s)) ? Number(s) * 1024 * 1024 : 0);
    return { name, memoryTotalBytes: mib(total), memoryFreeBytes: mib(free), utilizationPercent: Number.isFinite(Number(util)) ? Number(util) : 0 };
  });
}

/** Writes a square MatMul model (y = a @ b, both inputs) and returns its path. */
async function matmulModel(dir: string, n: number): Promise<string> {
  const g = new GraphBuilder('probe-matmul');
  g.input('a', DataType.FLOAT, [n, n]);
  g.input('b', DataType.FLOAT, [n, n]);
  g.op('MatMul', ['a', 'b'], { output: 'y' });
  g.output('y', DataType.FLOAT, [n, n]);
  const file = path.join(dir, `matmul-${n}.onnx`);
  await writeModel(makeModel(g.build()), file);
  return file;
}

/** The execution providers that load a session here, best first, ending with 'cpu'. */
export async function probeExecutionProviders(modelPath: string, wanted: readonly string[] = GPU_PROVIDERS): Promise<string[]> {
  const bundled = new Set(ort.listSupportedBackends().map((b) => b.name));
  const found: string[] = [];
  for (const ep of wanted) {
    // A provider that is neither bundled nor installed (cuda without ONNXRUNTIME_NODE_INSTALL=cuda12) cannot
    // load; skip it rather than let onnxruntime print a failed library load.
    if (ep === 'cuda' ? !cudaProviderInstalled() : !bundled.has(ep)) continue;
    // Nor WebGPU without a GPU device node: Dawn would print a native "Couldn't load Vulkan" warning on stderr
    // (the executor's providerCandidates makes the same check).
    if (ep === 'webgpu' && !gpuDevicePresent()) continue;
    try {
      const session = await ort.InferenceSession.create(modelPath, { executionProviders: [ep] });
      await session.release();
      found.push(ep);
    } catch {
      // not usable on this machine
    }
  }
  found.push('cpu');
  return found;
}

/** GFLOP/s of an n×n MatMul on one provider (median of a few runs after a warm-up). */
export async function benchmarkMatmul(modelPath: string, n: number, executionProvider: string, threads?: number): Promise<number> {
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: [executionProvider],
    ...(threads ? { intraOpNumThreads: threads } : {}),
  });
  try {
    const data = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const feeds = { a: new ort.Tensor('float32', data, [n, n]), b: new ort.Tensor('float32', data, [n, n]) };
    await session.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    const seconds = times[Math.floor(times.length / 2)] / 1000;
    return (2 * n ** 3) / seconds / 1e9;
  } finally {
    await session.release();
  }
}

export interface ProbeOptions {
  /** Where the result is cached (omit to skip the cache). */
  dataDir?: string;
  /** Re-run even when a fresh cached result exists. */
  rerun?: boolean;
  threads?: number;
  logger?: Logger;
  /** Matrix size of the benchmark (default 512). */
  size?: number;
}

/** Probes the machine (or returns the cached probe when fresh and from this software version). */
export async function probeCapacity(options: ProbeOptions = {}): Promise<ProbeResult> {
  const cacheFile = options.dataDir ? path.join(options.dataDir, CACHE_FILE) : undefined;
  if (cacheFile && !options.rerun) {
    try {
      const cached = JSON.parse(await readFile(cacheFile, 'utf8')) as ProbeResult;
      if (cached.softwareVersion === VERSION && Date.now() - cached.benchmark.measuredAtMs < CACHE_MAX_AGE_MS) return cached;
    } catch {
      // no usable cache: probe
    }
  }
  const n = options.size ?? 512;
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-probe-'));
  try {
    const model = await matmulModel(work, n);
    const [gpus, providers] = await Promise.all([probeNvidiaGpus(), probeExecutionProviders(model)]);
    const best = providers[0];
    const gflops = await benchmarkMatmul(model, n, best, options.threads);
    const notes: string[] = [];
    if (best === 'cpu') {
      notes.push(gpus.length
        ? `found ${gpus.length} NVIDIA GPU(s) but no GPU execution provider loaded; running on CPU (install the CUDA provider with ONNXRUNTIME_NODE_INSTALL=cuda12 npm install)`
        : 'no GPU execution provider loaded; running on CPU');
    }
    const result: ProbeResult = {
      gpus,
      cpuCores: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryTotalBytes: os.totalmem(),
      memoryFreeBytes: os.freemem(),
      executionProviders: providers,
      platform: `${process.platform}-${process.arch}`,
      benchmark: { matmulGflops: gflops, executionProvider: best, measuredAtMs: Date.now() },
      softwareVersion: VERSION,
      notes,
    };
    for (const note of notes) options.logger?.warn({ providers }, note);
    options.logger?.info({ gflops: Number(gflops.toFixed(2)), provider: best, gpus: gpus.length }, 'capacity probed');
    if (cacheFile) {
      await mkdir(path.dirname(cacheFile), { recursive: true });
      await writeFile(cacheFile, `${JSON.stringify(result, null, 2)}\n`);
    }
    return result;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
