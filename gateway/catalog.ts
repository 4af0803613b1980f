/**
 * The models the gateway can serve: manifests discovered from suppliers' capacity records in the DHT (each
 * fetched by CID) plus those given with `--model`, each with its tokenizer and whether every fragment has a
 * live host right now. A model's id is its manifest name; its manifest CID is accepted too.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { GridClient, OpenModel } from '../scheduler/client.js';
import { spansOf, type HostedSpan, type StakeCheck } from '../scheduler/discovery.js';
import { findAllRecords } from '../node/capacity/dht.js';
import { FragmentStore } from '../node/store/fragment-store.js';
import { fetchByCid } from '../node/store/fetcher.js';
import { cidOfBytes } from '../fragments/cid.js';
import { HopPricer } from './pricing.js';
import { loadTokenizer, type TextTokenizer } from './tokenizers/index.js';
import { notFound } from './errors.js';

/** A model the catalog knows. */
export interface CatalogModel {
  id: string;
  open: OpenModel;
  /** 'text' models take input_ids and give logits (completions, chat); others are served by /v1/infer. */
  kind: 'text' | 'tensor';
  tokenizer?: TextTokenizer;
  /** Why the tokenizer could not be loaded (its text endpoints answer 503). */
  tokenizerError?: string;
  contextLength?: number;
  pricer: HopPricer;
  /** Fragments with no live host at the last look (empty = servable). */
  missing: number[];
  /** Suppliers hosting some fragment of it at the last look. */
  hosts: number;
  /** Unix seconds when the gateway first saw it. */
  created: number;
  /** Given with --model (kept even when its hosts vanish). */
  pinned: boolean;
}

export interface CatalogOptions {
  /** Fragment folders or manifest CIDs to serve besides the discovered ones. */
  models?: string[];
  /** How long opening a --model waits for hosts of every fragment (default 5 s). */
  waitForHostsMs?: number;
  /** Shortest time between two DHT sweeps triggered by requests (default 2 s). */
  minRefreshMs?: number;
  /** Background sweep period (default 15 s; 0 = none). */
  refreshEveryMs?: number;
  /** Per-sweep DHT timeout (default 5 s). */
  lookupTimeoutMs?: number;
  /** Count only staked suppliers as hosts (as routing does when the client has the same check). */
  stakeCheck?: StakeCheck;
  logger?: Logger;
}

export class ModelCatalog {
  private readonly byCid = new Map<string, CatalogModel>();
  private readonly opening = new Map<string, Promise<CatalogModel | undefined>>();
  private readonly failedCids = new Map<string, number>();
  private lastSweep = 0;
  private sweeping?: Promise<void>;
  private timer?: ReturnType<typeof setInterval>;
  private store?: FragmentStore;
  private storeDir?: string;

  constructor(private readonly client: GridClient, private readonly options: CatalogOptions = {}) {}

  /** Opens the --model sources, sweeps the DHT once and starts the background sweeps. */
  async start(): Promise<void> {
    for (const source of this.options.models ?? []) {
      const open = await this.client.openModel(source, this.options.waitForHostsMs ?? 5000);
      await this.add(open, true, existsSync(source) && statSync(source).isDirectory() ? source : undefined);
    }
    await this.refresh(true);
    const every = this.options.refreshEveryMs ?? 15_000;
    if (every > 0) {
      this.timer = setInterval(() => { void this.refresh(true).catch((err: unknown) => this.options.logger?.warn({ err: (err as Error).message }, 'model sweep failed')); }, every);
      this.timer.unref();
    }
  }

  /** Every known model. */
  all(): CatalogModel[] { return [...this.byCid.values()]; }

  /** The models whose every fragment has a live host. */
  servable(): CatalogModel[] { return this.all().filter((m) => m.missing.length === 0); }

  /** Sweeps the DHT for capacity records (at most every minRefreshMs unless forced); adds new models, updates coverage. */
  refresh(force = false): Promise<void> {
    if (!force && Date.now() - this.lastSweep < (this.options.minRefreshMs ?? 2000)) return this.sweeping ?? Promise.resolve();
    this.sweeping ??= this.sweep().finally(() => { this.sweeping = undefined; this.lastSweep = Date.now(); });
    return this.sweeping;
  }

  /** The model with this id or manifest CID; sweeps once more before answering 404. */
  async resolve(id: string): Promise<CatalogModel> {
    const found = this.find(id);
    if (found) return found;
    await this.refresh();
    const again = this.find(id);
    if (again) return again;
    throw notFound(`the model "${id}" does not exist on this grid (GET /v1/models lists the servable ones)`);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping?.catch(() => undefined);
    for (const m of this.byCid.values()) m.open.discovery.stop();
    if (this.storeDir) await rm(this.storeDir, { recursive: true, force: true });
  }

