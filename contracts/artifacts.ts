/** The compiled contracts (`contracts/artifacts/NAME.json`, committed), read at run time: no solc needed. */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONTRACT_NAMES = ['GridToken', 'StakeRegistry', 'PaymentEscrow', 'DisputeManager'] as const;
export type ContractName = (typeof CONTRACT_NAMES)[number];

export interface ContractArtifact {
  contractName: string;
  sourceName: string;
  abi: unknown[];
  bytecode: string;
  deployedBytecode: string;
  compiler: { version: string; settings: unknown };
  inputHash: string;
}

const cache = new Map<string, ContractArtifact>();

/**
 * The folder with the artifacts: `artifacts/` next to this module (the source tree, or a copy in
 * dist/), else the nearest ancestor's `contracts/artifacts` (running from dist/ inside the repository).
 */
export function artifactsDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const local = path.join(here, 'artifacts');
  if (existsSync(path.join(local, 'GridToken.json'))) return local;
  let dir = path.dirname(here);
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'contracts', 'artifacts');
    if (existsSync(path.join(candidate, 'GridToken.json'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return local;
}

/** Loads one contract's artifact (cached). */
export function loadArtifact(name: ContractName): ContractArtifact {
  let artifact = cache.get(name);
  if (!artifact) {
    const file = path.join(artifactsDir(), `${name}.json`);
    if (!existsSync(file)) throw new Error(`contract artifact ${file} is missing: run node --import tsx contracts/build.ts`);
    artifact = JSON.parse(readFileSync(file, 'utf8')) as ContractArtifact;
    cache.set(name, artifact);
  }
  return artifact;
}
