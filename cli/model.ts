/** `gridpipe model …`: build, inspect, fragment and verify ONNX models. */
import { Command, Option } from 'commander';
import path from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { ARCHS, type Arch } from '../fragments/builder/options.js';
import { byteSize, dimAssignment, nonNegativeInt, positiveInt, positiveNumber, shapeAssignment } from './args.js';
import { createProgress, formatBytes } from './progress.js';
import { UsageError } from './errors.js';
import { promptSetFromText } from './quantize-prompts.js';
import type { FragmentOptions } from '../fragments/fragment.js';
import type { Manifest } from '../fragments/manifest.js';

// The fragments toolkit (protobufjs, the ONNX schema, onnxruntime for verify) loads in each action, not with the command tree.

const print = (line = ''): void => { process.stdout.write(`${line}\n`); };
const printJson = (value: unknown): void => print(JSON.stringify(value, null, 2));

/** Registers the `model` command group on the program. */
export function modelCommand(): Command {
  const model = new Command('model').description('Build, inspect, fragment and verify ONNX models');

  model.command('build')
    .description('Write a synthetic model with seeded weights (for tests, the devnet and benchmarks; not a trained model)')
    .addOption(new Option('--arch <arch>', 'architecture').choices(ARCHS as string[]).makeOptionMandatory())
    .option('--layers <n>', 'blocks', positiveInt)
    .option('--d-model <n>', 'hidden size', positiveInt)
    .option('--heads <n>', 'attention heads', positiveInt)
    .option('--kv-heads <n>', 'key/value heads (grouped-query attention)', positiveInt)
    .option('--vocab <n>', 'vocabulary size', positiveInt)
    .option('--d-ff <n>', 'MLP hidden size', positiveInt)
    .option('--max-positions <n>', 'positions covered by the position tables', positiveInt)
    .option('--kv-cache', 'add past_key_values.N.* inputs and present.N.* outputs', false)
    .option('--experts <n>', 'experts per mixture-of-experts block (gpt-moe)', positiveInt)
    .option('--top-k <n>', 'experts per token (gpt-moe)', positiveInt)
    .option('--seed <n>', 'weight seed', nonNegativeInt)
    .option('--name <name>', 'model name')
    .requiredOption('--out <file>', 'output .onnx file')
    .option('--json', 'machine-readable output', false)
    .action(async (o: Record<string, unknown>) => {
      const { buildModel, parameterCount } = await import('../fragments/builder/index.js');
      const { writeModel } = await import('../fragments/onnx/write.js');
      const options = {
        arch: o.arch as Arch, layers: o.layers as number | undefined, dModel: o.dModel as number | undefined,
        heads: o.heads as number | undefined, kvHeads: o.kvHeads as number | undefined, vocab: o.vocab as number | undefined,
        dFf: o.dFf as number | undefined, maxPositions: o.maxPositions as number | undefined, kvCache: Boolean(o.kvCache),
        experts: o.experts as number | undefined, topK: o.topK as number | undefined, seed: o.seed as number | undefined,
        name: o.name as string | undefined,
      };
      const doc = buildModel(options);
      const progress = createProgress('writing', Boolean(o.json));
      const out = path.resolve(o.out as string);
      const written = await writeModel(doc, out, { onProgress: (d, t) => progress.update(d, t) });
      progress.stop();
      const result = {
        file: out, bytes: written.model.bytes, data: written.data ? { file: written.data.path, bytes: written.data.bytes } : undefined,
        parameters: parameterCount(options), arch: options.arch, kvCache: options.kvCache,
        inputs: doc.graph.input.map((i) => i.name), outputs: doc.graph.output.map((x) => x.name),
      };
      if (o.json) return printJson(result);
      print(`wrote ${out} (${formatBytes(written.model.bytes)}${written.data ? ` + ${formatBytes(written.data.bytes)} external data` : ''})`);
      print(`${options.arch}, ${result.parameters.toLocaleString('en-US')} parameters, synthetic seeded weights (not a trained model)`);
      print(`inputs:  ${result.inputs.join(', ')}`);
      print(`outputs: ${result.outputs.join(', ')}`);
    });

  model.command('inspect')
    .description('Show a model\'s ops, parameters, FLOPs and candidate cuts (or a fragment folder\'s manifest)')
    .argument('<model>', '.onnx file or fragment folder')
    .option('--dim <symbol=value>', 'size of a symbolic dim for costing (repeatable)', dimAssignment, {})
    .option('--top <n>', 'candidate cuts to list', positiveInt, 10)
    .option('--json', 'machine-readable output', false)
    .action(async (target: string, o: { dim: Record<string, number>; top: number; json: boolean }) => {
      if (existsSync(target) && statSync(target).isDirectory()) {
        const { readManifest } = await import('../fragments/manifest-file.js');
        const { manifest } = await readManifest(target);
        if (o.json) return printJson(manifest);
        print(`${manifest.name}: ${manifest.fragments.length} fragments of ${manifest.source.file}`);
        for (const f of manifest.fragments) {
          print(`  #${f.index} ${f.file} ${f.cid}`);
          print(`     ${f.nodeCount} nodes, ${formatBytes(f.weightBytes)} weights, ${(f.flops / 1e6).toFixed(1)} MFLOP; in: ${f.inputs.map((i) => i.name).join(', ')}; out: ${f.outputs.map((x) => x.name).join(', ')}`);
        }
        return undefined;
      }
      const { inspectModel } = await import('../fragments/inspect.js');
      const r = inspectModel(target, { dims: o.dim, top: o.top });
      if (o.json) return printJson(r);
      print(`${r.name || path.basename(target)}  (IR ${r.irVersion}, opsets ${Object.entries(r.opsets).map(([d, v]) => `${d} ${v}`).join(', ')}${r.producer ? `, from ${r.producer}` : ''})`);
      print(`inputs:  ${r.inputs.join(', ')}`);
      print(`outputs: ${r.outputs.join(', ')}`);
      print(`${r.nodes} nodes, ${r.parameters.toLocaleString('en-US')} parameters (${formatBytes(r.weightBytes)}), ${(r.flops / 1e9).toFixed(3)} GFLOP at ${Object.entries(r.costDims).map(([k, v]) => `${k}=${v}`).join(' ') || 'fixed shapes'}`);
      print(`ops: ${Object.entries(r.ops).sort((a, b) => b[1] - a[1]).map(([op, n]) => `${op}×${n}`).join(' ')}`);
      if (r.subgraphNodes.length) print(`kept whole (subgraphs): ${r.subgraphNodes.join(', ')}`);
      if (r.statefulPairs) print(`KV-cache pairs: ${r.statefulPairs}`);
      print(`${r.cutPoints} possible cut points; cheapest:`);
      for (const c of r.candidateCuts) print(`  before ${c.before}: ${formatBytes(c.crossBytes)} cross, ${(c.loadBefore * 100).toFixed(1)}% of the load before it`);
      return undefined;
    });

  model.command('fragment')
    .description('Cut a model into content-addressed fragments plus manifest.json (with the tokenizer and generation config beside it)')
    .argument('<model>', '.onnx file, or an export folder (model.onnx, tokenizer.json, tokenizer_config.json, generation_config.json)')
    .option('--parts <k>', 'number of fragments', positiveInt)
    .option('--max-bytes <n>', 'largest weight bytes per fragment (e.g. 512MB, 2GiB)', byteSize)
    .requiredOption('--out <dir>', 'output folder')
    .option('--dim <symbol=value>', 'size of a symbolic dim for costing (repeatable)', dimAssignment, {})
    .option('--tokenizer <file>', 'Hugging Face tokenizer.json to ship with the fragments (a tokenizer_config.json beside it goes too; default: the one beside the model)')
    .option('--experts-per-fragment <n>', 'cut each mixture-of-experts layer into a router fragment and fragments of N experts, for selective activation (--parts then counts dense fragments)', positiveInt)
    .addOption(new Option('--quantize <scheme>', 'store MatMul/Gemm/Gather weights block-quantized (weight-only; the error is measured into the manifest)').choices(['int8', 'int4']))
    .addOption(new Option('--block <n>', 'weights per quantization block, every weight alike (default: int8 128; int4 64, LM head 32 with zero points, position table int8)').choices(['32', '64', '128']))
    .option('--text <file>', 'with --quantize: text whose seeded windows measure token agreement and perplexity (default: seeded random token ids)')
    .option('--calibrate <file>', 'with --quantize: text (not the --text one) whose seeded windows calibrate GPTQ: MatMul/Gemm weights are rounded to minimise their layer output error (language models that fit in memory)')
    .option('--json', 'machine-readable output', false)
    .action(async (file: string, o: { parts?: number; maxBytes?: number; out: string; dim: Record<string, number>; tokenizer?: string; quantize?: string; block?: string; text?: string; calibrate?: string; expertsPerFragment?: number; json: boolean }) => {
      const { fragmentModel } = await import('../fragments/fragment.js');
      const { checkTokenizerFiles } = await import('../gateway/tokenizers/check.js');
      const quantize = await quantizeOption(file, o);
      const progress = createProgress('fragmenting', o.json);
      const result = await fragmentModel(file, o.out, {
        parts: o.parts, maxBytes: o.maxBytes, dims: o.dim, tokenizer: o.tokenizer, checkTokenizer: checkTokenizerFiles, onProgress: (d, t) => progress.update(d, t), quantize,
        expertsPerFragment: o.expertsPerFragment,
      });
      progress.stop();
      const { manifestCid } = result;
      if (o.json) return printJson({ dir: path.resolve(o.out), manifestCid, manifest: result.manifest });
      const m = result.manifest;
      print(`${m.name}: ${m.fragments.length} fragments in ${path.resolve(o.out)} (manifest ${manifestCid})`);
      for (const f of m.fragments) {
        const role = f.moe ? (f.moe.role === 'router' ? `, router of MoE layer ${f.moe.group}` : `, experts ${f.moe.experts?.join(',')} of MoE layer ${f.moe.group}`) : '';
        print(`  #${f.index} ${f.cid}  ${f.nodeCount} nodes, ${formatBytes(f.weightBytes)} weights, ${(f.flops / 1e6).toFixed(1)} MFLOP${f.stateful.length ? `, ${f.stateful.length} KV-cache pairs` : ''}${role}`);
      }
      print(`bytes crossing each cut: ${m.plan.crossBytes.map(formatBytes).join(', ') || 'none'}`);
      if (m.tokenizer.kind === 'hf') print(`tokenizer: ${[m.tokenizer.file, m.tokenizer.config?.file].filter(Boolean).join(' + ')}`);
      if (m.generation) print(`generation defaults: ${JSON.stringify(m.generation)}`);
      if (m.quantization) for (const line of describeQuantization(m.quantization)) print(line);
      return undefined;
    });

  model.command('verify')
    .description('Run the whole model and the chained fragments on the same seeded inputs and compare')
    .argument('<dir>', 'fragment folder (with manifest.json)')
    .option('--dim <symbol=value>', 'size of a symbolic dim (repeatable)', dimAssignment, {})
    .option('--shape <input=d1,d2,...>', 'whole shape of an input (repeatable)', shapeAssignment, {})
    .option('--tolerance <t>', 'largest relative difference allowed', positiveNumber, 1e-4)
    .option('--seed <n>', 'input seed', nonNegativeInt, 1234)
    .option('--model <file>', 'the whole model, if not where the manifest says')
    .option('--text <file>', 'quantized fragments: text whose seeded windows measure token agreement and perplexity (as given to model fragment)')
    .option('--json', 'machine-readable output', false)
    .action(async (dir: string, o: { dim: Record<string, number>; shape: Record<string, number[]>; tolerance: number; seed: number; model?: string; text?: string; json: boolean }, command: Command) => {
      const { readManifest } = await import('../fragments/manifest-file.js');
      const { manifest, dir: base } = await readManifest(dir);
      if (manifest.quantization) return verifyQuantizedCommand(base, o, command.getOptionValueSource('seed') === 'cli');
      if (o.text) throw new UsageError('--text applies to quantized fragments only');
      const { verifyFragments } = await import('../fragments/verify.js');
      const report = await verifyFragments(dir, {
        dims: o.dim, shapes: o.shape, tolerance: o.tolerance, seed: o.seed, modelPath: o.model,
        onProgress: o.json ? undefined : (step) => process.stderr.write(`${step}…\n`),
      });
      if (o.json) printJson(report);
      else {
        print(`inputs: ${report.inputs.map((i) => `${i.name}[${i.dims.join('×')}]`).join(', ')}`);
        for (const out of report.outputs) {
          print(`${out.ok ? 'ok  ' : 'FAIL'} ${out.name}: max abs diff ${out.maxAbs.toExponential(3)}, max rel diff ${out.maxRel.toExponential(3)}`);
        }
        print(report.ok ? `verified: fragments match the whole model (tolerance ${report.tolerance})` : `mismatch beyond tolerance ${report.tolerance}`);
      }
      if (!report.ok) process.exitCode = 1;
    });

  return model;
}

