/**
 * `gridpipe devnet` (what `npm start` runs): the grid on one machine, as far as it exists today.
 * Builds the demo model (or reuses the cache), cuts it into one fragment per supplier and verifies the
 * fragments; starts the suppliers as separate processes, each with its own identity and data folder
 * (the first imports the fragment folder, the others fetch their fragment by manifest CID over the
 * grid); runs a check generation across them; prints how to use it and a line with the word "ready";
 * stops every process it started on Ctrl-C or SIGTERM. The chain and the gateway join with issues 5-7.
 */
import { Command } from 'commander';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { buildModel, type BuildOptions } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { verifyFragments } from '../fragments/verify.js';
import { readManifest, MANIFEST_FILE } from '../fragments/manifest.js';
import { cidOfFile } from '../fragments/cid.js';
import { GridClient } from '../scheduler/client.js';
import { generate } from '../scheduler/generate.js';
import { byteTokenizer } from '../scheduler/tokenizer.js';
import { positiveInt } from './args.js';
import { createProgress } from './progress.js';
import { UsageError } from './errors.js';
import { spawnGridpipe } from './spawn.js';

const DEMO_MODELS: Record<string, BuildOptions> = {
  tiny: { arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: true, seed: 7, name: 'demo-tiny' },
  small: { arch: 'gpt', layers: 6, dModel: 256, heads: 8, kvCache: true, seed: 7, name: 'demo-small' },
  moe: { arch: 'gpt-moe', layers: 4, dModel: 128, heads: 4, experts: 4, topK: 2, kvCache: true, seed: 7, name: 'demo-moe' },
};

const READY_TIMEOUT_MS = 90_000;

interface RunningSupplier { child: ChildProcess; peerId: string; address: string; fragment: number }

/** Starts one `gridpipe supply` process and waits for its ready line. */
async function startSupplier(args: string[], fragment: number): Promise<RunningSupplier> {
  const proc = spawnGridpipe(['supply', ...args, '--json'], { readyTimeoutMs: READY_TIMEOUT_MS, errorLines: 3 });
  try {
    const ready = (await proc.ready) as { peerId: string; addresses: string[] };
    return { child: proc.child, peerId: ready.peerId, address: ready.addresses[0], fragment };
  } catch (err) {
    throw new Error(`supplier ${fragment}: ${(err as Error).message}`, { cause: err });
  }
}

/** Stops suppliers with SIGTERM (they withdraw their records), then SIGKILL after 10 s. */
async function stopAll(suppliers: ChildProcess[]): Promise<void> {
  await Promise.all(suppliers.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => { clearTimeout(kill); resolve(); });
    child.kill('SIGTERM');
  })));
}

