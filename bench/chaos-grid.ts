/**
 * A grid under chaos (issue 21), shared by `npm run test:chaos` (test/chaos/) and `npm run bench -- chaos`:
 * four or more `gridpipe supply` processes that each host both fragments of a small synthetic decoder, a
 * `gridpipe gateway` in front of them, a steady load of greedy completions, and a killer that SIGKILLs a
 * random supplier every few seconds and restarts it with the same identity, data and port. Every completion
 * is compared with the same prompt's fault-free completion, served by the same grid before the chaos starts.
 *
 * The model is a synthetic byte-level decoder (vocabulary 256, the gateway's byte tokenizer): a completion is
 * compared by its text and its token count. Tokens below 0x80 are one ASCII character each; bytes above
 * decode to U+FFFD where they are not valid UTF-8, so two different such bytes would compare equal (the
 * comparison is exact for ASCII tokens, a close proxy for the rest).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { buildModel } from '../fragments/builder/index.js';
import { writeModel } from '../fragments/onnx/write.js';
import { fragmentModel } from '../fragments/fragment.js';
import { seededRandom } from '../fragments/seeded-random.js';
import { spawnGridpipe, type GridpipeProcess } from '../cli/spawn.js';

export interface ChaosGridOptions {
  /** Folder for the model, fragments and the processes' data. */
  dir: string;
  /** Supplier processes (default 4), each hosting every fragment. */
  suppliers?: number;
  /** The CLI to run (default: the built one). */
  cli?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface Completion { text: string; tokens: number; failovers: number; ms: number }

interface Supplier { name: string; port: number; proc: GridpipeProcess; address: string; peerId: string }

const CONTEXT = 96;
const MODEL = { arch: 'gpt' as const, layers: 2, dModel: 32, heads: 2, vocab: 256, maxPositions: CONTEXT, kvCache: true, seed: 2121, name: 'chaos-gpt' };

/** The grid: suppliers, a gateway, and the model id it serves. */
export class ChaosGrid {
  private readonly suppliers: Supplier[] = [];
  private gateway?: GridpipeProcess;
  url = '';
  modelId = '';
  /** Supplier restarts done so far. */
  restarts = 0;
  /** The suppliers on the route of the latest completion (the killer's targets: a kill then hits live sessions). */
  private lastRoute = new Set<string>();

  private constructor(private readonly options: ChaosGridOptions, private readonly fragmentDir: string) {}

  /** Builds the model, starts the suppliers and the gateway, and waits until the model is servable. */
  static async start(options: ChaosGridOptions): Promise<ChaosGrid> {
    mkdirSync(options.dir, { recursive: true });
    const file = path.join(options.dir, 'chaos.onnx');
    await writeModel(buildModel(MODEL), file);
    const fragmentDir = path.join(options.dir, 'fragments');
    await fragmentModel(file, fragmentDir, { parts: 2 });
    const grid = new ChaosGrid(options, fragmentDir);
    try {
      await grid.launch(options.suppliers ?? 4);
    } catch (err) {
      await grid.stop();
      throw err;
    }
    return grid;
  }

  private spawn(args: string[]): GridpipeProcess {
    return spawnGridpipe(args, { cli: this.options.cli, readyTimeoutMs: 120_000 });
  }

  private supplierArgs(name: string, port: number, bootstrap: string[]): string[] {
    return ['supply', '--data', path.join(this.options.dir, name), '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--host', this.fragmentDir,
      '--fragments', '0,1', '--threads', '1', '--json', ...bootstrap.flatMap((b) => ['--bootstrap', b])];
  }

  private async startSupplier(name: string, port: number): Promise<Supplier> {
    const bootstrap = this.suppliers.filter((s) => s.name !== name).map((s) => s.address);
    const proc = this.spawn(this.supplierArgs(name, port, bootstrap));
    const ready = (await proc.ready) as { addresses: string[]; peerId: string };
    const address = ready.addresses[0];
    return { name, port: Number(/\/tcp\/(\d+)/.exec(address)![1]), proc, address, peerId: ready.peerId };
  }

