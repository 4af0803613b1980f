/**
 * `npm run test:mutation [-- MODULE...]` (issue 21): StrykerJS mutation testing of the modules that guard money
 * and truth, one module at a time (concurrency 1, under whatever `nice` the caller runs it with: a run is
 * CPU-heavy), each against the in-process tests that cover it. Writes bench/results/mutation.json through
 * report.ts: per module mutants, killed, survived, no_coverage, timeouts, equivalent, ignored (static code) and
 * score, the score being (killed + timeouts) ÷ (mutants − equivalent − ignored − errors). Equivalent mutants (a change no test can observe) are
 * listed with a reason in test/mutation/equivalent.json, by module, file line and replacement. Not run in
 * every CI run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { reportResult } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), path.basename(path.dirname(path.dirname(fileURLToPath(import.meta.url)))) === 'dist' ? '../..' : '..');

/** The modules mutated and the in-process test files that cover each. */
export const MUTATION_MODULES: Record<string, { mutate: string[]; tests: string[] }> = {
  'payment-gate': { mutate: ['node/payments/gate.ts'], tests: ['test/payments/gate.test.ts'] },
  'voucher-book': { mutate: ['node/payments/voucher-book.ts'], tests: ['test/payments/voucher-book.test.ts', 'test/mutation/voucher-book-kills.test.ts'] },
  pricing: { mutate: ['policy/pricing.ts'], tests: ['test/payments/pricing.test.ts', 'test/policy/pricing-bounds.test.ts'] },
  routing: {
    mutate: ['policy/routing.ts', 'policy/estimates.ts'],
    tests: ['test/policy/routing.test.ts', 'test/policy/estimates.test.ts', 'test/verify/measured-routing.test.ts', 'test/mutation/routing-kills.test.ts'],
  },
  sampling: { mutate: ['policy/sampling.ts'], tests: ['test/policy/sampling.test.ts', 'test/policy/sampling-reference.test.ts', 'test/mutation/sampling-kills.test.ts'] },
  'capacity-records': { mutate: ['net/capacity/record.ts'], tests: ['test/net/capacity-record-bounds.test.ts', 'test/mutation/capacity-records-kills.test.ts'] },
  'verification-rules': { mutate: ['policy/verification.ts'], tests: ['test/verify/rules.test.ts', 'test/mutation/verification-kills.test.ts'] },
  'decoder-limits': { mutate: ['net/exec/scan.ts', 'net/exec/decode.ts'], tests: ['test/mutation/decoder-limits-kills.test.ts'] },
};

interface Equivalent { file: string; line: number; replacement: string; reason: string }

interface MutantReport { status: string; location: { start: { line: number } }; replacement?: string; mutatorName: string }

/** Counts of one module's Stryker JSON report, equivalents taken out. */
function summarize(report: { files: Record<string, { mutants: MutantReport[] }> }, equivalents: Equivalent[]): Record<string, number> {
  const c = { mutants: 0, killed: 0, survived: 0, no_coverage: 0, timeouts: 0, equivalent: 0, ignored: 0, errors: 0 };
  for (const [file, f] of Object.entries(report.files)) {
    for (const m of f.mutants) {
      c.mutants++;
      const equivalent = equivalents.some((e) => file.endsWith(e.file) && e.line === m.location.start.line && e.replacement === (m.replacement ?? m.mutatorName));
      if (equivalent && (m.status === 'Survived' || m.status === 'NoCoverage')) { c.equivalent++; continue; }
      if (m.status === 'Killed') c.killed++;
      else if (m.status === 'Survived') c.survived++;
      else if (m.status === 'NoCoverage') c.no_coverage++;
      else if (m.status === 'Timeout') c.timeouts++;
      else if (m.status === 'Ignored') c.ignored++; // static code (ignoreStatic: module-level tables run once, at import)
      else c.errors++; // CompileError, RuntimeError
    }
  }
  const scored = c.mutants - c.equivalent - c.ignored - c.errors;
  return { ...c, score: scored ? Math.round(((c.killed + c.timeouts) / scored) * 1000) / 10 : 0 };
}

