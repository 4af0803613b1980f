/** Runs the built `gridpipe` CLI (dist/) as a user would, capturing its exit code and output. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs `gridpipe ...args` and resolves once it has exited and its stdout and stderr are read to the end. */
export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? REPO_ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    // 'close', not 'exit': 'exit' can fire before the pipes are drained, and then stderr reads empty (seen on Node 24 in CI).
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
