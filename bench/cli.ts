/**
 * `npm run bench -- cli`: how long the `gridpipe` command takes to start. Runs `node -e 0` (the baseline:
 * Node's own start), `gridpipe --help`, `gridpipe --version` and `gridpipe model inspect FILE` on a tiny
 * synthetic GPT, alternately, so that a busy moment of the machine falls on all of them alike; one warm-up
 * round is not counted. `--rounds=N` (default 15); `--compare=PATH/main.js` also times another build of the
 * CLI (e.g. an older commit's dist/cli/main.js) in the same rounds. Goal: --help and model inspect each
 * under 400 ms wall.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { CLI_ENTRY } from '../cli/spawn.js';
import { reportResult } from './report.js';
import { median, quantile } from './stats.js';

const GOAL_MS = 400;



/** Wall time of one run of `node ...args`, in ms; throws when it fails (a timing of a failure means nothing). */
function timeRun(args: string[]): number {
  const start = performance.now();
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr.toString().trim()}`);
  return ms;
}

/** Runs the benchmark. */
export async function cliBench(flags: string[]): Promise<void> {
  const rounds = Number(flags.find((f) => f.startsWith('--rounds='))?.split('=')[1] ?? 15);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds takes a positive whole number, got ${rounds}`);
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-cli-'));
  try {
    const model = path.join(work, 'tiny.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 32, heads: 2, vocab: 64, seed: 1, name: 'bench-cli-tiny' }), model);
    const cases: Array<[string, string[]]> = [
      ['baseline_node', ['-e', '0']],
      ['help', [CLI_ENTRY, '--help']],
      ['version', [CLI_ENTRY, '--version']],
      ['inspect', [CLI_ENTRY, 'model', 'inspect', model]],
    ];
    const compare = flags.find((f) => f.startsWith('--compare='))?.slice('--compare='.length);
    if (compare) cases.push(['compared_help', [compare, '--help']], ['compared_inspect', [compare, 'model', 'inspect', model]]);
    // The machine's load at the start: these are wall times, so a busy machine shows in every one of them.
    const loadAvgStart = os.loadavg()[0];
    const times = new Map<string, number[]>(cases.map(([name]) => [name, []]));
    for (let round = 0; round <= rounds; round++) {
      for (const [name, args] of cases) {
        const ms = timeRun(args);
        if (round > 0) times.get(name)!.push(ms);
      }
    }
    const metrics: Record<string, number> = { rounds, load_avg_1m_start: loadAvgStart, load_avg_1m_end: os.loadavg()[0] };
    for (const [name] of cases) {
      metrics[`${name}_ms_p50`] = median(times.get(name)!);
      metrics[`${name}_ms_p90`] = quantile(times.get(name)!, 0.9);
    }
    reportResult('cli', metrics, `wall time of a whole process (spawn to exit) of node -e 0 (baseline), gridpipe --help, gridpipe --version and gridpipe model inspect on a tiny synthetic GPT (2 layers, d32, 140 KiB), ${rounds} alternating rounds after one warm-up${compare ? `; compared_*: the same commands with ${compare}` : ''}. Goal: help and inspect p50 < ${GOAL_MS} ms.`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
