/**
 * `npm run bench -- explorer`: what the explorer costs the grid. One devnet (`gridpipe devnet`, what `npm
 * start` runs, its gateway serving the explorer); decode tokens/s through its gateway is measured alternately
 * with the explorer idle (no page open: the last viewer gone longer than its ping window) and open and live
 * (what open pages do, all views at once: the live stream (SSE) followed, and the Network, Models, Chain and
 * Live views polled every 3 s, as the page polls the view it shows). Goal: live / idle >= 0.95. On a loaded
 * machine tokens/s swings with other work, so the CPU time the grid's processes (gateway, suppliers, anvil:
 * /proc/PID/stat) spend per decoded token is reported for both phases too: it does not depend on others' load.
 * `--model=tiny|small` (default small), `--rounds=N` (default 5).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CLI_ENTRY } from '../cli/spawn.js';
import { reportResult } from './report.js';
import { median } from './stats.js';

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + ((i * 7) % 200));
const DECODE = 32;
/** The explorer pings suppliers while a page asked for something in the last 30 s (explorer/explorer.ts watchMs). */
const WATCH_WINDOW_MS = 31_000;
const POLL_MS = 3000;

interface DevnetInfo { gatewayUrl: string; explorerUrl?: string; apiKey: string; model: string; gatewayPid?: number; anvilPid: number; suppliers: { pid?: number }[] }

/** CPU seconds (user + system) a process has used so far (Linux /proc/PID/stat; clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function startDevnet(dataDir: string, model: string): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'devnet', '--data', dataDir, '--model', model, '--port', '0'], {
    env: { ...process.env, GRIDPIPE_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/\bready\b/.test(out.trim().split('\n').at(-1) ?? '')) resolve();
    });
    void exited.then((code) => reject(new Error(`devnet exited (${code}) before ready:\n${out}`)));
  });
  return { child, exited };
}

async function completion(info: DevnetInfo, maxTokens: number): Promise<{ s: number; tokens: number }> {
  const started = performance.now();
  const res = await fetch(`${info.gatewayUrl}/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${info.apiKey}` },
    body: JSON.stringify({ model: info.model, prompt: PROMPT, max_tokens: maxTokens, temperature: 0 }),
  });
  const body = (await res.json()) as { usage?: { completion_tokens: number }; error?: { message: string } };
  if (!res.ok || !body.usage) throw new Error(`completion failed (${res.status}): ${body.error?.message ?? ''}`);
  return { s: (performance.now() - started) / 1000, tokens: body.usage.completion_tokens };
}

/**
 * Decode tokens/s: (tokens of a 33-token request − of a 1-token one) ÷ the difference in wall time, median of 3
 * pairs; and the grid's processes' CPU milliseconds per generated token over the three pairs.
 */
async function decodeRate(info: DevnetInfo, pids: number[]): Promise<{ tokensPerS: number; cpuMsPerToken: number }> {
  const rates: number[] = [];
  const cpu = (): number => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  await completion(info, 2); // warm again after a pause (connections, sessions, caches), not measured
  const cpuBefore = cpu();
  let tokens = 0;
  for (let i = 0; i < 3; i++) {
    const one = await completion(info, 1);
    const many = await completion(info, DECODE + 1);
    tokens += one.tokens + many.tokens;
    rates.push((many.tokens - one.tokens) / (many.s - one.s));
  }
  return { tokensPerS: median(rates), cpuMsPerToken: (1000 * (cpu() - cpuBefore)) / tokens };
}

/** What open explorer pages do: follow the live stream, poll every view. Returns the stop function. */
function openExplorer(explorerUrl: string): () => void {
  const controller = new AbortController();
  const api = new URL('api/v1/', explorerUrl);
  void (async () => {
    const res = await fetch(new URL('live/stream', api), { signal: controller.signal });
    const reader = res.body!.getReader();
    while (!(await reader.read()).done) { /* the page would draw each event */ }
  })().catch(() => undefined);
  const poll = async (): Promise<void> => {
    await Promise.all(['network', 'models', 'chain', 'live'].map(async (v) => (await fetch(new URL(v, api), { signal: controller.signal })).text()));
  };
  void poll().catch(() => undefined);
  const timer = setInterval(() => { void poll().catch(() => undefined); }, POLL_MS);
  return () => { clearInterval(timer); controller.abort(); };
}

/** The explorer benchmark. */
export async function explorerBench(flags: string[]): Promise<void> {
  const model = flags.find((f) => f.startsWith('--model='))?.slice('--model='.length) ?? 'small';
  const rounds = Number(flags.find((f) => f.startsWith('--rounds='))?.slice('--rounds='.length) ?? 5);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-bench-explorer-'));
  const devnet = await startDevnet(dataDir, model);
  try {
    const info = JSON.parse(await readFile(path.join(dataDir, 'devnet.json'), 'utf8')) as DevnetInfo;
    if (!info.explorerUrl) throw new Error('the devnet\'s gateway serves no explorer');
    await completion(info, 2); // warm-up
    const pids = [info.gatewayPid!, info.anvilPid, ...info.suppliers.map((s) => s.pid!)];
    const idle: { tokensPerS: number; cpuMsPerToken: number }[] = [];
    const live: typeof idle = [];
    for (let r = 0; r < rounds; r++) {
      // Idle: nobody has looked for longer than the explorer's ping window.
      await new Promise((resolve) => setTimeout(resolve, WATCH_WINDOW_MS));
      idle.push(await decodeRate(info, pids));
      const close = openExplorer(info.explorerUrl);
      try {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS)); // pings and polls under way
        live.push(await decodeRate(info, pids));
      } finally {
        close();
      }
      process.stderr.write(`round ${r + 1}: idle ${idle[r].tokensPerS.toFixed(1)} tok/s ${idle[r].cpuMsPerToken.toFixed(1)} CPU ms/tok, live ${live[r].tokensPerS.toFixed(1)} tok/s ${live[r].cpuMsPerToken.toFixed(1)} CPU ms/tok\n`);
    }
    const idleRate = median(idle.map((x) => x.tokensPerS));
    const liveRate = median(live.map((x) => x.tokensPerS));
    const idleCpu = median(idle.map((x) => x.cpuMsPerToken));
    const liveCpu = median(live.map((x) => x.cpuMsPerToken));
    reportResult('explorer', {
      idle_decode_tokens_per_s: idleRate, live_decode_tokens_per_s: liveRate, live_over_idle: liveRate / idleRate,
      idle_cpu_ms_per_token: idleCpu, live_cpu_ms_per_token: liveCpu, live_cpu_over_idle: liveCpu / idleCpu, rounds,
    }, (
      `gridpipe devnet --model ${model} (4 paid suppliers, the gateway serving the explorer). Decode tokens/s through the gateway ` +
      `((tokens of a 33-token greedy completion − of a 1-token one) ÷ the wall-time difference, median of 3 pairs per phase), alternating ` +
      `idle (no explorer client for over 30 s: no pings) and live (the live stream followed and the network, models, chain and live ` +
      `views polled every 3 s, as open pages do; all four at once). cpu_ms_per_token: user + system CPU of the gateway, the suppliers and ` +
      `anvil (/proc) per generated token over each phase's requests. Median over ${rounds} rounds. Goal: live_over_idle >= 0.95. Everything ` +
      'shares the machine\'s cores; the page\'s own rendering is not counted (a viewer\'s browser runs elsewhere).'
    ));
  } finally {
    devnet.child.kill('SIGTERM');
    await devnet.exited;
    await rm(dataDir, { recursive: true, force: true });
  }
}
