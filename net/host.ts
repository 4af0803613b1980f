/**
 * The libp2p host of a gridpipe node: TCP + Noise + Yamux, identify, ping and a Kad-DHT on the private
 * protocol `/gridpipe/kad/1.0.0` (never the public IPFS DHT), with the capacity record validator and
 * selector registered. Optional: bootstrap list, mDNS (LAN), circuit relay + DCUtR hole punching.
 *
 * Reachability (docs/nat.md): every host can dial relayed (`/p2p-circuit`) addresses and answer DCUtR, so any
 * client reaches a supplier behind NAT; `relay: true` (a node behind NAT) also listens through relays
 * (reserves a slot, advertises the relayed address) and upgrades relayed connections to direct ones with
 * DCUtR; `relayServer` (a public supplier or gateway) offers relay service, with limits sized for pipeline
 * activations rather than libp2p's 128 KiB / 2 min.
 *
 * Addresses: libp2p counts a public address only once it is verified (announced, or confirmed by AutoNAT).
 * A listen address on a specific public IP and a fixed port is the operator saying "reach me here", so it is
 * announced as well (a 0.0.0.0 or port-0 listener is not). Other public addresses (a 0.0.0.0 listener's, a
 * port forward nobody announced) are verified by AutoNAT v2 (@libp2p/autonat-v2): peers dial each address
 * back on a new connection of their own and close only that one (AutoNAT v1 reused, then closed, the asker's
 * existing connection, which dropped relay slots in test/nat/). A listen address confirms with one peer's
 * dial-back; an address only observed by peers needs four, from distinct networks; private addresses are
 * never asked about. `reachability()` reads the verified addresses.
 *
 * Suppliers run the DHT in server mode (`clientMode: false`, the default here); clients (gateways)
 * may pass `clientMode: true`. `network: 'local'` keeps loopback/LAN addresses in the DHT
 * (passthroughMapper) and uses fast start-up timers; `'public'` drops private addresses from DHT
 * answers (removePrivateAddressesMapper), as on the open internet.
 */
import './polyfill.js';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { bootstrap } from '@libp2p/bootstrap';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { autoNATv2 } from '@libp2p/autonat-v2';
import { dcutr } from '@libp2p/dcutr';
import { identify, type Identify } from '@libp2p/identify';
import type { ComponentLogger, Libp2p, Logger as Libp2pLogger, PeerDiscovery, PeerId, PrivateKey, Transport } from '@libp2p/interface';
import { kadDHT, passthroughMapper, removePrivateAddressesMapper, type KadDHT, type SingleKadDHT } from '@libp2p/kad-dht';
import { mdns } from '@libp2p/mdns';
import { ping, type Ping } from '@libp2p/ping';
import { coalescedTcp } from './coalesced-tcp.js';
import { announceWindowAtHalf } from './yamux-window-updates.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { isPrivate } from '@libp2p/utils';
import { LevelDatastore } from 'datastore-level';
import { createLibp2p, type Libp2pOptions } from 'libp2p';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { base32 } from 'multiformats/bases/base32';
import { base58btc } from 'multiformats/bases/base58';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Gauge, Registry } from 'prom-client';
import { VERSION } from '../fragments/version.js';
import { PROTOCOLS } from '../proto/wire.js';
import { capacityDhtRecords } from './capacity/dht.js';
import { CapacityQuota } from './capacity/quota.js';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { MemoryDatastore } from 'datastore-core';
import { CapacityMetrics } from './capacity/metrics.js';
import { loadOrCreateIdentity } from './identity.js';
import { createLogger } from './logger.js';
import { GridpipeError } from '../errors/base.js';

/** The DHT protocol id: the private prefix, never /ipfs/kad/1.0.0. */
export const DHT_PROTOCOL = `${PROTOCOLS.dhtPrefix}/kad/1.0.0`;
/** DHT datastore folder inside the data dir. */
export const DATASTORE_DIR = 'datastore';

export type NetworkKind = 'local' | 'public';

/** Stream and connection limits (defaults sized for multi-MB activations). */
export interface StreamLimits {
  /** Unread bytes a stream may buffer before it is reset (default 64 MiB; libp2p: 4 MiB). */
  maxReadBufferLength?: number;
  /** Unsent bytes a stream may queue before it is reset (default 256 MiB; libp2p: unlimited). */
  maxWriteBufferLength?: number;
  /** Largest yamux receive window a stream grows to (default 16 MiB, the yamux default). */
  maxStreamWindowSize?: number;
  /** Concurrent yamux streams per connection, each way (default 1024). */
  maxStreams?: number;
  /** Idle time after which a stream is reset (default 120 s). */
  inactivityTimeoutMs?: number;
  /** Connections libp2p keeps open at most (default 300). */
  maxConnections?: number;
}

