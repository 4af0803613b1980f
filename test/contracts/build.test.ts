/** The offline solc-js build: committed artifacts match a fresh compile byte for byte; bindings cover the ABIs. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ARTIFACTS_DIR, PINNED_SOLC_VERSION, compileContracts, stableStringify } from '../../contracts/build.js';
import { CONTRACT_NAMES, TYPED_METHODS, loadArtifact } from '../../contracts/index.js';

describe('contract build', () => {
  it('a fresh compile reproduces the committed artifacts exactly (deterministic, not stale)', async () => {
    const { files, inputHash } = await compileContracts();
    expect([...files.keys()].sort()).toEqual(CONTRACT_NAMES.map((n) => `${n}.json`).sort());
    for (const [name, text] of files) {
      const committed = readFileSync(path.join(ARTIFACTS_DIR, name), 'utf8');
      expect(committed === text, `${name} is stale: run node --import tsx contracts/build.ts`).toBe(true);
      // Sorted keys at every level, two-space indent, trailing newline.
      expect(`${stableStringify(JSON.parse(committed), 2)}\n`).toBe(committed);
    }
    for (const name of CONTRACT_NAMES) {
      const a = loadArtifact(name);
      expect(a.inputHash).toBe(inputHash);
      expect(a.compiler.version).toBe(PINNED_SOLC_VERSION);
      expect(a.bytecode).toMatch(/^0x[0-9a-f]+$/);
    }
  });

  it('the typed bindings declare every ABI function, and nothing else', () => {
    for (const name of CONTRACT_NAMES) {
      const abiFunctions = (loadArtifact(name).abi as { type: string; name?: string }[]).filter((f) => f.type === 'function').map((f) => f.name!);
      expect([...TYPED_METHODS[name]].sort(), name).toEqual([...new Set(abiFunctions)].sort());
    }
  });

  it('stableStringify sorts object keys and keeps array order', () => {
    expect(stableStringify({ b: 1, a: [{ d: 1, c: 2 }, 3] })).toBe('{"a":[{"c":2,"d":1},3],"b":1}');
  });
});
