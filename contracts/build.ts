/**
 * Offline contract build: compiles `contracts/src/*.sol` with solc-js (the compiler bundled in the
 * `solc` package, never a download), resolving `@openzeppelin/...` imports from node_modules, and
 * writes `contracts/artifacts/NAME.json` ({abi, bytecode, ...}) deterministically: the same sources,
 * settings and compiler give the same bytes (pinned settings, sorted keys, stable source names).
 *
 * Run: `node --import tsx contracts/build.ts` (or `--check` to fail when the artifacts are stale).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GridpipeError } from '../errors/base.js';

/** The repository root (also when this file runs from dist/contracts). */
export const REPO_ROOT = findRepoRoot();
export const SOURCES_DIR = path.join(REPO_ROOT, 'contracts', 'src');
export const ARTIFACTS_DIR = path.join(REPO_ROOT, 'contracts', 'artifacts');

/** The compiler settings, pinned: changing any of them changes every artifact's bytes. */
export const SOLC_SETTINGS = {
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'ipfs' },
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  viaIR: false,
} as const;

/** The solc-js version the committed artifacts were built with. */
export const PINNED_SOLC_VERSION = '0.8.37+commit.f401782d.Emscripten.clang';

export interface Artifact {
  contractName: string;
  sourceName: string;
  abi: unknown[];
  bytecode: string;
  deployedBytecode: string;
  compiler: { version: string; settings: typeof SOLC_SETTINGS };
  /** sha256 of the standard-JSON input (all sources, their imports, settings): identifies the build. */
  inputHash: string;
}

export interface BuildResult {
  artifacts: Artifact[];
  /** File name → exact bytes to write. */
  files: Map<string, string>;
  inputHash: string;
}

interface SolcError { severity: 'error' | 'warning' | 'info'; formattedMessage: string }
interface SolcOutput {
  errors?: SolcError[];
  contracts?: Record<string, Record<string, { abi: unknown[]; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>>;
}

export class ContractBuildError extends GridpipeError<'CONTRACT_BUILD'> {
  override name = 'ContractBuildError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CONTRACT_BUILD', message, options);
  }
}

/** Compiles every `contracts/src/*.sol` and returns the artifacts (writes nothing). */
export async function compileContracts(): Promise<BuildResult> {
  const require = createRequire(import.meta.url);
  const solc = (await import('solc')).default;
  const version = String(solc.version());
  if (version !== PINNED_SOLC_VERSION) process.stderr.write(`warning: solc ${version} is not the pinned ${PINNED_SOLC_VERSION}; artifacts will differ\n`);

  const sourceFiles = readdirSync(SOURCES_DIR).filter((f) => f.endsWith('.sol')).sort();
  if (!sourceFiles.length) throw new ContractBuildError(`no .sol files in ${SOURCES_DIR}`);
  const sources: Record<string, { content: string }> = {};
  for (const f of sourceFiles) sources[`contracts/src/${f}`] = { content: readFileSync(path.join(SOURCES_DIR, f), 'utf8') };

  // Imports resolve only to packages in node_modules (`@scope/pkg/...` or `pkg/...`), never to other files.
  const imported = new Map<string, string>();
  const findImports = (importPath: string): { contents: string } | { error: string } => {
    try {
      if (importPath.startsWith('.') || path.isAbsolute(importPath) || importPath.includes('..')) return { error: `refusing import ${importPath}` };
      const parts = importPath.split('/');
      const pkg = importPath.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
      const rest = parts.slice(importPath.startsWith('@') ? 2 : 1).join('/');
      const pkgDir = path.dirname(require.resolve(`${pkg}/package.json`, { paths: [REPO_ROOT] }));
      const contents = readFileSync(path.join(pkgDir, rest), 'utf8');
      imported.set(importPath, contents);
      return { contents };
    } catch (err) {
      return { error: `cannot read ${importPath}: ${(err as Error).message}` };
    }
  };

  const input = { language: 'Solidity', sources, settings: SOLC_SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports })) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new ContractBuildError(`solc failed:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  const warnings = (output.errors ?? []).filter((e) => e.severity === 'warning');
  for (const w of warnings) process.stderr.write(`solc warning: ${w.formattedMessage}\n`);

  // The build's identity: every source solc saw (ours and imported), the settings and the compiler.
  const allSources: Record<string, string> = {};
  for (const [name, s] of Object.entries(sources)) allSources[name] = s.content;
  for (const [name, contents] of imported) allSources[name] = contents;
  const inputHash = sha256(stableStringify({ compiler: version, settings: SOLC_SETTINGS, sources: allSources }));

  const artifacts: Artifact[] = [];
  const files = new Map<string, string>();
  for (const sourceName of Object.keys(sources)) {
    for (const [contractName, c] of Object.entries(output.contracts?.[sourceName] ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
      if (!c.evm.bytecode.object) continue; // interfaces, abstract contracts
      const artifact: Artifact = {
        contractName,
        sourceName,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        compiler: { version, settings: SOLC_SETTINGS },
        inputHash,
      };
      artifacts.push(artifact);
      files.set(`${contractName}.json`, `${stableStringify(artifact, 2)}\n`);
    }
  }
  return { artifacts, files, inputHash };
}

/** Compiles and writes the artifacts; returns the paths written. */
export async function buildContracts(outDir = ARTIFACTS_DIR): Promise<string[]> {
  const { files } = await compileContracts();
  mkdirSync(outDir, { recursive: true });
  const written: string[] = [];
  for (const [name, text] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    const file = path.join(outDir, name);
    writeFileSync(file, text);
    written.push(file);
  }
  return written;
}

/** Names of the artifact files that differ from a fresh compile (empty when up to date). */
export async function staleArtifacts(outDir = ARTIFACTS_DIR): Promise<string[]> {
  const { files } = await compileContracts();
  const stale: string[] = [];
  for (const [name, text] of files) {
    const file = path.join(outDir, name);
    if (!existsSync(file) || readFileSync(file, 'utf8') !== text) stale.push(name);
  }
  return stale;
}

/** JSON with object keys sorted at every level (arrays keep their order). */
export function stableStringify(value: unknown, indent?: number): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, indent);
}

function sha256(text: string): string {
  return `0x${createHash('sha256').update(text).digest('hex')}`;
}

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, 'contracts', 'src')) && existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check');
  if (check) {
    const stale = await staleArtifacts();
    if (stale.length) {
      process.stderr.write(`contract artifacts are stale: ${stale.join(', ')}; run node --import tsx contracts/build.ts\n`);
      process.exitCode = 1;
    } else process.stdout.write('contract artifacts are up to date\n');
    return;
  }
  const written = await buildContracts();
  for (const f of written) process.stdout.write(`wrote ${path.relative(process.cwd(), f)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