/** A module's counts from its last Stryker report (in .stryker-tmp/MODULE/report.json). */
function countsOf(name: string): Record<string, number> {
  const reportFile = path.join(ROOT, '.stryker-tmp', name, 'report.json');
  const equivalentsFile = path.join(ROOT, 'test', 'mutation', 'equivalent.json');
  const equivalents = (JSON.parse(readFileSync(equivalentsFile, 'utf8')) as Record<string, Equivalent[]>)[name] ?? [];
  return summarize(JSON.parse(readFileSync(reportFile, 'utf8')) as never, equivalents);
}

/** Runs Stryker on one module; its counts. */
function mutateModule(name: string): Record<string, number> {
  const spec = MUTATION_MODULES[name];
  const work = path.join(ROOT, '.stryker-tmp', name);
  mkdirSync(work, { recursive: true });
  const reportFile = path.join(work, 'report.json');
  const config = {
    testRunner: 'vitest', vitest: { configFile: 'vitest.mutation.config.ts', related: false },
    mutate: spec.mutate, concurrency: 1, coverageAnalysis: 'perTest', reporters: ['json', 'clear-text', 'progress-append-only'], jsonReporter: { fileName: reportFile },
    tempDirName: '.stryker-tmp/sandbox', cleanTempDir: 'always', timeoutMS: 15_000, ignoreStatic: true, disableTypeChecks: true,
    // incremental: a rerun after new tests only runs the mutants whose code or covering tests changed
    incremental: true, incrementalFile: path.join(work, 'incremental.json'),
  };
  const configFile = path.join(work, 'stryker.config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const run = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'stryker'), ['run', configFile], {
    cwd: ROOT, stdio: 'inherit', env: { ...process.env, GRIDPIPE_MUTATION_TESTS: spec.tests.join(',') },
  });
  if (run.status !== 0 || !existsSync(reportFile)) throw new Error(`stryker failed on ${name} (exit ${run.status})`);
  return countsOf(name);
}

/**
 * Mutates the named modules (all when none), merging into bench/results/mutation.json (read when writing, so
 * runs of different modules side by side keep each other's figures). `fromReports`: no run, the figures
 * recomputed from the last reports (after test/mutation/equivalent.json changed).
 */
export async function mutationBench(names: string[], fromReports = false): Promise<void> {
  const chosen = names.length ? names : Object.keys(MUTATION_MODULES);
  const unknown = chosen.filter((n) => !MUTATION_MODULES[n]);
  if (unknown.length) throw new Error(`unknown module ${unknown.join(', ')}; available: ${Object.keys(MUTATION_MODULES).join(', ')}`);
  const fresh: Record<string, number> = {};
  for (const name of chosen) {
    const counts = fromReports ? countsOf(name) : mutateModule(name);
    for (const [k, v] of Object.entries(counts)) fresh[`${name}.${k}`] = v;
  }
  const previous = path.join(ROOT, 'bench', 'results', 'mutation.json');
  const metrics: Record<string, number> = existsSync(previous) ? (JSON.parse(readFileSync(previous, 'utf8')) as { metrics: Record<string, number> }).metrics : {};
  Object.assign(metrics, fresh);
  reportResult('mutation', metrics, `StrykerJS ${'9.6'} (vitest runner), one module at a time, concurrency 1; score = (killed + timeouts) / (mutants − equivalent − ignored − errors), goal ≥ 85 %; ignored = mutants in static code (module-level tables, ignoreStatic). Modules: ${Object.entries(MUTATION_MODULES).map(([n, s]) => `${n} = ${s.mutate.join(' + ')} against ${s.tests.join(', ')}`).join('; ')}. Equivalent mutants: test/mutation/equivalent.json.`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await mutationBench(process.argv.slice(2).filter((a) => !a.startsWith('--')), process.argv.includes('--from-reports'));
}
