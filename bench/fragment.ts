/**
 * `npm run bench -- fragment`: builds a synthetic GPT of over 1B parameters (weights in external data),
 * fragments it into 8 parts in a child process (so its peak RSS is the fragmenter's alone), and copies
 * the same bytes in the same run as the baseline. Goals: peak RSS ≤ 0.3 × model bytes, time ≤ 2 × copy.
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, mkdtemp, rm, stat, open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModel, parameterCount, type BuildOptions } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { reportResult } from './report.js';

const MODEL: BuildOptions = { arch: 'gpt', layers: 24, dModel: 2048, heads: 16, vocab: 32000, kvCache: true, seed: 1, name: 'bench-gpt-1b' };

/** Runs the benchmark; `--keep` leaves the files in the temp folder. */
export async function fragmentBench(flags: string[]): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-fragment-'));
  try {
    const modelPath = path.join(work, 'model.onnx');
    const buildStart = performance.now();
    const written = await writeModel(buildModel(MODEL), modelPath, { externalData: 'always' });
    const buildSeconds = (performance.now() - buildStart) / 1000;
    const modelBytes = written.model.bytes + (written.data?.bytes ?? 0);
    // Each phase starts with no dirty pages left by the one before, so none pays for another's writeback.
    const flush = (): void => { execFileSync('sync'); };
    flush();

    // Baseline 1: the kernel's copy (what `cp` does). Baseline 2: a userspace read/write loop.
    const copyStart = performance.now();
    await copyFile(modelPath, path.join(work, 'copy.onnx'));
    await copyFile(`${modelPath}.data`, path.join(work, 'copy.onnx.data'));
    const kernelCopySeconds = (performance.now() - copyStart) / 1000;
    await rm(path.join(work, 'copy.onnx.data'));
    flush();
    const streamStart = performance.now();
    await streamCopy(modelPath, path.join(work, 'stream.onnx'));
    await streamCopy(`${modelPath}.data`, path.join(work, 'stream.data'));
    await rm(path.join(work, 'stream.onnx'));
    const streamCopySeconds = (performance.now() - streamStart) / 1000;
    await rm(path.join(work, 'stream.data'));
    flush();
    // The baseline is the faster of the two copies: the harder one to keep up with.
    const copySeconds = Math.min(kernelCopySeconds, streamCopySeconds);

    const child = await runChild(modelPath, path.join(work, 'fragments'));
    let fragmentBytes = 0;
    for (let i = 0; i < 8; i++) {
      fragmentBytes += (await stat(path.join(work, 'fragments', `fragment-${i}.onnx`))).size;
      fragmentBytes += await stat(path.join(work, 'fragments', `fragment-${i}.onnx.data`)).then((s) => s.size, () => 0);
    }
    reportResult('fragment', {
      parameters: parameterCount(MODEL),
      model_bytes: modelBytes,
      fragment_bytes: fragmentBytes,
      peak_rss_bytes: child.maxRssBytes,
      rss_ratio: child.maxRssBytes / modelBytes,
      fragment_seconds: child.seconds,
      copy_seconds: copySeconds,
      kernel_copy_seconds: kernelCopySeconds,
      stream_copy_seconds: streamCopySeconds,
      time_ratio: child.seconds / copySeconds,
      build_seconds: buildSeconds,
    }, `gpt ${MODEL.layers}L d${MODEL.dModel} vocab ${MODEL.vocab}, 8 parts, external data; fragment_seconds covers read, plan, write and SHA-256 of every fragment file; copy_seconds is the faster of kernel_copy_seconds (fs.copyFile of the model and its data) and stream_copy_seconds (an 8 MiB read/write loop over the same bytes), with a sync before each phase; peak RSS of the fragmenting process (ru_maxrss). Goals: rss_ratio <= 0.3, time_ratio <= 2.`);
  } finally {
    if (!flags.includes('--keep')) await rm(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

async function streamCopy(from: string, to: string): Promise<void> {
  const src = await open(from, 'r');
  const dst = await open(to, 'w');
  const buf = Buffer.allocUnsafe(8 << 20);
  try {
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      await dst.write(buf, 0, bytesRead);
    }
  } finally {
    await src.close();
    await dst.close();
  }
}

function runChild(modelPath: string, outDir: string): Promise<{ seconds: number; maxRssBytes: number }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fragment-child.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, modelPath, outDir, '8'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`fragmenting child exited with ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!));
    });
  });
}
