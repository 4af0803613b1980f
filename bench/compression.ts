/**
 * `npm run bench -- compression`: what weight quantization and wire compression save and cost (issue 18).
 * Weight bytes of int8 / int4 fragments against fp32 for a GPT-2-small-shaped synthetic model and the trained demo
 * model; greedy next-token agreement and perplexity of the quantized demo model against fp32 on held-out text;
 * the bytes and the token agreement of the demo model's hidden state crossing a cut as fp16 / int8 on the wire
 * against exact; and the peak RSS of quantizing a model of over 1B parameters (a child process, int8) against the
 * model's bytes. Goals: int8_bytes_ratio ≤ 0.27, int4_bytes_ratio ≤ 0.16, int8_token_agreement ≥ 0.99,
 * int4_token_agreement ≥ 0.95, wire_int8_bytes_ratio ≤ 0.27, quantize_rss_ratio ≤ 0.3.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { buildModel, parameterCount, type BuildOptions } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { resolveScheme } from '../fragments/quantize/scheme.js';
import { FragmentChain, languageModelFeeds } from '../fragments/quantize/measure.js';
import type { Manifest } from '../fragments/manifest.js';
import { compressWireTensor, WireEncoding, type WireEncodingCode } from '../net/exec/wire-compression.js';
import { ortToWire, wireToOrt } from '../net/exec/tensors.js';
import { demoCalibrationWindows, demoPrompts, DEMO_TARGET } from './compression-prompts.js';
import { CALIBRATION_SEED, CALIBRATION_WINDOWS } from '../fragments/quantize/calibrate.js';
import { reportResult } from './report.js';
import { wireWanFigures } from './compression-wan.js';

/** GPT-2 small's shape: 12 layers, d 768, 12 heads, vocab 50257, 1024 positions (124M parameters). */
const GPT2_SMALL: BuildOptions = { arch: 'gpt', layers: 12, dModel: 768, heads: 12, vocab: 50257, maxPositions: 1024, kvCache: true, seed: 1, name: 'gpt2-small-shaped' };
/** Over 1B parameters, weights in external data (as the fragment benchmark). */
const BIG: BuildOptions = { arch: 'gpt', layers: 24, dModel: 2048, heads: 16, vocab: 32000, kvCache: true, seed: 1, name: 'bench-gpt-1b' };
const PROMPTS = 64;
const PROMPT_LENGTH = 64;
const SEED = 11;

