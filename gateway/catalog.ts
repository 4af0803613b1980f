/**
 * The models the gateway can serve: manifests discovered from suppliers' capacity records in the DHT (each
 * fetched by CID) plus those given with `--model`, each with its tokenizer and whether every fragment has a
 * live host right now. A model's id is its manifest name; its manifest CID is accepted too.
 *
 * The catalog reads the records from the grid client's swarm view (scheduler/swarm-view.ts): its sweep is
 * the same DHT sweep that updates every open model's hosts, and what it fetches (manifests, tokenizer files)
 * goes into the client's one store.
 *
 * What a record can make the gateway fetch: with a stake check (a chain), only records bound to a staked
 * address (scheduler/discovery.ts isStakedRecord) count, so a fresh key's record makes no manifest fetch;
 * on an open grid (no chain) at most `maxDiscovered` discovered manifests are opened or tried (default 64);
 * `--model` ones are always opened.
 */
import { existsSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import type { GridClient, OpenModel } from '../scheduler/client.js';
import { isStakedRecord, spansOf, type HostedSpan, type StakeCheck } from '../scheduler/discovery.js';
import { loadTokenizer, type TextTokenizer } from './tokenizers/index.js';
import { tokenizerFileReader } from './tokenizers/files.js';
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
  /** Background sweep period (default 15 s; 0 = none); each sweep also updates every open model's hosts. */
  refreshEveryMs?: number;
  /** Count only bound, staked suppliers as hosts (as routing does when the client has the same check). */
  stakeCheck?: StakeCheck;
  /** Most discovered (not --model) manifests opened or tried, so records cannot make the gateway fetch without end (default 64). */
  maxDiscovered?: number;
  logger?: Logger;
}

/** Shortest time between two attempts to load a model's tokenizer after one failed. */
const TOKENIZER_RETRY_MS = 5000;

export class ModelCatalog {
  private readonly byCid = new Map<string, CatalogModel>();
  /** Hosts of each model at the last sweep: likely holders of its tokenizer files. */
  private readonly lastSpans = new Map<string, HostedSpan[]>();
  /** Text models whose tokenizer failed to load (a fetch can succeed later): when it was last tried, and the try running. */
  private readonly tokenizerRetry = new Map<string, { at: number; sourceDir?: string; running?: Promise<void> }>();
  private readonly opening = new Map<string, Promise<CatalogModel | undefined>>();
  private readonly failedCids = new Map<string, number>();
  /** Discovered manifest CIDs opened or tried (counted against maxDiscovered). */
  private readonly triedDiscovered = new Set<string>();
  private lastSweep = 0;
  private sweeping?: Promise<void>;
  private timer?: ReturnType<typeof setInterval>;

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

  /**
   * Sweeps the DHT for capacity records through the swarm view (at most every minRefreshMs unless forced); adds
   * new models, updates coverage.
   */
  refresh(force = false): Promise<void> {
    if (!force && Date.now() - this.lastSweep < (this.options.minRefreshMs ?? 2000)) return this.sweeping ?? Promise.resolve();
    this.sweeping ??= this.sweep().finally(() => { this.sweeping = undefined; this.lastSweep = Date.now(); });
    return this.sweeping;
  }

  /** The model with this id or manifest CID; sweeps once more before answering 404. */
  async resolve(id: string): Promise<CatalogModel> {
    const found = this.find(id);
    if (found) return this.withTokenizer(found);
    await this.refresh();
    const again = this.find(id);
    if (again) return this.withTokenizer(again);
    throw notFound(`the model "${id}" does not exist on this grid (GET /v1/models lists the servable ones)`);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping?.catch(() => undefined);
    for (const m of this.byCid.values()) m.open.discovery.stop();
    // A tokenizer fetch still running writes into the client's store: let it end before the client closes.
    await Promise.all([...this.tokenizerRetry.values()].map((r) => r.running));
  }

  private find(id: string): CatalogModel | undefined {
    return this.byCid.get(id) ?? this.all().find((m) => m.id === id);
  }