  private async launch(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      this.suppliers.push(await this.startSupplier(`supplier-${i}`, 0));
    }
    this.gateway = this.spawn(['gateway', '--port', '0', '--data', path.join(this.options.dir, 'gateway'), '--json',
      ...this.suppliers.flatMap((s) => ['--bootstrap', s.address])]);
    this.url = ((await this.gateway.ready) as { url: string }).url;
    const deadline = Date.now() + 90_000;
    while (!this.modelId) {
      const res = await fetch(`${this.url}/v1/models`);
      const data = ((await res.json()) as { data?: { id: string }[] }).data ?? [];
      if (data.length) this.modelId = data[0].id;
      else if (Date.now() > deadline) throw new Error('the gateway never listed the chaos model');
      else await new Promise((r) => setTimeout(r, 300));
    }
    this.options.log?.(`chaos grid: ${count} suppliers, gateway ${this.url}, model ${this.modelId}`);
  }

  /** One greedy completion of `prompt` (token ids). */
  async complete(prompt: number[], maxTokens: number): Promise<Completion> {
    const started = performance.now();
    const res = await fetch(`${this.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: this.modelId, prompt, max_tokens: maxTokens, temperature: 0 }),
      signal: AbortSignal.timeout(180_000),
    });
    const body = (await res.json()) as { choices?: { text: string }[]; usage?: { completion_tokens: number }; gridpipe?: { failovers: number; route: { peerId: string }[] }; error?: { message: string } };
    if (!res.ok || !body.choices) throw new Error(`completion failed (${res.status}): ${body.error?.message ?? JSON.stringify(body).slice(0, 300)}`);
    if (body.gridpipe?.route.length) this.lastRoute = new Set(body.gridpipe.route.map((r) => r.peerId));
    return { text: body.choices[0].text, tokens: body.usage?.completion_tokens ?? -1, failovers: body.gridpipe?.failovers ?? 0, ms: performance.now() - started };
  }

  /** SIGKILLs supplier `index` and starts it again with the same data folder (identity) and port. */
  async killAndRestart(index: number): Promise<void> {
    const s = this.suppliers[index];
    await s.proc.stop('SIGKILL');
    this.suppliers[index] = await this.startSupplier(s.name, s.port);
    this.restarts++;
  }

  /** Kills and restarts a random supplier of the current route (seeded) every `everyMs` until stopped. */
  startKiller(everyMs: number, seed: number): { stop: () => Promise<number>; kills: () => number } {
    const random = seededRandom(seed);
    let running = true;
    let wake: (() => void) | undefined;
    let kills = 0;
    const loop = (async () => {
      while (running) {
        await new Promise<void>((r) => { wake = r; setTimeout(r, everyMs); });
        if (!running) break;
        // a random supplier among those on the latest route (all of them when none is known)
        const onRoute = this.suppliers.map((s, i) => (this.lastRoute.has(s.peerId) ? i : -1)).filter((i) => i >= 0);
        const targets = onRoute.length ? onRoute : this.suppliers.map((_, i) => i);
        const index = targets[Math.floor(random() * targets.length)];
        this.options.log?.(`chaos: SIGKILL ${this.suppliers[index].name}`);
        await this.killAndRestart(index);
        kills++;
      }
      return kills;
    })();
    return { stop: async () => { running = false; wake?.(); return loop; }, kills: () => kills };
  }

  /** Stops everything (SIGTERM, then SIGKILL what is left). */
  async stop(): Promise<void> {
    await this.gateway?.stop('SIGTERM');
    await Promise.all(this.suppliers.map((s) => s.proc.stop('SIGTERM')));
  }
}

export interface ChaosRunOptions {
  generations: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** A supplier killed and restarted this often (ms). */
  killEveryMs: number;
  maxTokens: number;
  /** Distinct prompts (each fault-free reference is computed once). */
  prompts: number;
  seed: number;
  /**
   * Keep the load going past `generations` until the killer has killed this many times (default 0): on a fast
   * machine a short load can finish before the first kill, and then nothing was tested.
   */
  minKills?: number;
  /**
   * Generation i starts no earlier than i × paceMs after the first (default 0): spreads a fixed number of
   * generations over several kill periods however fast the machine serves them.
   */
  paceMs?: number;
}

export interface ChaosReport {
  completed: number;
  failed: number;
  /** Every completed generation equal, token for token, to the fault-free one. */
  identical: boolean;
  mismatches: number;
  kills: number;
  failovers: number;
  latenciesMs: number[];
  errors: string[];
}

/** Prompts of 4 to 11 token ids below the vocabulary, from the seed. */
export function chaosPrompts(count: number, seed: number): number[][] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => Array.from({ length: 4 + Math.floor(random() * 8) }, () => 32 + Math.floor(random() * 200)));
}

/** Fault-free references, then `generations` completions under the killer; what came out. */
export async function runChaos(grid: ChaosGrid, options: ChaosRunOptions, log?: (line: string) => void): Promise<ChaosReport> {
  const prompts = chaosPrompts(options.prompts, options.seed);
  const reference: Completion[] = [];
  for (const p of prompts) reference.push(await grid.complete(p, options.maxTokens));
  log?.(`chaos: ${prompts.length} fault-free references done`);
  const report: ChaosReport = { completed: 0, failed: 0, identical: true, mismatches: 0, kills: 0, failovers: 0, latenciesMs: [], errors: [] };
  const killer = grid.startKiller(options.killEveryMs, options.seed);
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < options.generations || killer.kills() < (options.minKills ?? 0)) {
      const i = next++;
      const wait = started + i * (options.paceMs ?? 0) - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const want = reference[i % prompts.length];
      try {
        const got = await grid.complete(prompts[i % prompts.length], options.maxTokens);
        report.completed++;
        report.failovers += got.failovers;
        report.latenciesMs.push(got.ms);
        if (got.text !== want.text || got.tokens !== want.tokens) {
          report.mismatches++;
          report.identical = false;
          report.errors.push(`generation ${i}: ${JSON.stringify(got.text)} (${got.tokens}) instead of ${JSON.stringify(want.text)} (${want.tokens})`);
        }
      } catch (err) {
        report.failed++;
        report.errors.push(`generation ${i}: ${(err as Error).message}`);
      }
      if ((report.completed + report.failed) % 20 === 0) log?.(`chaos: ${report.completed + report.failed}/${options.generations} done, ${report.failed} failed, ${report.failovers} failovers`);
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker));
  } finally {
    report.kills = await killer.stop();
  }
  return report;
}
