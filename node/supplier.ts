/**
 * A supplier node: everything `gridpipe supply` runs. It probes the machine, joins the grid (libp2p +
 * DHT), imports or fetches the fragments it hosts (verified by CID) and serves them to peers, runs them
 * for clients within its share limits, and keeps a signed capacity record in the DHT. `stop()` withdraws
 * the record (a tombstone) and shuts everything down cleanly.
 *
 * Which fragments: a fragment folder is hosted whole (or `fragments`); a manifest CID with `fragments`
 * hosts those; a manifest CID alone is placed (node/placement): the supplier fetches the manifest, reads
 * the swarm's capacity records, takes the span where the swarm is weakest that fits its memory, lists it
 * in its record before downloading it, and then a placement agent moves it when the swarm is badly
 * balanced (fetch the new span, serve it, publish, stop serving the old one).
 */
import '../net/polyfill.js';
import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { createLogger } from '../net/logger.js';
import { withTimeout } from '../net/deadline.js';
import type { Manifest } from '../fragments/manifest.js';
import { createGridHost, type GridHost, type NetworkKind } from '../net/host.js';
import { probeCapacity, type ProbeResult } from './probe.js';
import { CapacityPublisher, findAllRecords } from '../net/capacity/dht.js';
import { expertsOfFragment, fieldsFromProbe, type CapacityRecord, type CapacityRecordFields, type HostedFragment } from '../net/capacity/record.js';
import { StakeBinder, type StakeBindingStatement } from '../net/capacity/binding.js';
import { ShareLimits, type ShareLimitOptions } from './limits.js';
import { FragmentStore, hostedBlobCids, parseBlobCid } from '../net/store/fragment-store.js';
import { handleBlobProtocol } from '../net/store/blob-protocol.js';
import { fetchManifestAndFragments, provideBlobs } from '../net/store/fetcher.js';
import { FetchError } from '../net/store/errors.js';
import { peerIdFromString } from '@libp2p/peer-id';
import type { PeerId } from '@libp2p/interface';
import { startExecServer, type ExecServer } from './exec/protocol.js';
import { PeerGuard } from '../net/peer-guard.js';
import type { PeerPenaltiesOptions } from '../policy/peer-penalties.js';
import type { ProviderChoice } from './exec/executor.js';
import { checkAdminRequest, writeAdminToken } from './admin-guard.js';
import { openChain, type ChainAccess, type ChainAccessOptions } from '../contracts/chain.js';
import { SupplierPayments, type EarningsSummary } from './payments/supplier-payments.js';
import { parseBaseUnits } from '../policy/pricing.js';
import { PlacementAgent, type PlacementStatus, type SpanHost } from './placement/index.js';
import { placementModelOf } from '../policy/placement-model.js';
import { expertFragmentsOf, hasCutExperts } from '../policy/expert-placement.js';
import { joinExpertSwarm } from './placement/expert-join.js';
import { ExpertRepairAgent } from './placement/expert-repair.js';
import { joiningFragment, spansOfIndices, type Span } from '../net/capacity/swarm.js';
import { GridpipeError } from '../errors/base.js';

export interface SupplierOptions {
  dataDir: string;
  listen?: string[];
  announce?: string[];
  bootstrap?: string[];
  network?: NetworkKind;
  mdns?: boolean;
  /** Behind NAT: be reached through relays and upgrade with DCUtR (net/host.ts). */
  relay?: boolean;
  /** Offer relay service to suppliers behind NAT (a public supplier with spare bandwidth). */
  relayServer?: boolean;
  /** Fragment folders (with manifest.json) or manifest CIDs to host. */
  host?: string[];
  /**
   * Which fragment indices of each model to host. Default: all of a fragment folder; for a manifest CID,
   * the span placement chooses (or all, with `placement: false`).
   */
  fragments?: number[];
  /** How a manifest CID without `fragments` is placed; false hosts all its fragments, no agent. */
  placement?: SupplierPlacementOptions | false;
  /** Compute rate (GFLOP/s) to advertise and place with instead of the probe's measurement. */
  gflops?: number;
  limits?: ShareLimitOptions;
  /** Price per GFLOP in the payment token's base units (decimal string). */
  pricePerGflop?: string;
  /** The EVM address that stakes for this supplier (with `payments`: the wallet's, which is also the payee). */
  stakingAddress?: string;
  /**
   * A binding of `stakingAddress` to this peer, signed by the staking key (`gridpipe stake bind`), for a
   * supplier without that key. A paid supplier signs its own with its wallet. Without a valid binding the
   * record's staking address counts for nothing.
   */
  stakeBinding?: StakeBindingStatement;
  /** Charge for steps (vouchers, node/payments); absent: serve for free. */
  payments?: SupplierPaymentOptions;
  /** Capacity record life (default 10 min; re-published at half-life). */
  recordTtlMs?: number;
  /**
   * Local admin endpoint on 127.0.0.1 (pause, resume, status, metrics, payments, redeem); 0 picks a port; omit
   * for none. Guarded by Host/Origin checks and a token in `<data>/admin-token` (node/admin-guard.ts).
   */
  adminPort?: number;
  /** Execution provider to try first (default: the best the probe found). */
  provider?: ProviderChoice;
  rerunProbe?: boolean;
  /** Let onnxruntime's threads spin during a run (faster steps; see ExecServerInit.allowSpinning). */
  spin?: boolean;
  /**
   * Run onnxruntime on the node's own thread instead of a worker thread per fragment (ExecServerInit.offThread
   * false): about 0.5 ms less per step and hop, but a long run then blocks the node (other sessions, keep-alives,
   * the admin endpoint) until it ends. For a supplier whose clients are all trusted.
   */
  inlineRuns?: boolean;
  /**
   * Runs measured shorter than this many ms in the worker thread (a small span's decode steps) move to the
   * main thread, where they skip the hand-off (node/exec/run-placement.ts; default 20, 0: never).
   */
  inlineBelowMs?: number;
  /** Limits on malformed messages and streams per peer before it is hung up on and refused (net/peer-guard.ts; defaults in policy/peer-penalties.ts). */
  peerGuard?: Pick<PeerPenaltiesOptions, 'garbage' | 'streams' | 'refuseMs' | 'maxRefuseMs'>;
  /** Longest wait, in µs, for other sessions' steps to batch with when the span is idle (node/exec/batcher.ts; default 50000, and at most half a session's interval between steps). */
  batchWindowUs?: number;
  /** Most sessions' steps in one onnxruntime run (default 16; 1: no batching). */
  maxBatch?: number;
  logger?: Logger;
  /** Progress of fetching fragments (bytes so far, total, what). */
  onFetchProgress?: (done: number, total: number, what: string) => void;
}