export interface DhtOptions {
  /** k (default 20). */
  kBucketSize?: number;
  /** First self-queries' period (default: local 100 ms, public 1 s). */
  initialQuerySelfIntervalMs?: number;
  /** Self-query period once the table is filled (default 5 min). */
  querySelfIntervalMs?: number;
  /**
   * How long provider records are kept by the nodes that store them, and how often they are cleaned
   * up and our own ones re-provided (defaults 1 h / 10 min). Every node should agree: the
   * CapacityPublisher re-provides at each re-publication, well inside that hour.
   */
  providerValidityMs?: number;
  reprovideIntervalMs?: number;
  /** Most capacity records stored for others (net/capacity/quota.ts; default 4096). */
  maxCapacityRecords?: number;
}

export interface GridHostOptions {
  /** Where the identity key and the DHT/peer datastore live; omit for an in-memory node. */
  dataDir?: string;
  /** Use this key instead of `<dataDir>/identity.key` (or a throwaway key without a data dir). */
  privateKey?: PrivateKey;
  /** Tighten a too-open identity.key instead of refusing it. */
  fixKeyPermissions?: boolean;
  /** 'local' (loopback/LAN: keep private addresses, fast timers) or 'public' (default). */
  network?: NetworkKind;
  /** Listen addresses (default: local → /ip4/127.0.0.1/tcp/0, public → /ip4/0.0.0.0/tcp/0). */
  listen?: string[];
  /** Addresses to announce instead of the listening ones. */
  announce?: string[];
  /** Multiaddrs (with /p2p/<id>) of peers to join through. */
  bootstrap?: string[];
  /** DHT client only (gateways, CLIs, nodes behind NAT); default: server, or client with `relay`. */
  clientMode?: boolean;
  /** Discover peers on the LAN with mDNS (default false). */
  mdns?: boolean | { intervalMs?: number };
  /** Behind NAT: be reached through relays (reserve a slot, advertise the relayed address), upgrade with DCUtR. */
  relay?: boolean;
  /** Also serve as a relay for others (public nodes with spare bandwidth); `true` = RELAY_SERVER_DEFAULTS. */
  relayServer?: boolean | RelayServerOptions;
  dht?: DhtOptions;
  limits?: StreamLimits;
  /** Root logger (default: pino at GRIDPIPE_LOG_LEVEL or 'info'); each component logs through a child. */
  logger?: Logger;
  /**
   * Forward libp2p's internal logs to the pino logger (component `libp2p:*`): 'error' maps their
   * errors to warn, 'debug' adds their log lines as debug, 'trace' everything. Default: silent,
   * or GRIDPIPE_LIBP2P_LOG.
   */
  libp2pLog?: 'silent' | 'error' | 'debug' | 'trace';
  /** Metrics registry (default: a new one for this node). */
  metricsRegistry?: Registry;
}

/** What a relay server lends to each peer behind NAT. */
export interface RelayServerOptions {
  /** Peers holding a slot at once (default 64). */
  maxReservations?: number;
  /** Bytes each relayed connection may carry, both ways together, before the relay resets it (default 256 MiB). */
  dataLimitBytes?: number;
  /**
   * How long each relayed connection may last (default 30 min). circuit-relay-v2 3.x enforces this in ms and
   * shows the client the same number as `limits.seconds`.
   */
  durationLimitMs?: number;
}

/**
 * Relay limits for pipelines: libp2p's defaults (128 KiB, 2 min per relayed connection) end an exec session
 * after a few steps of a small model; a generation's activations are megabytes and its session minutes.
 * DCUtR moves the traffic to a direct connection wherever the NAT allows, so the relay carries only the rest.
 */
export const RELAY_SERVER_DEFAULTS: Required<RelayServerOptions> = { maxReservations: 64, dataLimitBytes: 256 * 1024 * 1024, durationLimitMs: 30 * 60_000 };

/** How others reach this node, as far as it knows. */
export type Reachability = 'public' | 'relayed' | 'unknown';

export interface GridServices extends Record<string, unknown> {
  identify: Identify;
  ping: Ping;
  dht: KadDHT;
  dcutr?: unknown;
  autoNAT?: unknown;
  relay?: unknown;
}

export type GridLibp2p = Libp2p<GridServices>;

