/**
 * A cheating supplier, for tests and the `verify` bench only (issue 21): a real supplier process started with
 * the environment variable GRIDPIPE_TEST_FAULT set returns wrong outputs the way a dishonest supplier would,
 * so verification is tested against the real thing, never a mock. Not a CLI option and not documented for
 * users; unset (the default) it changes nothing.
 *
 * - `noise`: adds Gaussian noise of 1 % of each output row's RMS to the span's float outputs.
 * - `swap`: returns another fragment's outputs: the span's float outputs are replaced by the span's input of
 *   the same shape (what the fragment before it produced), as if the span had not run.
 * - `skip-layer`: the last fragment of the span passes its input through in place of its output (one layer
 *   skipped when a fragment is a layer); its KV cache still advances.
 * - `int8`: loads each fragment with its float weights rounded to int8 (per tensor, symmetric) while the
 *   records still advertise the fp32 fragment's CID.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { readModel } from '../../fragments/onnx/read.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { loadTensorBytesSync } from '../../fragments/onnx/tensor-bytes.js';
import { seededRandom } from '../../fragments/seeded-random.js';

export type TestFault = 'noise' | 'swap' | 'skip-layer' | 'int8';
const FAULTS: readonly TestFault[] = ['noise', 'swap', 'skip-layer', 'int8'];

/** The fault this process was started with (GRIDPIPE_TEST_FAULT), or undefined. */
export function testFault(env: NodeJS.ProcessEnv = process.env): TestFault | undefined {
  const v = env.GRIDPIPE_TEST_FAULT;
  return v && (FAULTS as readonly string[]).includes(v) ? (v as TestFault) : undefined;
}

const random = seededRandom(2121);

/** Gaussian noise of `share` of each row's RMS added to a float tensor (a new tensor). */
function withNoise(t: ort.Tensor, share: number): ort.Tensor {
  const src = t.data as Float32Array;
  const out = new Float32Array(src.length);
  const cols = t.dims.length ? t.dims[t.dims.length - 1] : src.length;
  for (let r = 0; r < src.length; r += cols) {
    let sq = 0;
    for (let c = 0; c < cols; c++) sq += src[r + c] * src[r + c];
    const rms = Math.sqrt(sq / cols);
    for (let c = 0; c < cols; c++) {
      const g = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      out[r + c] = src[r + c] + share * rms * g;
    }
  }
  return new ort.Tensor('float32', out, t.dims);
}

function sameShape(a: ort.Tensor, b: ort.Tensor): boolean {
  return a.type === b.type && a.dims.length === b.dims.length && a.dims.every((d, i) => d === b.dims[i]);
}

/** Replaces each float output by a same-shaped float tensor from `from` (none: unchanged). */
function passThrough(outputs: Map<string, ort.Tensor> | Record<string, ort.Tensor>, from: Iterable<ort.Tensor>): void {
  const candidates = [...from].filter((t) => t.type === 'float32');
  const entries = outputs instanceof Map ? [...outputs] : Object.entries(outputs);
  for (const [name, t] of entries) {
    if (t.type !== 'float32') continue;
    const twin = candidates.find((c) => sameShape(c, t));
    if (!twin) continue;
    if (outputs instanceof Map) outputs.set(name, twin);
    else outputs[name] = twin;
  }
}

/**
 * Applied by SpanProgram.run after the span's last fragment ran: `feeds` were that fragment's inputs,
 * `spanInputs` the span's inputs from the client, `outputs` what the span returns (changed in place).
 */
export function applyOutputFault(fault: TestFault | undefined, outputs: Map<string, ort.Tensor>, lastFeeds: Record<string, ort.Tensor>, spanInputs: Map<string, ort.Tensor>): void {
  if (fault === 'noise') {
    for (const [name, t] of outputs) if (t.type === 'float32') outputs.set(name, withNoise(t, 0.01));
  } else if (fault === 'swap') {
    passThrough(outputs, spanInputs.values());
  } else if (fault === 'skip-layer') {
    passThrough(outputs, Object.values(lastFeeds));
  }
}

/** The fragment file to load: with the int8 fault, a copy of `file` whose float weights are rounded to int8. */
export async function faultyFragmentFile(fault: TestFault | undefined, file: string): Promise<string> {
  if (fault !== 'int8') return file;
  const doc = readModel(file);
  for (const w of doc.graph.initializer) {
    if (w.header.dataType !== 1 || !w.bytes) continue;
    const raw = loadTensorBytesSync(w.bytes);
    const f = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    let max = 0;
    for (const v of f) max = Math.max(max, Math.abs(v));
    if (max === 0 || f.length < 16) continue;
    const step = max / 127;
    for (let i = 0; i < f.length; i++) f[i] = Math.round(f[i] / step) * step;
    w.bytes = { kind: 'inline', bytes: new Uint8Array(f.buffer) };
  }
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'gridpipe-int8-')), path.basename(file));
  await writeModel(doc, out);
  return out;
}
