/**
 * The floors hold: the lint rules refuse an import that points up or sideways (checked by linting
 * deliberately wrong imports), the folder graph of the real code has no cycle and only allowed edges,
 * and nothing that policy/ reaches at run time, however indirectly, does I/O.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
/** layers.json: the single statement of who may import whom (eslint.config.js builds its rules from it). */
const floors = (JSON.parse(readFileSync(path.join(ROOT, 'layers.json'), 'utf8')) as { floors: Record<string, string[]> }).floors;
const LAYERED = Object.keys(floors);

function sourceFiles(dir: string): string[] {
  let out: string[] = [];
  let entries;
  try { entries = readdirSync(path.join(ROOT, dir), { withFileTypes: true }); } catch { return []; }
  for (const e of entries) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== 'artifacts' && e.name !== 'node_modules') out = out.concat(sourceFiles(rel)); }
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

interface ImportRef { spec: string; typeOnly: boolean }

/** Every module specifier a file names: static imports and re-exports, dynamic imports. */
function importsOf(file: string): ImportRef[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const refs: ImportRef[] = [];
  for (const m of text.matchAll(/^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*'([^']+)'/gm)) {
    const names = m[3];
    const allTypes = !!m[2] || (/^\{[^}]*\}$/.test(names.trim()) && names.replace(/[{}\s]/g, '').split(',').filter(Boolean).every((n) => n.startsWith('type')));
    refs.push({ spec: m[4], typeOnly: allTypes });
  }
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) refs.push({ spec: m[1], typeOnly: false });
  for (const m of text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)) refs.push({ spec: m[1], typeOnly: false });
  return refs;
}

function resolveRelative(from: string, spec: string): string {
  return path.normalize(path.join(path.dirname(from), spec)).replace(/\.js$/, '.ts');
}

const topFolder = (file: string): string => file.split(path.sep)[0];

describe('layering', () => {
  it('lint refuses an import that points up or sideways', async () => {
    const eslint = new ESLint({ cwd: ROOT });
    const cases: Array<[string, string, boolean]> = [
      ['policy/zz-probe.ts', "import { startSupplier } from '../node/supplier.js';\nexport const x = startSupplier;\n", false],
      ['policy/zz-probe.ts', "import { readFile } from 'node:fs/promises';\nexport const x = readFile;\n", false],
      ['policy/zz-probe.ts', "import { sampleInputs } from '../fragments/sample-inputs.js';\nexport const x = sampleInputs;\n", false],
      ['policy/zz-probe.ts', "import type { Manifest } from '../fragments/manifest.js';\nexport type X = Manifest;\n", true],
      ['node/zz-probe.ts', "import { GridClient } from '../scheduler/client.js';\nexport const x = GridClient;\n", false],
      ['scheduler/zz-probe.ts', "import { startSupplier } from '../node/supplier.js';\nexport const x = startSupplier;\n", false],
      ['gateway/routes/zz-probe.ts', "import { SupplierPayments } from '../../node/payments/supplier-payments.js';\nexport const x = SupplierPayments;\n", false],
      ['net/zz-probe.ts', "import { GridClient } from '../scheduler/client.js';\nexport const x = GridClient;\n", false],
      ['gateway/zz-probe.ts', "import { GridClient } from '../scheduler/client.js';\nexport const x = GridClient;\n", true],
    ];
    for (const [filePath, code, allowed] of cases) {
      const [result] = await eslint.lintText(code, { filePath: path.join(ROOT, filePath) });
      const refused = result.messages.some((m) => m.ruleId === '@typescript-eslint/no-restricted-imports');
      expect({ filePath, code, refused }).toEqual({ filePath, code, refused: !allowed });
    }
  });

  it('the folders import only downwards, with no cycle', () => {
    const edges = new Map<string, Set<string>>();
    const wrong: string[] = [];
    for (const folder of LAYERED) {
      for (const file of sourceFiles(folder)) {
        for (const { spec } of importsOf(file)) {
          if (!spec.startsWith('.')) continue;
          const target = topFolder(resolveRelative(file, spec));
          if (target === folder) continue;
          if (!edges.has(folder)) edges.set(folder, new Set());
          edges.get(folder)!.add(target);
          if (!floors[folder].includes(target)) wrong.push(`${file} imports ${spec}`);
        }
      }
    }
    expect(wrong).toEqual([]);
    // Depth-first search for a cycle in the folder graph.
    const state = new Map<string, 'open' | 'done'>();
    const cycle: string[] = [];
    const visit = (f: string, trail: string[]): boolean => {
      if (state.get(f) === 'done') return false;
      if (state.get(f) === 'open') { cycle.push(...trail, f); return true; }
      state.set(f, 'open');
      for (const next of edges.get(f) ?? []) if (visit(next, [...trail, f])) return true;
      state.set(f, 'done');
      return false;
    };
    for (const f of edges.keys()) if (visit(f, [])) break;
    expect(cycle).toEqual([]);
    expect(edges.get('gateway')?.has('node') ?? false).toBe(false);
  });

  it('nothing policy/ reaches at run time does I/O', () => {
    const io = /^(node:|fs$|path$|os$|net$|http$|child_process$|worker_threads$|libp2p$|@libp2p\/|@chainsafe\/|@multiformats\/|ethers$|onnxruntime-node$|classic-level$|datastore-|pino$|prom-client$|fastify$|@fastify\/|commander$|protobufjs)/;
    const seen = new Set<string>();
    const offences: string[] = [];
    const walk = (file: string, via: string[]): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const { spec, typeOnly } of importsOf(file)) {
        if (typeOnly) continue;
        if (spec.startsWith('.')) walk(resolveRelative(file, spec), [...via, file]);
        else if (io.test(spec)) offences.push(`${[...via, file].join(' → ')} imports ${spec}`);
      }
    };
    for (const file of sourceFiles('policy')) walk(file, []);
    expect(seen.size).toBeGreaterThan(10);
    expect(offences).toEqual([]);
  });
});
