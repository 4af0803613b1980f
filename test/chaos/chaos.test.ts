/**
 * Issue 21, chaos: four `gridpipe supply` processes serving the same spans behind a real gateway, a steady load
 * of greedy completions, and a random supplier SIGKILLed and restarted every few seconds (bench/chaos-grid.ts).
 * Every completion must finish and equal, token for token, the fault-free completion of its prompt. The normal
 * test run is a short version; `npm run test:chaos` runs 200 generations with a kill every 5 s, as the bench.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { ChaosGrid, runChaos } from '../../bench/chaos-grid.js';
import { CLI } from '../helpers/cli.js';
import { killAll } from '../helpers/process.js';
import { tempDir } from '../helpers/tmp.js';

const LONG = process.env.GRIDPIPE_CHAOS_LONG === '1';
const RUN = LONG
  ? { generations: 200, concurrency: 2, killEveryMs: 5_000, maxTokens: 12, prompts: 10, seed: 21 }
  : { generations: 30, concurrency: 2, killEveryMs: 2_000, maxTokens: 12, prompts: 6, seed: 21, minKills: 2 };

const tmp = tempDir('gridpipe-chaos-');
let grid: ChaosGrid;

beforeAll(async () => {
  grid = await ChaosGrid.start({ dir: path.join(tmp.dir, 'grid'), suppliers: 4, cli: CLI, log: (l) => console.log(l) });
}, 300_000);

afterAll(async () => {
  await grid?.stop();
  await killAll();
  tmp.cleanup();
});

describe('a grid of four suppliers with one killed and restarted every few seconds', () => {
  it(`completes ${RUN.generations} generations (more until 2 kills happened), each equal to its fault-free run`, async () => {
    const report = await runChaos(grid, RUN, (l) => console.log(l));
    const sorted = [...report.latenciesMs].sort((a, b) => a - b);
    console.log(`chaos: ${report.completed} completed, ${report.failed} failed, ${report.mismatches} mismatches, ${report.kills} kills, ${report.failovers} failovers, p50 ${sorted[Math.floor(sorted.length / 2)]?.toFixed(0)} ms`);
    expect(report.errors).toEqual([]);
    expect(report.failed).toBe(0);
    expect(report.completed).toBeGreaterThanOrEqual(RUN.generations);
    expect(report.identical).toBe(true);
    expect(report.kills, 'the killer ran during the load').toBeGreaterThanOrEqual(LONG ? 1 : 2);
  }, LONG ? 3_600_000 : 900_000);
});