/** Runs the benchmark; `--keep` leaves the files in the temp folder, `--no-big` skips the 1B-parameter model, `--no-wan` the link figures. */
export async function compressionBench(flags: string[]): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-compression-'));
  const metrics: Record<string, number> = {};
  try {
    // 1. The GPT-2-small-shaped model: bytes (its synthetic weights are not a language model: no token figures).
    const gpt2 = path.join(work, 'gpt2.onnx');
    await writeModel(buildModel(GPT2_SMALL), gpt2);
    metrics.gpt2_parameters = parameterCount(GPT2_SMALL);
    for (const scheme of ['int8', 'int4'] as const) {
      const started = performance.now();
      const { manifest } = await fragmentModel(gpt2, path.join(work, `gpt2-${scheme}`), { parts: 2, quantize: { ...resolveScheme(scheme), measure: {} } });
      const q = manifest.quantization!;
      metrics[`${scheme}_bytes_ratio`] = q.weightBytes / q.sourceWeightBytes;
      metrics[`gpt2_${scheme}_logits_max_rel_error`] = q.figures!.outputs.find((o) => o.name === 'logits')!.maxRel;
      metrics[`gpt2_${scheme}_fragment_seconds`] = (performance.now() - started) / 1000;
    }
    await rm(gpt2);

    // 2. The trained demo model on held-out text.
    const prompts = demoPrompts(SEED, PROMPTS, PROMPT_LENGTH);
    const source = `held-out windows (seed ${SEED}, ${PROMPTS}×${PROMPT_LENGTH})`;
    for (const scheme of ['int8', 'int4'] as const) {
      const { manifest } = await fragmentModel(DEMO_TARGET, path.join(work, `demo-${scheme}`), { parts: 2, quantize: { ...resolveScheme(scheme), measure: { sequences: prompts, sequenceSource: source } } });
      const q = manifest.quantization!;
      const lm = q.figures!.languageModel!;
      metrics[`demo_${scheme}_bytes_ratio`] = q.weightBytes / q.sourceWeightBytes;
      metrics[`${scheme}_token_agreement`] = lm.tokenAgreement;
      metrics[`demo_${scheme}_perplexity`] = lm.quantizedPerplexity;
      metrics.demo_fp32_perplexity = lm.perplexity;
      metrics[`demo_${scheme}_perplexity_delta`] = lm.perplexityDelta;
    }
    // int4 with GPTQ calibrated on training chapters (models/demo/calibration.txt): the int4 figures above are plain rounding.
    const calibration = { sequences: demoCalibrationWindows(CALIBRATION_SEED, CALIBRATION_WINDOWS, PROMPT_LENGTH), source: 'models/demo/calibration.txt' };
    const gptq = await fragmentModel(DEMO_TARGET, path.join(work, 'demo-int4-gptq'), { parts: 2, quantize: { ...resolveScheme('int4'), calibration, measure: { sequences: prompts, sequenceSource: source } } });
    const gptqLm = gptq.manifest.quantization!.figures!.languageModel!;
    metrics.int4_rtn_token_agreement = metrics.int4_token_agreement;
    metrics.int4_token_agreement = gptqLm.tokenAgreement;
    metrics.demo_int4_gptq_perplexity_delta = gptqLm.perplexityDelta;
    metrics.demo_int4_gptq_bytes_ratio = gptq.manifest.quantization!.weightBytes / gptq.manifest.quantization!.sourceWeightBytes;

    // 3. Wire: the demo model cut in two at full precision, its crossing tensors sent exact / fp16 / int8.
    const exact = await fragmentModel(DEMO_TARGET, path.join(work, 'demo-fp32'), { parts: 2 });
    const wire = await wireFigures(exact.manifest, path.join(work, 'demo-fp32'), prompts);
    Object.assign(metrics, wire);
    // 3b. The same cut served by two supplier processes over a 100 Mbit/s, 20 ms link: decode tokens/s per wire encoding.
    let wanFailure = '';
    if (!flags.includes('--no-wan')) {
      try {
        Object.assign(metrics, await wireWanFigures(path.join(work, 'demo-fp32'), work, prompts[0]));
      } catch (err) {
        wanFailure = ` The link figures (wan_*) failed this run: ${(err as Error).message.split('\n')[0]}.`;
        process.stderr.write(`compression: ${wanFailure}\n`);
      }
    }

    // 4. Peak RSS of quantizing a model of over 1B parameters, in a child process.
    if (!flags.includes('--no-big')) {
      const big = path.join(work, 'big.onnx');
      const written = await writeModel(buildModel(BIG), big, { externalData: 'always' });
      const modelBytes = written.model.bytes + (written.data?.bytes ?? 0);
      const child = await runChild(big, path.join(work, 'big-int8'), 'int8');
      metrics.big_parameters = parameterCount(BIG);
      metrics.big_model_bytes = modelBytes;
      metrics.quantize_peak_rss_bytes = child.maxRssBytes;
      metrics.quantize_rss_ratio = child.maxRssBytes / modelBytes;
      metrics.quantize_seconds = child.seconds;
      metrics.big_int8_bytes_ratio = child.weightBytes / child.sourceWeightBytes;
    }
    reportResult('compression', metrics, `int8/int4 weight-only block quantization (MatMulNBits, GatherBlockQuantized; defaults: int8 block 128; int4 block 64, the LM head block 32 with a zero point per block, the position table int8) of fragments cut in 2. `
      + `*_bytes_ratio: quantized ÷ fp32 weight bytes of the fragments (int8_/int4_bytes_ratio: the GPT-2-small-shaped synthetic model, ${GPT2_SMALL.layers}L d${GPT2_SMALL.dModel} vocab ${GPT2_SMALL.vocab}). `
      + `*_token_agreement: greedy next token of the quantized demo model = fp32's, over ${PROMPTS}×${PROMPT_LENGTH} held-out positions; perplexity over the same windows; int4_token_agreement is int4's default (\`--quantize int4 --calibrate\`) with GPTQ calibrated on ${CALIBRATION_WINDOWS}×${PROMPT_LENGTH} tokens of training chapters (models/demo/calibration.txt), int4_rtn_token_agreement the same bytes rounded to nearest. `
      + 'wire_*: the demo model\'s tensors crossing its cut (hidden state and attention mask helpers) sent as an exec session sends them (fp16 or int8 blocks of 64 with fp16 scales; a tensor of at most 16 distinct values, such as a mask of 0 / -3.4e38, as an exact palette of 1-4 bits per value), bytes ÷ exact, and the token agreement with them decoded. '
      + `quantize_rss_ratio: peak RSS of a child quantizing (int8, no measuring) gpt ${BIG.layers}L d${BIG.dModel} (external data) ÷ the model's bytes. `
      + 'Goals: int8_bytes_ratio <= 0.27, int4_bytes_ratio <= 0.16, int8_token_agreement >= 0.99, int4_token_agreement >= 0.95, wire_int8_bytes_ratio <= 0.27, quantize_rss_ratio <= 0.3. '
      + `wan_*: the demo model cut in two, two supplier processes and the client (gridpipe generate --wire-encoding, greedy, a 64-token held-out prompt, 24 tokens, 2 rounds) in their own network namespaces, every connection over an emulated link of 10 ms one way and 100 Mbit/s (user-space forwarder: no netem here); decode tokens/s (first token line to last) per wire encoding, links_as_asked = every link used it, token_agreement with the exact run.${wanFailure}`);
  } finally {
    if (!flags.includes('--keep')) await rm(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

/** Bytes and token agreement of the tensors crossing the demo model's cut, per wire encoding. */
async function wireFigures(manifest: Manifest, dir: string, prompts: number[][]): Promise<Record<string, number>> {
  const first = await ort.InferenceSession.create(path.join(dir, manifest.fragments[0].file));
  const second = await ort.InferenceSession.create(path.join(dir, manifest.fragments[1].file));
  const chain = await FragmentChain.open(manifest, dir);
  const out: Record<string, number> = {};
  try {
    const encodings: [string, WireEncodingCode][] = [['fp16', WireEncoding.FP16], ['int8', WireEncoding.INT8_BLOCKS]];
    const agree: Record<string, number> = { fp16: 0, int8: 0 };
    const bytes: Record<string, number> = { exact: 0, fp16: 0, int8: 0 };
    let positions = 0;
    for (const ids of prompts) {
      const feeds = languageModelFeeds(manifest, ids)!;
      const reference = (await chain.run(feeds)).logits;
      const pick = (names: string[], from: Record<string, ort.Tensor>): Record<string, ort.Tensor> => Object.fromEntries(names.map((n) => [n, from[n]]));
      const firstOut = await first.run(pick(manifest.fragments[0].inputs.map((i) => i.name), feeds));
      const crossing = manifest.fragments[1].inputs.filter((i) => i.from === 0).map((i) => i.name);
      for (const [name, code] of encodings) {
        const sent: Record<string, ort.Tensor> = {};
        for (const n of crossing) {
          const t = firstOut[n];
          if (t.type !== 'float32') {
            sent[n] = t;
            const size = (t.data as ArrayBufferView).byteLength;
            bytes[name] += size;
            if (name === 'fp16') bytes.exact += size;
            continue;
          }
          // As an exec session sends it: compressed when fp16 can carry it (else exact), decoded on receipt.
          const wired = compressWireTensor(ortToWire(n, t), code);
          bytes[name] += wired.data.byteLength;
          if (name === 'fp16') bytes.exact += (t.data as Float32Array).byteLength;
          sent[n] = wireToOrt(wired);
        }
        const secondFeeds = { ...pick(manifest.fragments[1].inputs.filter((i) => i.from === 'graph').map((i) => i.name), feeds), ...sent };
        const logits = (await second.run(secondFeeds)).logits;
        agree[name] += countAgreeing(reference, logits);
      }
      positions += ids.length;
    }
    out.wire_exact_bytes_per_prompt = bytes.exact / prompts.length;
    out.wire_fp16_bytes_ratio = bytes.fp16 / bytes.exact;
    out.wire_int8_bytes_ratio = bytes.int8 / bytes.exact;
    out.wire_fp16_token_agreement = agree.fp16 / positions;
    out.wire_int8_token_agreement = agree.int8 / positions;
  } finally {
    await first.release();
    await second.release();
    await chain.release();
  }
  return out;
}

/** Positions where two logits tensors [1, T, vocab] have the same argmax. */
function countAgreeing(a: ort.Tensor, b: ort.Tensor): number {
  const vocab = a.dims[a.dims.length - 1];
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let same = 0;
  for (let t = 0; t < x.length / vocab; t++) {
    let bx = 0;
    let by = 0;
    for (let i = 1; i < vocab; i++) {
      if (x[t * vocab + i] > x[t * vocab + bx]) bx = i;
      if (y[t * vocab + i] > y[t * vocab + by]) by = i;
    }
    if (bx === by) same++;
  }
  return same;
}

function runChild(modelPath: string, outDir: string, scheme: string): Promise<{ seconds: number; maxRssBytes: number; weightBytes: number; sourceWeightBytes: number }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'compression-child.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, modelPath, outDir, '8', scheme], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`quantizing child exited with ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!));
    });
  });
}
