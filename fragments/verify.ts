/**
 * The truth test: chaining the fragments must compute what the whole model computes. Checks each
 * fragment file against its CID, runs the whole model and the fragment chain on the same seeded
 * inputs in onnxruntime, and reports the largest absolute and relative difference per output.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { type Manifest } from './manifest.js';
import { readManifest } from './manifest-file.js';
import { cidOfFile } from './cid.js';
import { FragmentError } from './onnx/errors.js';
import { readModel } from './onnx/read.js';
import { indexGraph } from './analysis/graph.js';
import { inferTensorInfo } from './analysis/infer.js';
import { runExpertGroup } from './moe/run-layer.js';
import { describeSampleInputs, integerInputBounds, sampleInputs } from './sample-inputs.js';

export interface VerifyOptions {
  dims?: Record<string, number>;
  shapes?: Record<string, number[]>;
  /** Largest relative difference allowed (max |a-b| over max |a|), default 1e-4. */
  tolerance?: number;
  seed?: number;
  /** The whole model, when it is not where the manifest says. */
  modelPath?: string;
  onProgress?: (step: string) => void;
}

export interface OutputDifference { name: string; maxAbs: number; maxRel: number; ok: boolean }
export interface VerifyReport {
  ok: boolean;
  tolerance: number;
  dims: Record<string, number>;
  inputs: { name: string; dtype: string; dims: readonly number[] }[];
  outputs: OutputDifference[];
}

/** Checks every fragment file (and its external data) against the CIDs in the manifest. */
export async function checkFragmentFiles(manifest: Manifest, dir: string): Promise<void> {
  for (const f of manifest.fragments) {
    for (const file of [{ file: f.file, cid: f.cid }, ...(f.data ? [f.data] : [])]) {
      const full = path.join(dir, file.file);
      if (!existsSync(full)) throw new FragmentError('VERIFY_FAILED', `fragment ${f.index}: ${file.file} is missing from ${dir}`);
      const cid = await cidOfFile(full);
      if (cid !== file.cid) throw new FragmentError('VERIFY_FAILED', `fragment ${f.index}: ${file.file} does not match its CID (${cid} != ${file.cid})`);
    }
  }
}

/** Runs the verification (see module doc). */
export async function verifyFragments(dir: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { manifest, dir: base } = await readManifest(dir);
  const tolerance = options.tolerance ?? 1e-4;
  options.onProgress?.('checking fragment CIDs');
  await checkFragmentFiles(manifest, base);
  const modelPath = options.modelPath ?? path.resolve(base, manifest.source.file);
  if (!existsSync(modelPath)) throw new FragmentError('BAD_ARGUMENT', `the whole model ${modelPath} is missing; pass --model FILE`);

  const doc = readModel(modelPath);
  const index = indexGraph(doc);
  const bounds = integerInputBounds(index, inferTensorInfo(doc));
  const { feeds, dims } = sampleInputs(manifest.model.inputs, { dims: options.dims, shapes: options.shapes, seed: options.seed, bounds });

  options.onProgress?.('running the whole model');
  const whole = await runModel(modelPath, feeds, (err) => sampleInputsDoNotFit('the whole model', feeds, dims, err));

  const env: Record<string, ort.Tensor> = { ...feeds };
  for (const f of manifest.fragments) {
    // A cut mixture-of-experts layer runs as one: router, the chosen experts on their tokens, the weighted sum.
    if (f.moe) {
      if (f.moe.role === 'router') {
        const group = manifest.expertGroups[f.moe.group];
        const run = await runExpertGroup(manifest, group, env, { run: (i, fragmentFeeds) => runModel(path.join(base, manifest.fragments[i].file), fragmentFeeds, (err) => new FragmentError('VERIFY_FAILED', `fragment ${i} failed where the whole model ran: ${firstLine(err)}`, { cause: err })) });
        env[group.output!] = run.output;
      }
      continue;
    }
    options.onProgress?.(`running fragment ${f.index + 1}/${manifest.fragments.length}`);
    const fragmentFeeds: Record<string, ort.Tensor> = {};
    for (const input of f.inputs) {
      const t = env[input.name];
      if (!t) throw new FragmentError('VERIFY_FAILED', `fragment ${f.index} needs "${input.name}", which nothing before it produced`);
      fragmentFeeds[input.name] = t;
    }
    Object.assign(env, await runModel(path.join(base, f.file), fragmentFeeds, (err) => new FragmentError('VERIFY_FAILED',
      `fragment ${f.index} failed where the whole model ran: ${firstLine(err)}`, { cause: err })));
  }

  const outputs = manifest.model.outputs.map((o) => compare(o.name, whole[o.name], env[o.name], tolerance));
  return {
    ok: outputs.every((o) => o.ok),
    tolerance,
    dims,
    inputs: Object.entries(feeds).map(([name, t]) => ({ name, dtype: t.type, dims: t.dims })),
    outputs,
  };
}