/** The devnet command. */
export function devnetCommand(): Command {
  return new Command('devnet')
    .description('Run the grid on one machine: demo model, supplier processes, a check generation (chain and gateway: coming)')
    .option('--suppliers <n>', 'supplier processes (one fragment each)', positiveInt, 4)
    .option('--model <name>', 'demo model: tiny, small or moe', 'small')
    .option('--data <dir>', 'data folder', path.join(os.homedir(), '.gridpipe', 'devnet'))
    .action(async (o: { suppliers: number; model: string; data: string }) => {
      const spec = DEMO_MODELS[o.model];
      if (!spec) throw new UsageError(`unknown demo model "${o.model}" (tiny, small or moe)`);
      const dir = path.resolve(o.data);
      try {
        await mkdir(dir, { recursive: true });
      } catch (err) {
        throw new UsageError(`--data ${dir}: cannot create it (${(err as Error).message})`);
      }
      const say = (line: string): void => { process.stdout.write(`${line}\n`); };
      const started = Date.now();
      const modelFile = path.join(dir, `${spec.name}.onnx`);
      const fragmentDir = path.join(dir, `${spec.name}-${o.suppliers}`);
      if (!existsSync(modelFile)) {
        say(`building the demo model ${spec.name} (synthetic weights, not a trained model)…`);
        await writeModel(buildModel(spec), modelFile);
      }
      if (!existsSync(path.join(fragmentDir, MANIFEST_FILE))) {
        const progress = createProgress('fragmenting');
        await fragmentModel(modelFile, fragmentDir, { parts: o.suppliers, onProgress: (d, t) => progress.update(d, t) });
        progress.stop();
      }
      const report = await verifyFragments(fragmentDir, { tolerance: 1e-4 });
      if (!report.ok) throw new Error(`the demo fragments do not match the whole model (${fragmentDir}); delete it and start again`);
      const { manifest } = await readManifest(fragmentDir);
      const manifestCid = await cidOfFile(path.join(fragmentDir, MANIFEST_FILE));
      say(`model ${manifest.name}: ${manifest.fragments.length} fragments verified (manifest ${manifestCid})`);

      const children: ChildProcess[] = [];
      let stopping = false;
      const shutdown = async (code: number): Promise<never> => {
        stopping = true;
        say('stopping the devnet…');
        await stopAll(children);
        say('devnet stopped');
        process.exit(code);
      };
      process.once('SIGINT', () => { void shutdown(0); });
      process.once('SIGTERM', () => { void shutdown(0); });
      try {
        const supplierArgs = (i: number): string[] => ['--data', path.join(dir, `supplier-${i}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--fragments', String(i), '--max-sessions', '64'];
        say(`starting ${o.suppliers} supplier processes…`);
        const first = await startSupplier([...supplierArgs(0), '--host', fragmentDir], 0);
        children.push(first.child);
        say(`  supplier 0 ${first.peerId} hosts fragment 0 (imported from ${fragmentDir})`);
        const rest = await Promise.all(Array.from({ length: o.suppliers - 1 }, (_, k) => k + 1).map(async (i) => {
          const s = await startSupplier([...supplierArgs(i), '--host', manifestCid, '--bootstrap', first.address], i);
          children.push(s.child);
          say(`  supplier ${i} ${s.peerId} hosts fragment ${i} (fetched by CID over the grid)`);
          return s;
        }));
        const suppliers = [first, ...rest];
        for (const s of suppliers) {
          s.child.on('exit', (code, signal) => { if (!stopping) say(`supplier ${s.fragment} exited unexpectedly (${code ?? signal}); the grid routes around it where it can`); });
        }

        // A check generation across the suppliers, as a client would run it.
        const client = await GridClient.connect({ bootstrap: [first.address], network: 'local' });
        let check: string;
        try {
          const model = await client.openModel(fragmentDir);
          const prompt = byteTokenizer.encode('Hello, grid');
          const session = client.session(model, prompt.length + 8);
          const ids: number[] = [];
          for await (const t of generate(session, { promptIds: prompt, maxTokens: 8, kvCache: manifest.statefulPairs.length > 0, inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) })) ids.push(t.id);
          await session.close();
          check = `generated ${ids.length} tokens through ${session.route.map((r) => `${r.peerId.slice(-6)}[${r.start}..${r.end - 1}]`).join(' → ')}`;
        } finally {
          await client.close();
        }

        const info = {
          bootstrap: first.address, manifestCid, fragmentDir, model: modelFile,
          suppliers: suppliers.map((s) => ({ peerId: s.peerId, address: s.address, fragments: [s.fragment], pid: s.child.pid })),
        };
        await writeFile(path.join(dir, 'devnet.json'), `${JSON.stringify(info, null, 2)}\n`);
        say(`check: ${check}`);
        say('');
        say('try it:');
        say(`  npx gridpipe generate --manifest ${fragmentDir} --prompt "Hello" --max-tokens 16 --bootstrap ${first.address}`);
        say(`  npx gridpipe peers --bootstrap ${first.address}`);
        say(`details for scripts: ${path.join(dir, 'devnet.json')}`);
        say('not in the devnet yet: the local chain and contracts, the OpenAI-compatible gateway and the explorer (issues 5-7).');
        say(`devnet ready in ${((Date.now() - started) / 1000).toFixed(1)} s — Ctrl-C stops every process it started`);
      } catch (err) {
        process.stderr.write(`gridpipe: error: ${(err as Error).message}\n`);
        await shutdown(1);
      }
      await new Promise(() => undefined); // run until a signal stops it
    });
}
