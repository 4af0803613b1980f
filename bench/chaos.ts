/**
 * `npm run bench -- chaos` (issue 21): 200 greedy generations through a real gateway over four supplier
 * processes while a random supplier is SIGKILLed and restarted every 5 s (chaos-grid.ts). Writes
 * bench/results/chaos.json: completed, failed, identical (1 when every completion equals its fault-free run,
 * token for token), kills, failovers, p50/p95 latency. The load is paced over 6 kill periods and lasts until 6 kills.
 * Flags: --generations=N, --kill-every-ms=N.
 */
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ChaosGrid, runChaos } from './chaos-grid.js';
import { reportResult } from './report.js';
import { quantile } from './stats.js';
import { positiveIntFlag } from './flags.js';

/** Runs the chaos load and writes its result. */
export async function chaosBench(flags: string[]): Promise<void> {
  const generations = positiveIntFlag(flags, 'generations', 200);
  const killEveryMs = positiveIntFlag(flags, 'kill-every-ms', 5_000);
  // The load lasts at least KILL_PERIODS kill periods, however fast this machine serves it (on a quiet one 200
  // generations took 6 s, before the first kill), and keeps going until that many kills have happened.
  const KILL_PERIODS = 6;
  const options = {
    generations, concurrency: 2, killEveryMs, maxTokens: 12, prompts: 10, seed: 21, paceMs: (KILL_PERIODS * killEveryMs) / generations, minKills: KILL_PERIODS,
  };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gridpipe-chaos-bench-'));
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const grid = await ChaosGrid.start({ dir, suppliers: 4, log });
  try {
    const report = await runChaos(grid, options, log);
    for (const e of report.errors.slice(0, 10)) log(`chaos: ${e}`);
    reportResult('chaos', {
      generations: report.completed + report.failed,
      completed: report.completed,
      failed: report.failed,
      identical: report.identical && report.failed === 0 ? 1 : 0,
      mismatches: report.mismatches,
      kills: report.kills,
      failovers: report.failovers,
      p50_latency_ms: quantile(report.latenciesMs, 0.5),
      p95_latency_ms: quantile(report.latenciesMs, 0.95),
      kill_every_ms: options.killEveryMs,
      suppliers: 4,
    }, `${options.generations} greedy completions of ${options.maxTokens} tokens (2 in flight, started at most one per ${options.paceMs} ms, and more until ${KILL_PERIODS} kills happened) through a gateway over 4 supplier processes that each host both fragments of a 2-layer synthetic decoder; a random supplier SIGKILLed and restarted (same identity, data and port) every ${options.killEveryMs / 1000} s; each compared with its prompt's fault-free completion served by the same grid before the chaos.`);
  } finally {
    await grid.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
