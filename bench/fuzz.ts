/**
 * `npm run bench -- fuzz` (issue 21): the fuzzers of test/fuzz at full length, 10,000 inputs per decoder, per
 * supplier stream and per gateway route (vitest with GRIDPIPE_FUZZ_RUNS), with honest traffic in parallel, and
 * what they found as bench/results/fuzz.json: per target the inputs sent, the outcomes, the heap growth, and per
 * gateway route the gateway's live heap after a collection as the run went (the heap curve). The processes'
 * warn lines go to a folder kept when the run fails (its path is printed). Flags: --runs=N (default 10,000).
 * The normal test run keeps its bounded count; only this bench and `npm run fuzz` run long.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { reportResult, resultsDir } from './report.js';
import { positiveIntFlag } from './flags.js';
import type { FuzzReportLine } from '../test/fuzz/harness.js';

/** A metric-name-safe form of a target's name. */
function slug(target: string): string {
  return target.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
}

/** Runs the long fuzz and writes its result. */
export async function fuzzBench(flags: string[]): Promise<void> {
  const runs = positiveIntFlag(flags, 'runs', 10_000);
  const root = path.resolve(resultsDir(), '..', '..');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gridpipe-fuzz-bench-'));
  const report = path.join(dir, 'report.jsonl');
  const started = Date.now();
  const code = await new Promise<number>((resolve) => {
    const child = spawn(path.join(root, 'node_modules', '.bin', 'vitest'), ['run', 'test/fuzz'], {
      cwd: root, stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, GRIDPIPE_FUZZ_RUNS: String(runs), GRIDPIPE_FUZZ_REPORT: report, GRIDPIPE_FUZZ_LOGS: dir },
    });
    child.on('exit', (c) => resolve(c ?? 1));
  });
  const lines = existsSync(report) ? readFileSync(report, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as FuzzReportLine) : [];
  const metrics: Record<string, number> = { runs_per_target: runs, passed: code === 0 ? 1 : 0, targets: lines.filter((l) => !l.failure).length, minutes: Math.round((Date.now() - started) / 600) / 100 };
  metrics.honest_failures = lines.filter((l) => l.failure).length;
  for (const l of lines.filter((x) => !x.failure)) {
    const s = slug(l.target);
    metrics[`${s}.inputs`] = l.inputs;
    const server = Object.entries(l.outcomes).filter(([k]) => /^5\d\d$/.test(k)).reduce((a, [, v]) => a + v, 0);
    if (l.target.startsWith('route:')) metrics[`${s}.http_5xx`] = server;
    if (l.honest !== undefined) metrics[`${s}.honest_in_parallel`] = l.honest;
    if (l.heapGrowthMiB !== undefined) metrics[`${s}.heap_growth_mib`] = l.heapGrowthMiB;
    if (l.rssGrowthMiB !== undefined) metrics[`${s}.rss_growth_mib`] = l.rssGrowthMiB;
    for (const [requests, mib] of l.heapCurve ?? []) metrics[`${s}.heap_mib_at_${requests}`] = mib;
  }
  const failures = lines.filter((l) => l.failure).map((l) => l.failure!.split('\n')[0]);
  reportResult('fuzz', metrics, `test/fuzz at ${runs} inputs per target (GRIDPIPE_FUZZ_RUNS), fixed seed; routes: a gateway process with API keys over two supplier processes, honest completions in parallel that must keep their exact text; heap_mib_at_N: the gateway's live heap after two full collections after N requests of the whole run (gridpipe_heap_after_gc_bytes). vitest exit ${code}.${failures.length ? ` Honest traffic failed: ${failures.slice(0, 3).join(' | ')}` : ''}`);
  if (code === 0) rmSync(dir, { recursive: true, force: true });
  else process.stderr.write(`fuzz: vitest exited ${code}; the processes' logs and the report are kept in ${dir}\n`);
}
