/**
 * `gridpipe devnet` (what `npm start` runs). The whole grid on one machine lands with the supplier
 * node, scheduler, contracts and gateway issues; today it prepares the demo model the devnet will
 * serve: builds it (or reuses the cache), cuts it into one fragment per supplier and verifies the
 * fragments against the whole model, then says plainly which parts of the grid are not there yet.
 */
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { buildModel, type BuildOptions } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { verifyFragments } from '../fragments/verify.js';
import { readManifest } from '../fragments/manifest.js';
import { positiveInt } from './args.js';
import { createProgress } from './progress.js';

const DEMO_MODELS: Record<string, BuildOptions> = {
  tiny: { arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: true, seed: 7, name: 'demo-tiny' },
  small: { arch: 'gpt', layers: 6, dModel: 256, heads: 8, kvCache: true, seed: 7, name: 'demo-small' },
  moe: { arch: 'gpt-moe', layers: 4, dModel: 128, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 7, name: 'demo-moe' },
};

/** The devnet command. */
export function devnetCommand(): Command {
  return new Command('devnet')
    .description('Run the whole grid on one machine (today: prepares and verifies the demo model\'s fragments)')
    .option('--suppliers <n>', 'supplier processes (one fragment each)', positiveInt, 4)
    .option('--model <name>', 'demo model: tiny, small or moe', 'small')
    .option('--data <dir>', 'data folder', path.join(os.homedir(), '.gridpipe', 'devnet'))
    .action(async (o: { suppliers: number; model: string; data: string }) => {
      const spec = DEMO_MODELS[o.model];
      if (!spec) throw new Error(`unknown demo model "${o.model}" (tiny, small or moe)`);
      const dir = path.resolve(o.data);
      await mkdir(dir, { recursive: true });
      const modelFile = path.join(dir, `${spec.name}.onnx`);
      const fragmentDir = path.join(dir, `${spec.name}-${o.suppliers}`);
      const started = Date.now();
      if (!existsSync(modelFile)) {
        process.stderr.write(`building the demo model ${spec.name} (synthetic weights)…\n`);
        await writeModel(buildModel(spec), modelFile);
      }
      if (!existsSync(path.join(fragmentDir, 'manifest.json'))) {
        const progress = createProgress('fragmenting');
        await fragmentModel(modelFile, fragmentDir, { parts: o.suppliers, onProgress: (d, t) => progress.update(d, t) });
        progress.stop();
      }
      const report = await verifyFragments(fragmentDir, { tolerance: 1e-4 });
      const { manifest } = await readManifest(fragmentDir);
      process.stdout.write([
        `demo model: ${modelFile}`,
        `fragments:  ${fragmentDir} (${manifest.fragments.length} parts)`,
        ...manifest.fragments.map((f) => `  #${f.index} ${f.cid}`),
        `verify:     ${report.ok ? 'fragments match the whole model' : 'MISMATCH'} (max rel diff ${Math.max(...report.outputs.map((x) => x.maxRel)).toExponential(2)})`,
        `prepared in ${((Date.now() - started) / 1000).toFixed(1)} s`,
        'not yet part of the devnet: supplier nodes, the scheduler, the chain and the gateway (open issues 3-7).',
        '',
      ].join('\n'));
      if (!report.ok) process.exitCode = 1;
    });
}