  private find(id: string): CatalogModel | undefined {
    return this.byCid.get(id) ?? this.all().find((m) => m.id === id);
  }

  private async sweep(): Promise<void> {
    const records = await findAllRecords(this.client.host, { timeoutMs: this.options.lookupTimeoutMs ?? 5000 });
    const spansByCid = new Map<string, HostedSpan[]>();
    for (const r of records) {
      if (r.withdrawn) continue;
      if (this.options.stakeCheck && !(await this.options.stakeCheck.isListed(r.stakingAddress))) continue;
      for (const cid of new Set(r.fragments.map((f) => f.manifestCid))) {
        const spans = spansOf(r, cid).filter((s) => !s.paused);
        if (spans.length) spansByCid.set(cid, [...(spansByCid.get(cid) ?? []), ...spans]);
      }
    }
    // Manifests not seen before are fetched by CID (once at a time each; a CID that failed waits a minute).
    await Promise.all([...spansByCid.keys()].filter((cid) => !this.byCid.has(cid) && (this.failedCids.get(cid) ?? 0) < Date.now() - 60_000).map((cid) => this.openDiscovered(cid)));
    for (const model of this.byCid.values()) this.updateCoverage(model, spansByCid.get(model.open.manifestCid) ?? []);
  }

  private openDiscovered(cid: string): Promise<CatalogModel | undefined> {
    let p = this.opening.get(cid);
    if (!p) {
      p = (async () => {
        try {
          const open = await this.client.openModel(cid, 0);
          return await this.add(open, false);
        } catch (err) {
          this.failedCids.set(cid, Date.now());
          this.options.logger?.warn({ manifestCid: cid, err: (err as Error).message }, 'could not open a discovered model');
          return undefined;
        } finally {
          this.opening.delete(cid);
        }
      })();
      this.opening.set(cid, p);
    }
    return p;
  }

  private async add(open: OpenModel, pinned: boolean, sourceDir?: string): Promise<CatalogModel> {
    const existing = this.byCid.get(open.manifestCid);
    if (existing) return existing;
    const { manifest } = open;
    const inputs = manifest.model.inputs.map((i) => i.name);
    const kind = inputs.includes('input_ids') && manifest.model.outputs.some((o) => o.name === 'logits') ? 'text' : 'tensor';
    const taken = this.all().some((m) => m.id === manifest.name);
    const model: CatalogModel = {
      id: taken ? open.manifestCid : manifest.name, open, kind,
      contextLength: manifest.model.contextLength,
      pricer: new HopPricer(manifest, () => open.discovery.current),
      missing: [], hosts: 0, created: Math.floor(Date.now() / 1000), pinned,
    };
    if (kind === 'text') {
      try {
        model.tokenizer = await loadTokenizer(manifest, (f) => this.readTokenizerFile(f, sourceDir));
        if (!model.tokenizer) model.tokenizerError = `${manifest.name} names no tokenizer: send token ids, or use /v1/infer`;
      } catch (err) {
        model.tokenizerError = (err as Error).message;
        this.options.logger?.warn({ model: manifest.name, err: model.tokenizerError }, 'tokenizer unavailable; text endpoints will answer 503 for this model');
      }
    }
    this.updateCoverage(model, open.discovery.current);
    this.byCid.set(open.manifestCid, model);
    this.options.logger?.info({ model: model.id, manifestCid: open.manifestCid, kind, fragments: manifest.fragments.length, synthetic: manifest.model.synthetic }, 'model added');
    return model;
  }

  private updateCoverage(model: CatalogModel, spans: HostedSpan[]): void {
    const covered = new Set(spans.flatMap((s) => Array.from({ length: s.end - s.start }, (_, i) => s.start + i)));
    model.missing = model.open.manifest.fragments.map((f) => f.index).filter((i) => !covered.has(i));
    model.hosts = new Set(spans.map((s) => s.peerId)).size;
  }

  /** A tokenizer file: from the model's folder when it was given as one, else fetched from the grid by CID; verified. */
  private async readTokenizerFile(f: { file: string; cid: string }, sourceDir?: string): Promise<Uint8Array> {
    if (sourceDir) {
      const bytes = await readFile(path.join(sourceDir, path.basename(f.file)));
      if (cidOfBytes(bytes) !== f.cid) throw new Error(`${f.file} in ${sourceDir} does not match its CID in the manifest`);
      return bytes;
    }
    if (!this.store) {
      this.storeDir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-gateway-'));
      this.store = await FragmentStore.open({ dataDir: this.storeDir });
    }
    const fetched = await fetchByCid(this.client.host.node, this.store, f.cid, { provide: false, signal: AbortSignal.timeout(15_000), maxBytes: 64 << 20 });
    return readFile(fetched.path);
  }
}