export interface GridHost {
  node: GridLibp2p;
  peerId: PeerId;
  privateKey: PrivateKey;
  network: NetworkKind;
  dataDir?: string;
  /** The DHT protocol id this node speaks. */
  dhtProtocol: string;
  /** This node's addresses, each ending in /p2p/<peerId>. */
  addresses(): string[];
  /** Peers in the DHT routing table. */
  routingTableSize(): number;
  /**
   * 'public' with a verified direct public address (announced, or bound to a public IP), 'relayed'
   * when the node is reachable only through relay slots, 'unknown' otherwise.
   */
  reachability(): Reachability;
  /** The node's metrics (capacity counters, routing table, connections). */
  metrics: Registry;
  capacityMetrics: CapacityMetrics;
  /** The bound on capacity records stored for others; set its `stakeCheck` to rank staked records first. */
  capacityQuota: CapacityQuota;
  /** The node's logger (bound to its peer id); `logger.child({ component })` per component. */
  logger: Logger;
  /** Stops libp2p and closes the datastore; safe to call twice. */
  stop(): Promise<void>;
}

const MiB = 1024 * 1024;

// ---------------------------------------------------------------- libp2p logs → pino

function formatLibp2p(fmt: unknown, args: unknown[]): string {
  if (typeof fmt !== 'string') return [fmt, ...args].map((a) => stringify(a, 'o')).join(' ');
  let i = 0;
  const text = fmt.replace(/%([a-zA-Z%])/g, (m, c: string) => {
    if (c === '%') return '%';
    if (i >= args.length) return m;
    return stringify(args[i++], c);
  });
  const rest = args.slice(i).map((a) => stringify(a, 'o'));
  return rest.length ? `${text} ${rest.join(' ')}` : text;
}

function stringify(v: unknown, spec: string): string {
  if (v instanceof Uint8Array) return spec === 't' ? base32.baseEncode(v) : base58btc.baseEncode(v);
  if (v instanceof Error) return spec === 'e' ? (v.stack ?? v.message) : v.message;
  if (v == null || typeof v !== 'object') return String(v);
  if (typeof (v as { toString?: unknown }).toString === 'function' && (v as object).toString !== Object.prototype.toString) return String(v);
  try { return JSON.stringify(v); } catch { return String(v); }
}

const noop = (): void => undefined;

/**
 * A libp2p ComponentLogger writing to pino (component = the libp2p component, scope = the innermost
 * scope such as a stream); disabled levels cost nothing (libp2p checks `enabled` before formatting).
 */
export function pinoComponentLogger(root: Logger, level: GridHostOptions['libp2pLog'] = 'silent'): ComponentLogger {
  const rank = { silent: 0, error: 1, debug: 2, trace: 3 }[level ?? 'silent'];
  const logEnabled = rank >= 2 && root.isLevelEnabled('debug');
  const traceEnabled = rank >= 3 && root.isLevelEnabled('trace');
  const errEnabled = rank >= 1 && root.isLevelEnabled('warn');
  const make = (component: string, scope?: string): Libp2pLogger => {
    const child = rank > 0 ? root.child(scope ? { component, scope } : { component }) : undefined;
    const log = (logEnabled ? (fmt: unknown, ...args: unknown[]) => child!.debug(formatLibp2p(fmt, args)) : noop) as Libp2pLogger;
    log.error = errEnabled ? (fmt: unknown, ...args: unknown[]) => child!.warn(formatLibp2p(fmt, args)) : noop;
    log.trace = traceEnabled ? (fmt: unknown, ...args: unknown[]) => child!.trace(formatLibp2p(fmt, args)) : noop;
    log.enabled = logEnabled;
    // yamux opens a scope per stream: share one logger when nothing is printed
    log.newScope = rank > 0 ? (name: string) => make(component, name) : () => log;
    return log;
  };
  const silent = rank === 0 ? make('libp2p') : undefined;
  return { forComponent: (name: string) => silent ?? make(name) };
}

/** Default root logger: pino on stderr (stdout is for command output). */
function defaultLogger(): Logger {
  return createLogger();
}

// ---------------------------------------------------------------- the host

/**
 * libp2p's refusal to listen (a port already in use, an address not on this machine) as a one-line error:
 * a supplier or gateway that cannot start for an expected reason says why and prints no stack.
 */
function listenFailure(err: unknown): GridpipeError | undefined {
  if (!(err instanceof Error) || err.name !== 'UnsupportedListenAddressesError') return undefined;
  const detail = /^\s*(\S+): Error: (.+)$/m.exec(err.message);
  const why = detail ? `${detail[1]}: ${detail[2]}` : err.message.split('\n', 1)[0];
  return new GridpipeError('LISTEN_FAILED', `cannot listen on ${why} (choose another --listen address or port)`, { cause: err });
}

