/**
 * The capacity probe (node/probe.ts): nvidia-smi parsing, and a measurement through onnxruntime that says when it
 * fell back to CPU and is cached.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseNvidiaSmi, probeCapacity } from '../../node/probe.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('capacity probe', () => {
  it('parses nvidia-smi output', () => {
    const gpus = parseNvidiaSmi('NVIDIA GeForce RTX 4090, 24564, 23000, 7\nNVIDIA H100 80GB HBM3, 81559, 80000, 0\n');
    expect(gpus).toEqual([
      { name: 'NVIDIA GeForce RTX 4090', memoryTotalBytes: 24564 * 2 ** 20, memoryFreeBytes: 23000 * 2 ** 20, utilizationPercent: 7 },
      { name: 'NVIDIA H100 80GB HBM3', memoryTotalBytes: 81559 * 2 ** 20, memoryFreeBytes: 80000 * 2 ** 20, utilizationPercent: 0 },
    ]);
  });

  it('measures the machine through onnxruntime, says when it falls back to CPU, and caches the result', async () => {
    const first = await probeCapacity({ dataDir: tmp.dir, size: 128 });
    expect(first.executionProviders.at(-1)).toBe('cpu');
    expect(first.benchmark.matmulGflops).toBeGreaterThan(0);
    expect(first.cpuCores).toBeGreaterThan(0);
    if (first.benchmark.executionProvider === 'cpu') expect(first.notes.join(' ')).toMatch(/running on CPU/);
    const cached = JSON.parse(readFileSync(path.join(tmp.dir, 'capacity-probe.json'), 'utf8'));
    expect(cached.benchmark.measuredAtMs).toBe(first.benchmark.measuredAtMs);
    const second = await probeCapacity({ dataDir: tmp.dir, size: 128 });
    expect(second.benchmark.measuredAtMs).toBe(first.benchmark.measuredAtMs);
    const rerun = await probeCapacity({ dataDir: tmp.dir, size: 128, rerun: true });
    expect(rerun.benchmark.measuredAtMs).toBeGreaterThanOrEqual(first.benchmark.measuredAtMs);
  });
});
