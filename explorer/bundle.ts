/**
 * Builds the explorer page at `npm run build`: esbuild bundles the page's TypeScript (explorer/page/main.ts,
 * with uPlot and its stylesheet) into dist/explorer/page/app.js and app.css, and copies index.html beside
 * them. Everything the page loads is in that folder: no CDN, works offline.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** Bundles the page from the sources in `root`/explorer/page into `outDir`. */
export async function bundlePage(root: string, outDir: string): Promise<void> {
  const src = path.join(root, 'explorer', 'page');
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: { app: path.join(src, 'main.ts') }, outdir: outDir, bundle: true, format: 'esm', platform: 'browser',
    target: ['es2022'], minify: true, sourcemap: false, legalComments: 'none', logLevel: 'warning', absWorkingDir: root,
  });
  copyFileSync(path.join(src, 'index.html'), path.join(outDir, 'index.html'));
}

// `node dist/explorer/bundle.js` (the build script): the repository is two folders up from dist/explorer.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  await bundlePage(root, path.join(root, 'dist', 'explorer', 'page'));
}