/** How a supplier charges (see node/payments/README.md for the defaults). */
export interface SupplierPaymentOptions {
  /** Chain config, RPC URL and wallet (keystore file or decrypted wallet), or an open access. */
  chain: ChainAccessOptions | ChainAccess;
  /** Unpaid work allowed per payer, base units. */
  creditLimit?: bigint;
  /** Unpaid work allowed over all payers of one remote peer, base units (default: creditLimit). */
  creditPerPeer?: bigint;
  /** Unpaid work allowed over all payers, base units (default: 16 × creditLimit). */
  creditTotal?: bigint;
  /** How often PaymentEscrow is polled for WithdrawalRequested (ms, default 4000). */
  withdrawalPollMs?: number;
  /** Redeem automatically once this much is held unredeemed, base units. */
  redeemThreshold?: bigint;
  /** Vouchers must stay redeemable at least this long (seconds). */
  minDeadlineSeconds?: number;
  /** Sign a receipt with each reply (default: when the chain has a DisputeManager). */
  receipts?: boolean;
}

/** Placement of a model given by manifest CID without explicit fragments (see node/placement). */
export interface SupplierPlacementOptions {
  /** Bytes for the span's weights and KV budget, per placed model (default: the share limit's maxMemoryBytes). */
  memoryBytes?: number;
  /** Most fragments to host (default: as many as fit). */
  maxFragments?: number;
  /** Place a fragment folder's model too (import it all, serve the chosen span); default for a folder: serve all of it. */
  folders?: boolean;
  /** KV positions budgeted per hosted fragment (default 4096). */
  kvTokens?: number;
  /** Sleep uniform(0, this) before choosing, so suppliers started together spread out (default 5 s). */
  joinJitterMs?: number;
  /** Rebalance: run the agent (default true). */
  rebalance?: boolean;
  /** Mean time between rebalance checks; each wait is uniform(0.5, 1.5) × this (default 60 s). */
  checkEveryMs?: number;
  /** Move when the bottleneck would grow beyond before/q (default 0.75). */
  q?: number;
  /** How long sessions on a span left behind may go on before its fragments are unloaded (default 60 s). */
  drainMs?: number;
  /** Timeout of one read of the swarm's records (default 10 s). */
  lookupTimeoutMs?: number;
}

/** A fragment this supplier hosts. */
export interface HostedModelFragment {
  manifestCid: string;
  manifest: Manifest;
  index: number;
  cid: string;
  path: string;
}

export class Supplier {
  private stopped = false;
  /** Fragments served now. */
  private readonly served: HostedModelFragment[] = [];
  /** Spans chosen and listed in the record, not served yet (by manifest CID). */
  private readonly joining = new Map<string, { manifest: Manifest; span: Span; indices?: number[] }>();
  private readonly agents = new Map<string, PlacementAgent>();
  /** Cut MoE models placed by this supplier: each puts experts whose host left back on two hosts (node/placement/expert-repair.ts). */
  private readonly expertRepairs = new Map<string, ExpertRepairAgent>();
  /** Aborted by stop(): ends a join of a mixture-of-experts model in flight. */
  private readonly stopping = new AbortController();
  readonly publisher: CapacityPublisher;
  /** The compute rate advertised and placed with (GFLOP/s). */
  readonly gflops: number;