/** Creates and starts a node. */
export async function createGridHost(options: GridHostOptions = {}): Promise<GridHost> {
  const network = options.network ?? 'public';
  const local = network === 'local';
  const rootLogger = options.logger ?? defaultLogger();

  let privateKey = options.privateKey;
  if (!privateKey && options.dataDir) {
    privateKey = (await loadOrCreateIdentity(options.dataDir, { fixPermissions: options.fixKeyPermissions, logger: rootLogger.child({ component: 'identity' }) })).privateKey;
  }
  privateKey ??= await generateKeyPair('Ed25519');

  const registry = options.metricsRegistry ?? new Registry();
  const capacityMetrics = new CapacityMetrics(registry);

  let datastore: LevelDatastore | undefined;
  if (options.dataDir) {
    const dir = path.join(options.dataDir, DATASTORE_DIR);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    datastore = new LevelDatastore(dir);
    await datastore.open();
  }

  const limits = options.limits ?? {};
  const maxStreams = limits.maxStreams ?? 1024;
  const dhtOptions = options.dht ?? {};
  const providerValidityMs = dhtOptions.providerValidityMs ?? 3600_000;
  const libp2pLogLevel = options.libp2pLog ?? (process.env.GRIDPIPE_LIBP2P_LOG as GridHostOptions['libp2pLog'] | undefined) ?? 'silent';

  // Every host can dial relayed addresses (a supplier behind NAT is reached through one); only a host
  // behind NAT listens through relays ('/p2p-circuit' makes the transport reserve slots).
  announceWindowAtHalf(); // one window update per half window, not one per frame (see the module)
  const transports: Array<(components: never) => Transport> = [coalescedTcp(), circuitRelayTransport() as (components: never) => Transport];
  const listen = [...(options.listen ?? [local ? '/ip4/127.0.0.1/tcp/0' : '/ip4/0.0.0.0/tcp/0'])];
  if (options.relay) listen.push('/p2p-circuit');
  const boundPublic = listen.filter(isBoundPublicAddress);

  const peerDiscovery: Array<(components: never) => PeerDiscovery> = [];
  if (options.bootstrap?.length) {
    peerDiscovery.push(bootstrap({ list: options.bootstrap, timeout: local ? 10 : 1000 }) as (components: never) => PeerDiscovery);
  }
  if (options.mdns) {
    const interval = typeof options.mdns === 'object' ? options.mdns.intervalMs : undefined;
    peerDiscovery.push(mdns(interval ? { interval } : {}) as (components: never) => PeerDiscovery);
  }

  const hostLogger = rootLogger.child({ component: 'host' });
  const capacityQuota = new CapacityQuota(datastore ?? new MemoryDatastore(), {
    maxRecords: dhtOptions.maxCapacityRecords, selfPeerId: peerIdFromPrivateKey(privateKey).toString(),
    metrics: capacityMetrics, logger: rootLogger.child({ component: 'capacity-quota' }),
  });
  const records = capacityDhtRecords({ metrics: capacityMetrics, logger: rootLogger.child({ component: 'capacity-validator' }) });

  const services: Record<string, unknown> = {
    identify: identify(),
    ping: ping({ maxOutboundStreams: 16, maxInboundStreams: 32, runOnLimitedConnection: true }),
    dht: kadDHT({
      protocol: DHT_PROTOCOL,
      // a node behind NAT cannot answer DHT queries (nobody can dial it directly): it is a DHT client
      clientMode: options.clientMode ?? Boolean(options.relay),
      peerInfoMapper: local ? passthroughMapper : removePrivateAddressesMapper,
      validators: records.validators,
      selectors: records.selectors,
      kBucketSize: dhtOptions.kBucketSize,
      initialQuerySelfInterval: dhtOptions.initialQuerySelfIntervalMs ?? (local ? 100 : 1000),
      querySelfInterval: dhtOptions.querySelfIntervalMs,
      reprovide: {
        validity: providerValidityMs,
        threshold: Math.floor(providerValidityMs / 2),
        interval: dhtOptions.reprovideIntervalMs ?? Math.min(600_000, Math.floor(providerValidityMs / 4)),
      },
    }),
  };
  // DCUtR on every host: the node behind NAT starts the upgrade, its peer must answer it.
  services.dcutr = dcutr();
  // AutoNAT v2 on every host: each asks peers to dial its unverified public addresses back, and answers them.
  services.autoNAT = autoNATv2();
  if (options.relayServer) {
    const r = { ...RELAY_SERVER_DEFAULTS, ...(typeof options.relayServer === 'object' ? options.relayServer : {}) };
    services.relay = circuitRelayServer({
      reservations: { maxReservations: r.maxReservations, defaultDataLimit: BigInt(r.dataLimitBytes), defaultDurationLimit: r.durationLimitMs },
    });
  }

  const init = {
    privateKey,
    datastore: capacityQuota.datastore(),
    nodeInfo: { name: 'gridpipe', version: VERSION, userAgent: `gridpipe/${VERSION} node/${process.versions.node}` },
    addresses: {
      listen,
      ...(options.announce ? { announce: options.announce } : {}),
      ...(boundPublic.length && !options.announce ? { appendAnnounce: boundPublic } : {}),
    },
    transports,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({
      maxInboundStreams: maxStreams,
      maxOutboundStreams: maxStreams,
      streamOptions: {
        maxReadBufferLength: limits.maxReadBufferLength ?? 64 * MiB,
        maxWriteBufferLength: limits.maxWriteBufferLength ?? 256 * MiB,
        maxStreamWindowSize: limits.maxStreamWindowSize ?? 16 * MiB,
        inactivityTimeout: limits.inactivityTimeoutMs ?? 120_000,
      },
    })],
    peerDiscovery,
    connectionManager: { maxConnections: limits.maxConnections ?? 300 },
    services,
    logger: pinoComponentLogger(rootLogger, libp2pLogLevel),
  } as unknown as Libp2pOptions<GridServices>;

  let node: GridLibp2p;
  try {
    node = await createLibp2p<GridServices>(init);
  } catch (err) {
    await datastore?.close().catch(() => undefined);
    throw listenFailure(err) ?? err;
  }

  const logger = rootLogger.child({ peerId: node.peerId.toString() });
  const dht = node.services.dht as SingleKadDHT;
  const routingTableSize = (): number => dht.routingTable?.size ?? 0;
  new Gauge({ name: 'gridpipe_dht_routing_table_peers', help: 'Peers in the DHT routing table', registers: [registry], collect() { this.set(routingTableSize()); } });
  new Gauge({ name: 'gridpipe_libp2p_connections', help: 'Open libp2p connections', registers: [registry], collect() { this.set(node.getConnections().length); } });

  let stopped: Promise<void> | undefined;
  const host: GridHost = {
    node,
    peerId: node.peerId,
    privateKey,
    network,
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
    dhtProtocol: DHT_PROTOCOL,
    addresses: () => node.getMultiaddrs().map((ma) => {
      const s = ma.toString();
      return s.includes('/p2p/') ? s : `${s}/p2p/${node.peerId.toString()}`;
    }),
    routingTableSize,
    reachability: () => reachabilityOf(node),
    metrics: registry,
    capacityMetrics,
    capacityQuota,
    logger,
    stop: () => {
      stopped ??= (async () => {
        try {
          await node.stop();
        } finally {
          await datastore?.close().catch((err: Error) => hostLogger.warn({ err: err.message }, 'closing the datastore failed'));
        }
      })();
      return stopped;
    },
  };
  hostLogger.info({ peerId: node.peerId.toString(), addrs: host.addresses(), network, mode: (options.clientMode ?? Boolean(options.relay)) ? 'client' : 'server' }, 'libp2p host started');
  return host;
}

/** A listen address on one public IPv4/IPv6 address and a fixed TCP port (not 0.0.0.0, ::, or port 0). */
function isBoundPublicAddress(address: string): boolean {
  const m = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)$/.exec(address);
  if (!m || m[2] === '0' || m[1] === '0.0.0.0' || m[1] === '::') return false;
  try {
    return !isPrivate(multiaddr(address));
  } catch {
    return false;
  }
}

/** A node's reachability from its address manager: verified direct addresses, relayed ones, or neither. */
function reachabilityOf(node: GridLibp2p): Reachability {
  // getMultiaddrs() holds only verified addresses: private ones and announced (or bound public) ones.
  const own = node.getMultiaddrs();
  const relayed = (a: Multiaddr): boolean => a.toString().includes('/p2p-circuit');
  if (own.some((a) => !relayed(a) && !isPrivate(a))) return 'public';
  if (own.some(relayed)) return 'relayed';
  return 'unknown';
}

/** Stops a host (libp2p, then its datastore). */
export async function stopGridHost(host: GridHost): Promise<void> {
  await host.stop();
}
