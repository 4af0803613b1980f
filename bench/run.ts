/** `npm run bench [-- NAME...]`: runs the named benchmarks (all when none is named). */
import { fragmentBench } from './fragment.js';
import { routingBench } from './routing.js';
import { hopBench } from './hop.js';
import { settlementBench } from './settlement.js';
import { pipelineBench } from './pipeline.js';
import { swarmBench } from './swarm.js';
import { devnetBench } from './devnet.js';
import { cliBench } from './cli.js';
import { demoModelBench } from './demo-model.js';
import { explorerBench } from './explorer.js';
import { selectiveBench } from './selective.js';
import { verifyBench } from './verify.js';
import { wanBench } from './wan.js';
import { compressionBench } from './compression.js';
import { chaosBench } from './chaos.js';
import { fuzzBench } from './fuzz.js';
import { BenchFlagError } from './flags.js';

const BENCHES: Record<string, (args: string[]) => Promise<void>> = {
  fragment: fragmentBench,
  routing: routingBench,
  hop: hopBench,
  settlement: settlementBench,
  pipeline: pipelineBench,
  swarm: swarmBench,
  devnet: devnetBench,
  cli: cliBench,
  'demo-model': demoModelBench,
  explorer: explorerBench,
  selective: selectiveBench,
  verify: verifyBench,
  wan: wanBench,
  compression: compressionBench,
  chaos: chaosBench,
  fuzz: fuzzBench,
};

async function run(): Promise<void> {
  const names = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
  const unknown = names.filter((n) => !BENCHES[n]);
  if (unknown.length) {
    process.stderr.write(`unknown benchmark ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}\n`);
    process.exitCode = 2;
    return;
  }
  for (const name of names.length ? names : Object.keys(BENCHES)) {
    process.stderr.write(`running benchmark ${name}…\n`);
    try {
      await BENCHES[name](flags);
    } catch (err) {
      if (!(err instanceof BenchFlagError)) throw err;
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
  }
}

await run();