  private constructor(
    readonly host: GridHost,
    readonly store: FragmentStore,
    readonly exec: ExecServer,
    readonly limits: ShareLimits,
    readonly probe: ProbeResult,
    private readonly stopBlob: () => Promise<void>,
    readonly logger: Logger,
    /** What the exec server serves: fragment and manifest CIDs to files. */
    private readonly paths: Map<string, string>,
    private readonly options: SupplierOptions,
    private readonly dataDir: string,
    /** Payments, when the supplier charges. */
    readonly payments?: SupplierPayments,
  ) {
    this.gflops = options.gflops ?? probe.benchmark.matmulGflops;
    this.publisher = new CapacityPublisher(host, {
      fields: async () => ({ ...this.fields(), ...(this.binder ? await this.binder.current() : {}) }), ttlMs: options.recordTtlMs,
    });
  }

  private admin?: Server;
  /** The chain connection of a paid supplier. */
  private chain?: ChainAccess;
  /** Which stake binding the records carry (signed here with the wallet, or given). */
  private binder?: StakeBinder;
  /** Why this supplier's stake binding does not hold (undefined: bound, or no staking address named). */
  stakeProblem?: string;

  /** What the voucher book holds (a paid supplier). */
  earnings(): EarningsSummary | undefined {
    return this.payments?.earnings();
  }

  /** Starts a supplier (see module doc). */
  static async start(options: SupplierOptions): Promise<Supplier> {
    const logger = options.logger ?? createLogger();
    const dataDir = path.resolve(options.dataDir);
    await mkdir(dataDir, { recursive: true });
    const probe = await probeCapacity({ dataDir, rerun: options.rerunProbe, threads: options.limits?.threads, logger: logger.child({ component: 'probe' }) });
    const limits = new ShareLimits(options.limits ?? {}, { memoryBytes: probe.memoryTotalBytes, cores: probe.cpuCores });
    if (options.gflops !== undefined && !(options.gflops > 0)) throw new RangeError(`gflops must be positive, got ${options.gflops}`);
    const host = await createGridHost({
      dataDir, network: options.network, listen: options.listen, announce: options.announce, bootstrap: options.bootstrap,
      mdns: options.mdns, relay: options.relay, relayServer: options.relayServer, logger,
    });
    const cleanups: (() => Promise<unknown>)[] = [() => host.stop()];
    let chain: ChainAccess | undefined;
    try {
      let payments: SupplierPayments | undefined;
      if (options.payments) {
        const given = options.payments.chain;
        chain = 'contracts' in given ? given : await openChain(given);
        const ownsChain = !('contracts' in given);
        const access = chain;
        if (ownsChain) cleanups.push(async () => access.close());
        if (options.stakingAddress && access.address && options.stakingAddress.toLowerCase() !== access.address.toLowerCase()) {
          throw new GridpipeError('WRONG_STAKING_ADDRESS', `the staking address ${options.stakingAddress} is not the wallet's (${access.address}); a paid supplier stakes and is paid with its wallet`, { badInput: true });
        }
        payments = await SupplierPayments.start({
          chain: access, dataDir, pricePerGflop: parseBaseUnits(options.pricePerGflop, 'the price per GFLOP'),
          creditLimit: options.payments.creditLimit, redeemThreshold: options.payments.redeemThreshold,
          creditPerPeer: options.payments.creditPerPeer, creditTotal: options.payments.creditTotal, withdrawalPollMs: options.payments.withdrawalPollMs,
          minDeadlineSeconds: options.payments.minDeadlineSeconds, receipts: options.payments.receipts,
          registry: host.metrics, logger: host.logger.child({ component: 'payments' }),
        });
        const started = payments;
        cleanups.push(() => started.stop());
      }
      const store = await FragmentStore.open({ dataDir, registry: host.metrics, logger: host.logger });
      // Re-hash stored blobs in the background so the first request after a restart is not slowed by it.
      void store.verifyAll().catch((err: unknown) => host.logger.warn({ err }, 'store verification failed'));
      // One guard for both protocols: a peer that floods or sends garbage to either is hung up on and refused.
      const guard = new PeerGuard(host.node, { registry: host.metrics, logger: host.logger, ...options.peerGuard });
      cleanups.push(async () => guard.stop());
      const stopBlob = await handleBlobProtocol(host.node, store, { logger: host.logger, guard });
      cleanups.push(stopBlob);

      const paths = new Map<string, string>();
      const exec = await startExecServer(host.node, {
        resolve: (cid) => paths.get(cid),
        limits,
        registry: host.metrics,
        logger: host.logger,
        provider: providerChoice(options.provider ?? probe.benchmark.executionProvider),
        allowSpinning: options.spin,
        offThread: !options.inlineRuns,
        inlineBelowMs: options.inlineBelowMs,
        batching: options.maxBatch === 1 ? false : { windowUs: options.batchWindowUs, maxBatch: options.maxBatch },
        payments,
        guard,
      });
      cleanups.push(() => exec.stop());

      const supplier = new Supplier(host, store, exec, limits, probe, stopBlob, logger, paths, options, dataDir, payments);
      supplier.chain = chain;
      // Staked suppliers' records outrank others in this node's record quota.
      if (chain) host.capacityQuota.stakeCheck = chain.contracts.stakeRegistry;
      supplier.binder = new StakeBinder({
        peerId: host.peerId.toString(), stakingAddress: options.stakingAddress, statement: options.stakeBinding,
        ...(chain?.wallet ? { wallet: chain.wallet, domain: { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry } } : {}),
        onUnbound: (problem) => { supplier.stakeProblem = problem; logger.warn(problem); },
      });
      supplier.stakeProblem = supplier.binder.checkAtStart();
      if (supplier.stakeProblem) logger.warn(supplier.stakeProblem);
      else if (options.stakingAddress && !options.stakeBinding && !chain?.wallet) {
        supplier.stakeProblem = `--staking-address ${options.stakingAddress} needs a stake binding signed by that key (gridpipe stake bind, then --stake-binding FILE); running as unstaked`;
        logger.warn(supplier.stakeProblem);
      }
      // A chosen span may have been announced before a failure: withdraw it rather than leave it listed.
      cleanups.push(async () => { if (supplier.publisher.current) await supplier.publisher.unpublish(); });
      cleanups.push(() => supplier.stopAgents());
      await supplier.hostModels();
      if (options.adminPort !== undefined) await supplier.startAdmin(options.adminPort);
      supplier.startAnnouncing();
      for (const agent of supplier.agents.values()) agent.start();
      for (const repair of supplier.expertRepairs.values()) repair.start();
      logger.info({ peerId: host.peerId.toString(), addresses: host.addresses(), hosted: supplier.served.length }, 'supplier ready');
      return supplier;
    } catch (err) {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
      throw err;
    }
  }

