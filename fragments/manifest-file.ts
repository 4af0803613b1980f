/** Reading a manifest from disk (the schema and its pure checks are in manifest.ts, which does no I/O). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FragmentError } from './onnx/errors.js';
import { checkManifest, MANIFEST_FILE, type Manifest } from './manifest.js';

/** Reads and checks a manifest from a fragment folder (or a path to manifest.json). */
export async function readManifest(dirOrFile: string): Promise<{ manifest: Manifest; dir: string }> {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new FragmentError('BAD_MANIFEST', `${file}: no manifest here (expected the folder written by "gridpipe model fragment")`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new FragmentError('BAD_MANIFEST', `${file}: not valid JSON (${(err as Error).message})`);
  }
  return { manifest: checkManifest(parsed, file), dir: path.dirname(file) };
}