/** The --quantize/--block/--text choice of `model fragment`, checked (bad combinations exit 2). */
async function quantizeOption(file: string, o: { quantize?: string; block?: string; text?: string; calibrate?: string; tokenizer?: string }): Promise<FragmentOptions['quantize']> {
  if (!o.quantize) {
    if (o.block) throw new UsageError('--block needs --quantize int8|int4');
    if (o.text) throw new UsageError('--text needs --quantize int8|int4');
    if (o.calibrate) throw new UsageError('--calibrate needs --quantize int8|int4');
    return undefined;
  }
  const { resolveScheme } = await import('../fragments/quantize/scheme.js');
  const { DEFAULT_MEASURE_SEED } = await import('../fragments/quantize/measure.js');
  const scheme = resolveScheme(o.quantize, o.block === undefined ? undefined : Number(o.block));
  if (!o.text && !o.calibrate) return scheme;
  const { modelFileOf } = await import('../fragments/model-folder.js');
  const tokenizer = o.tokenizer ?? path.join(path.dirname(modelFileOf(file)), 'tokenizer.json');
  const prompts = o.text ? await promptSetFromText(o.text, tokenizer, DEFAULT_MEASURE_SEED) : undefined;
  const { CALIBRATION_SEED, CALIBRATION_WINDOWS } = await import('../fragments/quantize/calibrate.js');
  const calibration = o.calibrate ? await promptSetFromText(o.calibrate, tokenizer, CALIBRATION_SEED, '--calibrate', CALIBRATION_WINDOWS) : undefined;
  return {
    ...scheme,
    ...(prompts ? { measure: { sequences: prompts.ids, sequenceSource: prompts.source } } : {}),
    ...(calibration ? { calibration: { sequences: calibration.ids, source: calibration.source } } : {}),
  };
}