  /** The fragments served now (a copy; placement may change them). */
  get hosted(): HostedModelFragment[] { return [...this.served]; }

  /** Where each placed model stands: its span, the agent's checks and moves. */
  get placement(): PlacementStatus[] { return [...this.agents.values()].map((a) => a.status); }

  /** What the capacity record says: hardware, prices, limits, served fragments and joining ones. */
  private fields(): CapacityRecordFields {
    const { probe, limits, exec } = this;
    const rate = (flops: number): number => (this.gflops * 1e9) / Math.max(1, flops);
    const load = Math.min(1, exec.sessions.size / limits.maxSessions);
    const fragments: HostedFragment[] = this.served.map((h) => ({
      cid: h.cid, manifestCid: h.manifestCid, index: h.index, stepsPerSecond: rate(h.manifest.fragments[h.index].flops),
      load, activeSessions: exec.sessions.size, ...expertsOfFragment(h.manifest, h.index),
    }));
    for (const [manifestCid, { manifest, span, indices }] of this.joining) {
      for (const j of indices ?? Array.from({ length: span.end - span.start }, (_, n) => span.start + n)) {
        if (this.served.some((h) => h.manifestCid === manifestCid && h.index === j)) continue;
        const f = manifest.fragments[j];
        fragments.push(joiningFragment({ cid: f.cid, manifestCid, index: j, stepsPerSecond: rate(f.flops), ...expertsOfFragment(manifest, j) }));
      }
    }
    const base = fieldsFromProbe(probe);
    return {
      ...base,
      benchmark: { ...probe.benchmark, matmulGflops: this.gflops },
      pricePerGflop: this.options.pricePerGflop ?? '0',
      stakingAddress: this.payments?.payee ?? this.options.stakingAddress ?? '',
      fragments,
      limits: {
        maxMemoryBytes: limits.maxMemoryBytes, maxSessions: limits.maxSessions, threads: limits.threads,
        gpuShare: limits.gpuShare, hours: limits.hours?.text ?? '', paused: limits.paused,
      },
    };
  }

  get peerId(): string { return this.host.peerId.toString(); }
  addresses(): string[] { return this.host.addresses(); }
  /** Address of the admin endpoint, when it runs. */
  get adminUrl(): string | undefined {
    const a = this.admin?.address();
    return a && typeof a === 'object' ? `http://127.0.0.1:${a.port}` : undefined;
  }