  private async sweep(): Promise<void> {
    // Withdrawn records are left out by the view.
    const { records } = await this.client.swarm.refresh();
    const spansByCid = new Map<string, HostedSpan[]>();
    for (const r of records) {
      if (this.options.stakeCheck && !(await isStakedRecord(this.options.stakeCheck, r))) continue;
      for (const cid of new Set(r.fragments.map((f) => f.manifestCid))) {
        const spans = spansOf(r, cid).filter((s) => !s.paused);
        if (spans.length) spansByCid.set(cid, [...(spansByCid.get(cid) ?? []), ...spans]);
      }
    }
    // Kept before opening new models: their hosts are where their tokenizer files are fetched from first.
    this.lastSpans.clear();
    for (const [cid, spans] of spansByCid) this.lastSpans.set(cid, spans);
    // Manifests not seen before are fetched by CID (once at a time each; a CID that failed waits a minute).
    const fresh = [...spansByCid.keys()].filter((cid) => !this.byCid.has(cid) && (this.failedCids.get(cid) ?? 0) < Date.now() - 60_000);
    const room = Math.max(0, (this.options.maxDiscovered ?? 64) - this.triedDiscovered.size);
    const known = fresh.filter((cid) => this.triedDiscovered.has(cid));
    const unknown = fresh.filter((cid) => !this.triedDiscovered.has(cid));
    if (unknown.length > room) this.options.logger?.warn({ skipped: unknown.length - room, limit: this.options.maxDiscovered ?? 64 }, 'discovered manifests beyond the limit are not fetched');
    for (const cid of unknown.slice(0, room)) this.triedDiscovered.add(cid);
    await Promise.all([...known, ...unknown.slice(0, room)].map((cid) => this.openDiscovered(cid)));
    for (const model of this.byCid.values()) {
      this.updateCoverage(model, spansByCid.get(model.open.manifestCid) ?? []);
      // In the background: a sweep (and GET /v1/models, which waits for it) need not wait for a tokenizer fetch.
      void this.withTokenizer(model);
    }
  }

  /** The model, after one more try at loading its tokenizer when an earlier one failed (at most every few seconds). */
  private async withTokenizer(model: CatalogModel): Promise<CatalogModel> {
    const retry = this.tokenizerRetry.get(model.open.manifestCid);
    if (!retry || model.tokenizer) return model;
    if (!retry.running && Date.now() - retry.at >= TOKENIZER_RETRY_MS) {
      retry.running = this.loadTokenizerOf(model, retry.sourceDir).finally(() => { retry.running = undefined; });
    }
    await retry.running;
    return model;
  }

  /** Loads the model's tokenizer; on failure records why (text endpoints answer 503) and when, for a later retry. */
  private async loadTokenizerOf(model: CatalogModel, sourceDir?: string): Promise<void> {
    const { manifest, manifestCid } = model.open;
    try {
      model.tokenizer = await loadTokenizer(manifest, tokenizerFileReader({ sourceDir, fetch: (f) => this.client.fetchTokenizerFile(f, this.hostsOf(model)) }));
      if (!model.tokenizer) model.tokenizerError = `${manifest.name} names no tokenizer: send token ids, or use /v1/infer`;
      else model.tokenizerError = undefined;
      this.tokenizerRetry.delete(manifestCid);
    } catch (err) {
      model.tokenizerError = (err as Error).message;
      this.tokenizerRetry.set(manifestCid, { at: Date.now(), sourceDir });
      this.options.logger?.warn({ model: manifest.name, err: model.tokenizerError }, 'tokenizer unavailable; text endpoints will answer 503 for this model until it can be fetched');
    }
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
      missing: [], hosts: 0, created: Math.floor(Date.now() / 1000), pinned,
    };
    this.updateCoverage(model, open.discovery.current);
    if (kind === 'text') await this.loadTokenizerOf(model, sourceDir);
    this.byCid.set(open.manifestCid, model);
    this.options.logger?.info({ model: model.id, manifestCid: open.manifestCid, kind, fragments: manifest.fragments.length, synthetic: manifest.model.synthetic }, 'model added');
    return model;
  }

  private updateCoverage(model: CatalogModel, spans: HostedSpan[]): void {
    const covered = new Set(spans.flatMap((s) => Array.from({ length: s.end - s.start }, (_, i) => s.start + i)));
    const { fragments } = model.open.manifest;
    // An expert fragment with no host is served by a fallback to another expert of its layer (docs/moe.md; a
    // request with strict_experts fails then, naming it): missing only when no expert of its layer has a host.
    const layerServed = (group: number): boolean => fragments.some((f) => f.moe?.role === 'experts' && f.moe.group === group && covered.has(f.index));
    model.missing = fragments.filter((f) => !covered.has(f.index) && !(f.moe?.role === 'experts' && layerServed(f.moe.group))).map((f) => f.index);
    model.hosts = new Set(spans.map((s) => s.peerId)).size;
  }

  /** The model's hosts now and at the last sweep: likely holders of its tokenizer files. */
  private hostsOf(model: CatalogModel): HostedSpan[] {
    return [...model.open.discovery.current, ...(this.lastSpans.get(model.open.manifestCid) ?? [])];
  }
}