/** Lines describing a quantized manifest: bytes, and the measured error. */
function describeQuantization(q: NonNullable<Manifest['quantization']>): string[] {
  const roles = Object.entries(q.roles ?? {}).map(([role, p]) => `, ${role} int${p.bits} blocks of ${p.block}${p.asymmetric ? ' with zero points' : ''}`).join('');
  const lines = [`quantized ${q.scheme} (blocks of ${q.block}${roles}): ${formatBytes(q.sourceWeightBytes)} → ${formatBytes(q.weightBytes)} of weights (${(q.weightBytes / q.sourceWeightBytes).toFixed(3)}×)`];
  for (const out of q.figures?.outputs ?? []) lines.push(`  ${out.name}: max abs error ${out.maxAbs.toExponential(3)}, mean ${out.meanAbs.toExponential(3)}, relative ${out.maxRel.toExponential(3)}`);
  const lm = q.figures?.languageModel;
  if (lm) lines.push(`  next-token agreement ${(lm.tokenAgreement * 100).toFixed(2)}% over ${lm.positions} positions; perplexity ${lm.perplexity.toFixed(2)} → ${lm.quantizedPerplexity.toFixed(2)} (${lm.source})`);
  return lines;
}

/** `model verify` on quantized fragments: the figures again, compared with the manifest's, and the scheme's bound. */
async function verifyQuantizedCommand(dir: string, o: { dim: Record<string, number>; shape: Record<string, number[]>; seed: number; model?: string; text?: string; json: boolean }, seedGiven: boolean): Promise<void> {
  const { verifyQuantized } = await import('../fragments/quantize/verify-quantized.js');
  const { DEFAULT_MEASURE_SEED } = await import('../fragments/quantize/measure.js');
  const sequences = o.text ? await promptSetFromText(o.text, path.join(dir, 'tokenizer.json'), DEFAULT_MEASURE_SEED) : undefined;
  const report = await verifyQuantized(dir, {
    dims: o.dim, shapes: Object.keys(o.shape).length ? o.shape : undefined, seed: seedGiven ? o.seed : undefined, modelPath: o.model, sequences,
    onProgress: o.json ? undefined : (step) => process.stderr.write(`${step}…\n`),
  });
  if (o.json) printJson(report);
  else {
    for (const out of report.measured.outputs) {
      print(`${out.maxRel <= report.bound ? 'ok  ' : 'FAIL'} ${out.name}: max abs error ${out.maxAbs.toExponential(3)}, mean ${out.meanAbs.toExponential(3)}, relative ${out.maxRel.toExponential(3)} (bound ${report.bound})`);
    }
    const lm = report.measured.languageModel;
    if (lm) print(`next-token agreement ${(lm.tokenAgreement * 100).toFixed(2)}% over ${lm.positions} positions; perplexity ${lm.perplexity.toFixed(2)} → ${lm.quantizedPerplexity.toFixed(2)} (Δ ${lm.perplexityDelta.toFixed(3)}; ${lm.source})`);
    for (const m of report.mismatches) print(`MISMATCH ${m}`);
    if (!report.compared) print('inputs differ from the recorded ones: figures not compared with the manifest');
    print(report.ok ? `verified: ${report.scheme} fragments within bound${report.compared ? ', figures match the manifest' : ''}` : `quantized fragments fail verification`);
  }
  if (!report.ok) process.exitCode = 1;
}