  /**
   * Announces the hosted blobs (DHT provide) and the capacity record, in the background: a DHT query
   * with an empty routing table only ends at its timeout, and the first supplier of a network starts
   * alone. So nothing waits on it, and it runs again whenever a peer connects after a lonely attempt.
   */
  private startAnnouncing(): void {
    let lonely = true;
    let running = false;
    const announce = async (): Promise<void> => {
      if (running || this.stopped) return;
      running = true;
      lonely = this.host.routingTableSize() === 0;
      try {
        const [failures, published] = await Promise.all([
          provideBlobs(this.host.node, blobsOf(this.served), { signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS) }),
          this.publisher.isRunning ? this.publisher.publishNow() : this.publisher.start(),
        ]);
        if (failures.length) this.logger.debug({ failures: failures.length }, 'some hosted blobs could not be announced yet');
        this.logger.info({ ok: published.ok, storedBy: published.accepted.length }, 'capacity record published');
      } catch (err) {
        this.logger.debug({ err }, 'announcement incomplete; will retry');
      } finally {
        running = false;
      }
    };
    this.onPeer = () => { if (lonely && !this.stopped) setTimeout(() => { void announce(); }, 200); };
    this.host.node.addEventListener('peer:connect', this.onPeer);
    void announce();
  }

  private onPeer?: () => void;

  /** Stops taking new sessions and says so in the capacity record. */
  async pause(): Promise<void> {
    this.limits.pause();
    this.logger.info('sharing paused');
    await this.publisher.publishNow().catch(() => undefined);
  }

  async resume(): Promise<void> {
    this.limits.resume();
    this.logger.info('sharing resumed');
    await this.publisher.publishNow().catch(() => undefined);
  }

  /** Withdraws the capacity record and stops every part; safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopping.abort(new Error('the supplier is stopping'));
    if (this.onPeer) this.host.node.removeEventListener('peer:connect', this.onPeer);
    await this.stopAgents();
    // Alone, there is nobody to tell; with peers that went away, the DHT write only ends at its timeout. Either
    // way a shutdown must not take minutes: the record expires on its own.
    if (this.host.routingTableSize() === 0) this.publisher.stop();
    else {
      await withTimeout(this.publisher.unpublish(), UNPUBLISH_PATIENCE_MS, 'withdrawing the capacity record')
        .catch((err: unknown) => this.logger.warn({ err }, 'could not withdraw the capacity record'));
    }
    await new Promise<void>((resolve) => (this.admin ? this.admin.close(() => resolve()) : resolve()));
    await this.exec.stop().catch(() => undefined);
    // After the exec server: no step can bring a voucher any more; redeem what is held.
    if (this.payments) await this.payments.stop().catch((err: unknown) => this.logger.warn({ err }, 'payments did not stop cleanly'));
    if (this.chain && !('contracts' in (this.options.payments?.chain ?? {}))) this.chain.close();
    await this.stopBlob().catch(() => undefined);
    await this.host.stop();
    this.logger.info('supplier stopped');
  }

  private async stopAgents(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    await Promise.all([...this.expertRepairs.values()].map((a) => a.stop()));
  }

  /** Publishes the record now; a failure is logged (the publisher retries on its own). */
  private async publishQuietly(): Promise<void> {
    // Alone, a DHT put only ends at its timeout; startAnnouncing publishes as soon as a peer connects.
    if (this.host.routingTableSize() === 0) return;
    await this.publisher.publishNow().then(
      (r) => { if (!r.ok) this.logger.debug({ error: r.error }, 'capacity record stored by too few peers for now'); },
      (err: unknown) => this.logger.warn({ err: (err as Error).message }, 'capacity record could not be published'),
    );
  }

  /** Imports fragment folders, fetches manifests by CID, links the hosted fragments; places the rest. */
  private async hostModels(): Promise<void> {
    const { options, store, logger } = this;
    for (const source of options.host ?? []) {
      const isDir = await stat(source).then((s) => s.isDirectory(), () => false);
      if (isDir) {
        const { manifestCid, manifest } = await store.importManifestDir(source);
        // Placing a folder: the whole model is in the store (and provided to others), only the chosen span is served.
        if (options.fragments === undefined && options.placement && options.placement.folders) await this.place(manifestCid, manifest, options.placement);
        else await this.serve(manifestCid, manifest, options.fragments ?? manifest.fragments.map((f) => f.index));
        continue;
      }
      let cid: string;
      try {
        cid = parseBlobCid(source);
      } catch {
        throw new GridpipeError('BAD_HOST', `--host ${source}: neither a fragment folder nor a manifest CID`, { badInput: true });
      }
      const place = options.fragments === undefined && options.placement !== false;
      logger.info({ manifestCid: cid }, place ? 'fetching the manifest to choose a span' : 'fetching the manifest and fragments');
      const { manifestCid, manifest } = await this.fetch(cid, place ? [] : options.fragments);
      if (place) await this.place(manifestCid, manifest, options.placement || {});
      else await this.serve(manifestCid, manifest, options.fragments ?? manifest.fragments.map((f) => f.index));
    }
  }

  /** Fetches a manifest and the given fragments (all when undefined), waiting for the model to be announced. */
  private fetch(manifestCid: string, indices: number[] | undefined, signal?: AbortSignal): ReturnType<typeof fetchManifestAndFragments> {
    const { host, store, options, logger } = this;
    return fetchWhenPublished(host, () => fetchManifestAndFragments(host.node, store, manifestCid, indices, {
      onProgress: (done, total) => options.onFetchProgress?.(done, total, manifestCid),
      // The peers we joined through are likely hosts: ask them before the DHT answers.
      peers: bootstrapPeers(options.bootstrap ?? []),
      signal,
      logger,
    }), logger, signal);
  }

  /** Whether the store already holds these fragments (an imported folder): then nothing needs fetching, or waiting for providers. */
  private async holdsFragments(manifest: Manifest, indices: number[]): Promise<boolean> {
    for (const j of indices) {
      const f = manifest.fragments[j];
      if (!(await this.store.has(f.cid)) || (f.data && !(await this.store.has(f.data.cid)))) return false;
    }
    return true;
  }

  /** Links fetched or imported fragments and serves them. Returns the fragments newly served. */
  private async serve(manifestCid: string, manifest: Manifest, indices: number[]): Promise<HostedModelFragment[]> {
    const dir = path.join(this.dataDir, 'hosted', manifestCid);
    const added: HostedModelFragment[] = [];
    for (const index of indices) {
      if (!manifest.fragments[index]) throw new GridpipeError('NO_SUCH_FRAGMENT', `--fragments ${index}: ${manifest.name} has ${manifest.fragments.length} fragments`, { badInput: true });
      if (this.served.some((h) => h.manifestCid === manifestCid && h.index === index)) continue;
      const linked = await this.store.linkFragment(manifest, index, dir);
      const f = manifest.fragments[index];
      const h = { manifestCid, manifest, index, cid: f.cid, path: linked.model };
      this.paths.set(h.cid, h.path);
      this.served.push(h);
      added.push(h);
    }
    const manifestPath = await this.store.get(manifestCid);
    if (manifestPath) this.paths.set(manifestCid, manifestPath);
    this.logger.info({ model: manifest.name, manifestCid, fragments: this.served.filter((h) => h.manifestCid === manifestCid).map((h) => h.index) }, 'hosting');
    for (const h of added) this.preload(h);
    return added;
  }

  /**
   * Loads a served fragment into onnxruntime now, in the background, instead of on its first session: a cold load
   * (about a second for 85M parameters here) otherwise lands on the first client's step. The pipeline bench's
   * 8 sessions, routed to a replica that had not served yet, spent it opening their sessions: 0.95 s of a 3.4 s run.
   * A failed load is logged and tried again by the first session (ExecutorPool forgets failures).
   */
  private preload(h: HostedModelFragment): void {
    const started = performance.now();
    this.exec.executors.get(h.cid).then(
      () => this.logger.debug({ cid: h.cid, index: h.index, ms: Math.round(performance.now() - started) }, 'fragment loaded'),
      (err: unknown) => this.logger.warn({ cid: h.cid, index: h.index, err: (err as Error).message }, 'could not load a served fragment yet; its first session will try again'),
    );
  }

  /**
   * Stops serving fragments already taken out of `served` (and of the record): new sessions cannot load them once they leave the resolver; they are
   * unloaded when no session is open, or after the drain time (a step of a session still on them then
   * fails with an error naming the closed fragment).
   */
  private retire(leaving: HostedModelFragment[], drainMs: number): void {
    if (leaving.length === 0) return;
    for (const h of leaving) if (!this.served.some((s) => s.cid === h.cid)) this.paths.delete(h.cid);
    this.logger.info({ fragments: leaving.map((h) => h.index), manifestCid: leaving[0].manifestCid, sessions: this.exec.sessions.size }, 'stopped serving fragments');
    const deadline = Date.now() + drainMs;
    const unload = async (): Promise<void> => {
      if (this.stopped) return;
      if (this.exec.sessions.size > 0 && Date.now() < deadline) {
        setTimeout(() => { void unload(); }, Math.min(500, drainMs)).unref();
        return;
      }
      for (const h of leaving) if (!this.paths.has(h.cid)) await this.exec.executors.unload(h.cid);
    };
    void unload();
  }

  /** Chooses a span for a model by placement, hosts it, and keeps an agent for it. */
  private async place(manifestCid: string, manifest: Manifest, p: SupplierPlacementOptions): Promise<void> {
    const model = placementModelOf(manifest, { kvTokens: p.kvTokens });
    if (hasCutExperts(manifest)) { await this.placeExperts(manifestCid, manifest, model, p); return; }
    const drainMs = p.drainMs ?? 60_000;
    const spanHost: SpanHost = {
      current: () => {
        const spans = spansOfIndices(this.served.filter((h) => h.manifestCid === manifestCid).map((h) => h.index));
        return spans.length ? { start: spans[0].start, end: spans[spans.length - 1].end } : undefined;
      },
      announce: async (target) => {
        if (this.stopped) throw new Error('the supplier is stopping');
        this.joining.set(manifestCid, { manifest, span: target });
        await this.publishQuietly();
      },
      abandon: async (target) => {
        const j = this.joining.get(manifestCid);
        if (j && j.span.start === target.start && j.span.end === target.end) this.joining.delete(manifestCid);
        if (!this.stopped) await this.publishQuietly();
      },
      commit: async (target, signal) => {
        const indices = Array.from({ length: target.end - target.start }, (_, i) => target.start + i);
        const missing = indices.filter((j) => !this.served.some((h) => h.manifestCid === manifestCid && h.index === j));
        if (missing.length && !(await this.holdsFragments(manifest, missing))) await this.fetch(manifestCid, missing, signal);
        if (signal.aborted || this.stopped) throw (signal.reason as Error | undefined) ?? new Error('the supplier is stopping');
        const added = await this.serve(manifestCid, manifest, missing);
        const leaving = this.served.filter((h) => h.manifestCid === manifestCid && (h.index < target.start || h.index >= target.end));
        this.joining.delete(manifestCid);
        // the record lists the new span served and the old one gone before the old one stops
        for (const h of leaving) this.served.splice(this.served.indexOf(h), 1);
        await this.publishQuietly();
        this.retire(leaving, drainMs);
        if (added.length && this.publisher.isRunning) {
          void provideBlobs(this.host.node, blobsOf(added), { signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS) }).catch(() => undefined);
        }
      },
    };
    const lookupTimeoutMs = p.lookupTimeoutMs ?? 10_000;
    const agent = new PlacementAgent({
      manifestCid,
      model,
      self: {
        peerId: this.peerId,
        memoryBytes: p.memoryBytes ?? this.limits.maxMemoryBytes,
        ...(p.maxFragments ? { maxLength: p.maxFragments } : {}),
        throughput: this.gflops * 1e9,
      },
      host: spanHost,
      // Alone (the first supplier of a network), there is nobody to ask, and a DHT query would only time out.
      records: async () => (this.host.routingTableSize() === 0 ? [] : findAllRecords(this.host, { timeoutMs: lookupTimeoutMs })),
      joinJitterMs: p.joinJitterMs,
      checkEveryMs: p.checkEveryMs,
      q: p.q,
      idle: () => this.limits.paused || this.stopped,
      logger: this.logger,
    });
    if (p.rebalance !== false) this.agents.set(manifestCid, agent);
    try {
      await agent.join();
    } catch (err) {
      this.joining.delete(manifestCid);
      throw err;
    }
  }

  /**
   * Places a model whose MoE layers are cut apart (node/placement/expert-join.ts): a set of fragments that
   * spreads each expert over two or more hosts, chosen at the join; then (unless rebalance is off) a repair agent
   * puts experts whose host left back on two hosts, swapping out fragments others hold enough.
   */
  private async placeExperts(manifestCid: string, manifest: Manifest, model: ReturnType<typeof placementModelOf>, p: SupplierPlacementOptions): Promise<void> {
    const { signal } = this.stopping;
    const self = { peerId: this.peerId, memoryBytes: p.memoryBytes ?? this.limits.maxMemoryBytes, ...(p.maxFragments ? { maxLength: p.maxFragments } : {}) };
    const records = async (): Promise<CapacityRecord[]> => (this.host.routingTableSize() === 0 ? [] : findAllRecords(this.host, { timeoutMs: p.lookupTimeoutMs ?? 10_000 }));
    const drainMs = p.drainMs ?? 60_000;
    const host = {
      current: (): number[] => this.served.filter((h) => h.manifestCid === manifestCid).map((h) => h.index).sort((a, b) => a - b),
      announce: async (indices: number[]): Promise<void> => {
        if (this.stopped) throw new Error('the supplier is stopping');
        this.joining.set(manifestCid, { manifest, span: { start: 0, end: 0 }, indices });
        await this.publishQuietly();
      },
      commit: async (indices: number[], commitSignal: AbortSignal): Promise<void> => {
        const missing = indices.filter((j) => !this.served.some((h) => h.manifestCid === manifestCid && h.index === j));
        if (missing.length && !(await this.holdsFragments(manifest, missing))) await this.fetch(manifestCid, missing, commitSignal);
        if (commitSignal.aborted || this.stopped) throw (commitSignal.reason as Error | undefined) ?? new Error('the supplier is stopping');
        const added = await this.serve(manifestCid, manifest, missing);
        this.joining.delete(manifestCid);
        // A repair replaces fragments: the record lists the new set before the replaced ones stop (after draining).
        const leaving = this.served.filter((h) => h.manifestCid === manifestCid && !indices.includes(h.index));
        for (const h of leaving) this.served.splice(this.served.indexOf(h), 1);
        await this.publishQuietly();
        this.retire(leaving, drainMs);
        if (added.length && this.publisher.isRunning) {
          void provideBlobs(this.host.node, blobsOf(added), { signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS) }).catch(() => undefined);
        }
      },
    };
    try {
      await joinExpertSwarm({ manifestCid, model, experts: expertFragmentsOf(manifest), signal, self, records, joinJitterMs: p.joinJitterMs, logger: this.logger, host });
    } catch (err) {
      this.joining.delete(manifestCid);
      throw err;
    }
    if (p.rebalance !== false) {
      this.expertRepairs.set(manifestCid, new ExpertRepairAgent({
        manifestCid, model, experts: expertFragmentsOf(manifest), self, records, host, checkEveryMs: p.checkEveryMs, jitterMs: p.joinJitterMs,
        idle: () => this.limits.paused || this.stopped, logger: this.logger,
      }));
    }
  }

  private async startAdmin(port: number): Promise<void> {
    const token = writeAdminToken(this.dataDir);
    const server = createServer((req, res) => {
      const reply = (code: number, body: unknown, type = 'application/json'): void => {
        res.writeHead(code, { 'content-type': type });
        res.end(type === 'application/json' ? `${JSON.stringify(body)}\n` : String(body));
      };
      const route = `${req.method} ${req.url?.split('?')[0]}`;
      const refused = checkAdminRequest(req, route, (server.address() as AddressInfo).port, token);
      if (refused) { reply(refused.status, { error: refused.error }); return; }
      if (route === 'POST /pause') { void this.pause().then(() => reply(200, { paused: true })); return; }
      if (route === 'POST /resume') { void this.resume().then(() => reply(200, { paused: false })); return; }
      if (route === 'GET /status') {
        reply(200, {
          peerId: this.peerId, addresses: this.addresses(), paused: this.limits.paused, sessions: this.exec.sessions.size,
          hosted: this.served.map((h) => ({ manifestCid: h.manifestCid, index: h.index, cid: h.cid, loaded: this.exec.executors.isLoaded(h.cid) })),
          placement: this.placement, gflops: this.gflops,
          record: this.publisher.current, probe: this.probe,
        });
        return;
      }
      if (route === 'GET /payments') {
        const e = this.earnings();
        reply(e ? 200 : 404, e ? JSON.parse(JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))) : { error: 'this supplier serves for free' });
        return;
      }
      if (route === 'POST /redeem') {
        if (!this.payments) { reply(404, { error: 'this supplier serves for free' }); return; }
        void this.payments.redeemNow().then(
          (r) => reply(200, { redeemed: r.redeemed.toString(), vouchers: r.vouchers, transactions: r.transactions, skipped: r.skipped }),
          (err: unknown) => reply(500, { error: (err as Error).message }),
        );
        return;
      }
      if (route === 'GET /metrics') { void this.host.metrics.metrics().then((m) => reply(200, m, this.host.metrics.contentType)); return; }
      reply(404, { error: `no such endpoint: ${route}` });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.admin = server;
  }
}

