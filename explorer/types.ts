/**
 * The explorer's JSON API, version 1: the shapes the server sends and the page reads (the page imports these
 * types only, so both sides agree at compile time). Every amount of tokens is a decimal string of base units;
 * every time is Unix milliseconds. Nothing here carries an API key, a payer's secret, a prompt or a completion.
 */

/** A supplier as the Network view shows it (GET /explorer/api/v1/network, .../peers/:id). */
export interface PeerView {
  peerId: string;
  addrs: string[];
  /** Answered the explorer's last ping (libp2p ping over the grid). */
  online: boolean;
  /** Unix ms of the last ping answered, if any. */
  lastSeenMs?: number;
  /** Round trip of the last ping answered, ms. */
  pingMs?: number;
  /** Banned by this process's swarm view after failing or stalling (routing avoids it). */
  banned: boolean;
  hardware?: {
    cpuModel: string; cpuCores: number; memoryTotalBytes: number; memoryFreeBytes: number; platform: string;
    gpus: { name: string; memoryTotalBytes: number }[];
    executionProviders: string[];
  };
  benchmark?: { matmulGflops: number; executionProvider: string };
  pricePerGflop: string;
  stakingAddress: string;
  /** Stake in the registry (base units), when a chain is configured. */
  stake?: string;
  limits?: { maxMemoryBytes: number; maxSessions: number; threads: number; gpuShare: number; hours: string; paused: boolean };
  fragments: { manifestCid: string; index: number; stepsPerSecond: number; load: number; activeSessions: number }[];
  softwareVersion: string;
  recordIssuedMs: number;
}

/** One edge of the pipeline graph: activations passed from one hop to the next (`gateway` at both ends). */
export interface TrafficEdge { from: string; to: string; requests: number; steps: number }

export interface NetworkView { at: number; peers: PeerView[]; edges: TrafficEdge[] }

/** One fragment of a model, with its hosts. */
export interface FragmentView {
  index: number;
  cid: string;
  flops?: number;
  weightBytes?: number;
  /** Online hosts. */
  replicas: number;
  hosts: string[];
  /** Sum of the online hosts' advertised steps per second. */
  stepsPerSecond: number;
  /** Fewer than two online replicas, or the lowest coverage of the model. */
  weak: boolean;
}

export interface ModelView {
  manifestCid: string;
  name?: string;
  tokenizer?: string;
  synthetic?: boolean;
  parameters?: number;
  /** Mixture-of-experts groups in the manifest. */
  expertGroups: number;
  /** Each group's experts with their fragments and online replicas (the fewest of their fragments'). */
  experts: { layer: number; topK: number; experts: { index: number; fragments: number[]; replicas: number }[] }[];
  fragments: FragmentView[];
  /** Every fragment has an online host. */
  servable: boolean;
}

export interface ModelsView { at: number; models: ModelView[] }

/** One hop of a request, summed over its steps (the gateway's route metadata). */
export interface HopView {
  peerId: string;
  fragments: [number, number];
  steps: number;
  wallMs: number;
  computeMs: number;
  queueMs: number;
  paymentMs: number;
  replayed: number;
  cost: string;
  /** The hop's peer is not in the request's final route: it failed and was replaced. */
  replaced: boolean;
}

/** One request in the Live view. */
export interface RequestView {
  requestId: string;
  state: 'running' | 'finished' | 'failed';
  at: number;
  endpoint: string;
  model?: string;
  route: { peerId: string; fragments: [number, number] }[];
  hops: HopView[];
  /** Failovers the gateway counted (a step that failed for good does not report its own). */
  failovers: number;
  /** Some server failed during the request: failovers counted, or a hop whose peer left the route. */
  failedOver: boolean;
  steps: number;
  tokens?: number;
  latencyMs?: number;
  firstTokenMs?: number;
  cost?: string;
  status?: number;
  error?: string;
}

/** Throughput and latency of one time bucket. */
export interface StatsBucket { at: number; tokensPerSecond: number; requests: number; p50Ms?: number; p95Ms?: number }

export interface LiveView { at: number; requests: RequestView[]; stats: StatsBucket[]; bucketMs: number }

/** A contract event, decoded. */
export interface ChainEventView {
  kind: 'staked' | 'unstake' | 'stake-withdrawn' | 'slashed' | 'deposited' | 'redeemed' | 'withdrawal' | 'dispute-opened' | 'dispute-resolved';
  block: number;
  at: number;
  tx: string;
  /** Supplier (stakes, redemptions' payee, slashes, disputes) or payer (deposits, withdrawals). */
  account: string;
  /** The payer of a redemption. */
  payer?: string;
  amount: string;
  detail?: string;
}

export interface ChainView {
  at: number;
  configured: boolean;
  chainId?: number;
  block?: number;
  contracts?: { token: string; stakeRegistry: string; paymentEscrow: string; disputeManager?: string };
  events: ChainEventView[];
  stakes: { address: string; staked: string; unbonding: string }[];
  escrow: { payer: string; balance: string }[];
  /** Each supplier's redeemed earnings over time, cumulative. */
  earnings: { payee: string; points: { at: number; total: string }[] }[];
}

/** Events on GET /explorer/api/v1/live/stream (server-sent events): `request` (a RequestView), `stats` (StatsBucket[]). */
export type LiveStreamEvent = { event: 'request'; data: RequestView } | { event: 'stats'; data: StatsBucket[] };