/** The first line of an error's message, without onnxruntime's source location and C++ signature. */
function firstLine(err: unknown): string {
  const line = ((err as Error)?.message ?? String(err)).split('\n', 1)[0].trim();
  return line.replace(/\/\S+\.(?:h|cc|cpp):\d+ \S+\([^)]*\) /, '');
}

/**
 * onnxruntime refused to run on the sample inputs (a Reshape to a fixed size, a Pad whose pads come from an
 * input...): the default dims do not fit the graph. Says which inputs were used and how to give others.
 */
function sampleInputsDoNotFit(what: string, feeds: Record<string, ort.Tensor>, dims: Record<string, number>, err: unknown): FragmentError {
  const reason = firstLine(err);
  const symbols = Object.entries(dims).map(([k, v]) => `${k}=${v}`).join(', ');
  return new FragmentError('SAMPLE_INPUTS_DO_NOT_FIT',
    `${what} failed on the sample inputs ${describeSampleInputs(feeds)}${symbols ? ` (dims ${symbols})` : ''}: ${reason}; `
    + 'give the inputs shapes that fit with --shape NAME=D1,D2,... (or symbolic dims with --dim SYMBOL=N)', { cause: err });
}

/** Runs `file` on `feeds`; a failure of the run itself (not of loading the model) becomes `onRunError`'s error. */
async function runModel(file: string, feeds: Record<string, ort.Tensor>, onRunError: (err: unknown) => Error): Promise<Record<string, ort.Tensor>> {
  // Fatal only: a failed run is reported once, by the error it throws, not also by onnxruntime's own log line.
  const session = await ort.InferenceSession.create(file, { logSeverityLevel: 4 });
  try {
    try {
      return await session.run(feeds);
    } catch (err) {
      throw onRunError(err);
    }
  } finally {
    await session.release();
  }
}

function compare(name: string, expected: ort.Tensor | undefined, actual: ort.Tensor | undefined, tolerance: number): OutputDifference {
  if (!expected || !actual) return { name, maxAbs: Number.POSITIVE_INFINITY, maxRel: Number.POSITIVE_INFINITY, ok: false };
  const sameDims = expected.dims.length === actual.dims.length && expected.dims.every((d, i) => d === actual.dims[i]);
  if (!sameDims || expected.type !== actual.type) return { name, maxAbs: Number.POSITIVE_INFINITY, maxRel: Number.POSITIVE_INFINITY, ok: false };
  const a = expected.data as ArrayLike<number | bigint>;
  const b = actual.data as ArrayLike<number | bigint>;
  let maxAbs = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]);
    const y = Number(b[i]);
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) maxAbs = Number.POSITIVE_INFINITY;
      continue;
    }
    if (x === y) { scale = Math.max(scale, Math.abs(x)); continue; }
    maxAbs = Math.max(maxAbs, Math.abs(x - y));
    scale = Math.max(scale, Math.abs(x));
  }
  const exact = !expected.type.startsWith('float');
  const maxRel = maxAbs === 0 ? 0 : scale > 0 ? maxAbs / scale : Number.POSITIVE_INFINITY;
  return { name, maxAbs, maxRel, ok: exact ? maxAbs === 0 : maxRel <= tolerance };
}