/** How long a joining supplier waits for a model it was asked to host to appear on the DHT. */
const FIND_PROVIDERS_PATIENCE_MS = 60_000;

/**
 * Runs a fetch, retrying while nobody provides the blobs yet: a supplier that has just joined may ask
 * before its routing table fills, or before the model's first host has announced it.
 */
async function fetchWhenPublished<T>(host: GridHost, fetch: () => Promise<T>, logger: Logger, signal?: AbortSignal): Promise<T> {
  const deadline = Date.now() + FIND_PROVIDERS_PATIENCE_MS;
  while (host.routingTableSize() === 0 && Date.now() < deadline && !signal?.aborted) await sleep(100);
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch();
    } catch (err) {
      if (!(err instanceof FetchError) || err.code !== 'NO_PROVIDERS' || Date.now() >= deadline || signal?.aborted) throw err;
      const wait = Math.min(5000, 250 * 2 ** attempt);
      logger.info({ cid: err.cid, retryInMs: wait }, 'no provider found yet; waiting for the model to be announced');
      await sleep(wait);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Peer ids named in bootstrap multiaddrs (…/p2p/<id>). */
function bootstrapPeers(addrs: string[]): PeerId[] {
  const out: PeerId[] = [];
  for (const a of addrs) {
    const id = /\/p2p\/([^/]+)$/.exec(a)?.[1];
    if (!id) continue;
    try { out.push(peerIdFromString(id)); } catch { /* not a peer id: the DHT will do */ }
  }
  return out;
}

/** Every blob behind the hosted fragments, once each. */
function blobsOf(hosted: HostedModelFragment[]): string[] {
  // The tokenizer files travel with the manifest: a gateway that finds the model by CID needs them to tokenize.
  return [...new Set(hosted.flatMap((h) => hostedBlobCids(h.manifestCid, h.manifest, [h.index])))];
}

/** Longest a shutdown waits for the tombstone to be stored (it is best effort: records expire anyway). */
const UNPUBLISH_PATIENCE_MS = 5_000;

/** Longest a round of DHT announcements may take. */
const ANNOUNCE_TIMEOUT_MS = 15_000;

/** The probe's provider name as an executor choice (anything unknown: let the executor pick). */
function providerChoice(name: string): ProviderChoice {
  return name === 'cpu' || name === 'cuda' || name === 'webgpu' || name === 'auto' ? name : 'auto';
}
