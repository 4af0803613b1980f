/** Benchmark results: the JSON every benchmark writes to bench/results/NAME.json, and the table it prints. */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchResult {
  name: string;
  when: string;
  machine: { cpus: number; cpuModel: string; memoryBytes: number; node: string };
  metrics: Record<string, number>;
  notes: string;
}

/** The folder results go to (bench/results in the source tree, also when run from dist/). */
export function resultsDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, '..', '..') : path.resolve(here, '..');
  return path.join(root, 'bench', 'results');
}

/** Writes a benchmark's result file and prints its table; returns the file path. */
export function reportResult(name: string, metrics: Record<string, number>, notes: string): string {
  const result: BenchResult = {
    name,
    when: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', memoryBytes: os.totalmem(), node: process.version },
    metrics,
    notes,
  };
  const dir = resultsDir();
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  const width = Math.max(...Object.keys(metrics).map((k) => k.length), 6);
  const lines = [`\n${name}  (${result.machine.cpus} cpus, node ${result.machine.node})`, `${'metric'.padEnd(width)}  value`, `${'-'.repeat(width)}  ${'-'.repeat(16)}`];
  for (const [k, v] of Object.entries(metrics)) lines.push(`${k.padEnd(width)}  ${formatValue(v)}`);
  lines.push(`notes: ${notes}`, `written to ${file}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return file;
}

function formatValue(v: number): string {
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}
