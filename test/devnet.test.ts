/**
 * `gridpipe devnet` as a newcomer runs it: it reaches "ready", the printed command works (`gridpipe
 * generate` and `gridpipe peers` against it), and SIGTERM leaves no process behind.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CLI, REPO_ROOT, runCli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';
import { alive } from './helpers/process.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('gridpipe devnet', () => {
  it('starts suppliers, serves a generation, and stops every process it started', async () => {
    const devnet = spawn(process.execPath, [CLI, 'devnet', '--suppliers', '3', '--model', 'tiny', '--data', tmp.dir], { cwd: REPO_ROOT, env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    devnet.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((resolve) => devnet.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      devnet.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/devnet ready/.test(out)) resolve();
      });
      void exited.then((code) => reject(new Error(`devnet exited (${code}) before ready:\n${out}\n${err}`)));
    });
    const lines = out.trim().split('\n');
    expect(lines.at(-1)).toMatch(/ready/);
    expect(out).toMatch(/check: generated 8 tokens through/);

    const info = JSON.parse(readFileSync(path.join(tmp.dir, 'devnet.json'), 'utf8')) as { bootstrap: string; fragmentDir: string; suppliers: { pid: number }[] };
    expect(info.suppliers).toHaveLength(3);
    // The command the devnet prints works.
    const generated = await runCli(['generate', '--manifest', info.fragmentDir, '--prompt', 'Hello', '--max-tokens', '5', '--bootstrap', info.bootstrap, '--json'], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(generated.code, generated.stderr).toBe(0);
    const done = JSON.parse(generated.stdout.trim().split('\n').at(-1)!);
    expect(done.tokens).toHaveLength(5);
    expect(done.route).toHaveLength(3);
    const peers = await runCli(['peers', '--bootstrap', info.bootstrap, '--json'], { env: { GRIDPIPE_LOG_LEVEL: 'error' } });
    expect(peers.code, peers.stderr).toBe(0);
    expect(JSON.parse(peers.stdout)).toHaveLength(3);

    devnet.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toMatch(/devnet stopped/);
    for (const s of info.suppliers) expect(alive(s.pid), `supplier pid ${s.pid}`).toBe(false);
  });

  it('refuses an unknown demo model with a one-line error', async () => {
    const r = await runCli(['devnet', '--model', 'huge', '--data', tmp.dir]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('gridpipe: error: unknown demo model "huge" (tiny, small or moe)');
  });
});
