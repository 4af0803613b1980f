import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The floors (README "Architecture"): each folder imports only from the folders listed for it. A relative
 * import reaches another top-level folder as `../<folder>/`, `../../<folder>/`..., which is what these
 * patterns match. test/layering.test.ts lints a deliberately wrong import to prove the rules bite.
 */
const FLOORS = JSON.parse(readFileSync(fileURLToPath(import.meta.resolve('./layers.json')), 'utf8')).floors;
const FOLDERS = [...Object.keys(FLOORS), 'bench', 'test'];

/** Packages that do I/O (or need a native addon): the policy floor may not import them. */
const IO_PACKAGES = [
  'node:*', 'fs', 'fs/*', 'path', 'os', 'net', 'http', 'child_process', 'worker_threads',
  'libp2p', '@libp2p/*', '@chainsafe/*', '@multiformats/*', 'ethers', 'onnxruntime-node', 'classic-level',
  'datastore-*', 'pino', 'prom-client', 'fastify', '@fastify/*', '@foundry-rs/*', 'commander', 'protobufjs',
];

/** fragments/ modules the policy floor may import at run time: pure ones (no fs, no onnxruntime). */
const PURE_FRAGMENTS = ['manifest', 'seeded-random', 'onnx/dtype', 'onnx/errors', 'stateful'];

function boundary(folder, allowed) {
  const forbidden = FOLDERS.filter((f) => f !== folder && !allowed.includes(f));
  const patterns = [{
    regex: `^(\\.\\./)+(${forbidden.join('|')})/`,
    message: `${folder}/ may import only from ${allowed.length ? allowed.map((f) => `${f}/`).join(', ') : 'nothing in the project'} (README, "Architecture").`,
  }];
  if (folder === 'policy') {
    patterns.push({ group: IO_PACKAGES, message: 'policy/ is pure decisions over plain data: no I/O, no native addons, no logger.' });
    patterns.push({
      regex: `^(\\.\\./)+fragments/(?!(${PURE_FRAGMENTS.join('|')})\\.js$)`,
      allowTypeImports: true,
      message: `policy/ may import at run time only the pure fragments/ modules (${PURE_FRAGMENTS.join(', ')}); others by type only.`,
    });
  }
  return {
    files: [`${folder}/**/*.ts`],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns }] },
  };
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.stryker-tmp/**', 'bench/results/**', 'test/fixtures/real/**', 'proto/generated/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  ...Object.entries(FLOORS).map(([folder, allowed]) => boundary(folder, allowed)),
);
