/**
 * The gateway: an OpenAI-compatible HTTP API (fastify) over the grid. Routes live in ./routes; this module
 * wires the grid client, the model catalog, keys, metrics and the feed, and turns every error into OpenAI's
 * shape (bad input is always a 4xx, and the server keeps serving).
 */
import '../net/polyfill.js';
import type { RouteMode } from '../policy/route-mode.js';
import type { WireEncodingPreference } from '../scheduler/wire-choice.js';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { GridClient } from '../scheduler/client.js';
import type { PriceLimits } from '../policy/price-limits.js';
import { cachedStakeCheck, type StakeCheck } from '../scheduler/discovery.js';
import { attachStakeRegistry, createProvider } from '../contracts/bindings.js';
import type { StepPayer } from '../scheduler/payment.js';
import type { NetworkKind } from '../net/host.js';
import { createLogger } from '../net/logger.js';
import { authenticateBeforeBody } from './auth.js';
import { ModelCatalog } from './catalog.js';
import type { GatewayContext } from './context.js';
import { ApiError, type ErrorType } from './errors.js';
import { EventFeed } from './feed.js';
import { registerHeapAfterGc } from './heap-probe.js';
import { KeyRing, type ApiKey, type ApiKeyConfig } from './keys.js';
import { GatewayMetrics } from './metrics.js';
import { Verifier } from './verify/verifier.js';
import { DisputeDesk, type DisputeDeskOptions } from './verify/dispute-desk.js';
import { publishVerdict } from './verify/verdict-feed.js';
import { registerInferRoute } from './routes/infer.js';
import { registerMetaRoutes } from './routes/meta.js';
import { registerTextRoutes } from './routes/text.js';
import { SpendingLedger } from './spending.js';
import { UploadBudget } from './upload-budget.js';
import { closeSharedTemplateSandbox } from './tokenizers/sandbox.js';

export interface GatewayOptions {
  /** Peers to join the grid through. */
  bootstrap: string[];
  network?: NetworkKind;
  /** libp2p listen addresses (default: any port); a relay server needs a fixed, public one. */
  listen?: string[];
  /** Offer relay service to suppliers behind NAT. */
  relayServer?: boolean;
  /** Star, chain (direct return) or auto per route (policy/route-mode.ts; default star). */
  routeMode?: RouteMode;
  /** How activations travel between the gateway and suppliers (scheduler/wire-choice.ts; default exact). */
  wireEncoding?: WireEncodingPreference;
  port?: number;
  host?: string;
  /** API keys (absent = open access, logged as such). */
  keys?: Map<string, ApiKeyConfig>;
  /** Fragment folders or manifest CIDs to serve besides the ones discovered. */
  models?: string[];
  /** The payer a key's sessions pay through (payments on). */
  payerFor?: (key: ApiKey) => StepPayer | undefined;
  /** Prices accepted from suppliers (default policy/price-limits' DEFAULT_PRICE_LIMITS). */
  priceLimits?: PriceLimits;
  /** Largest /v1/infer body (default 256 MiB). */
  maxTensorBytes?: number;
  /** Bearer token that lets a non-loopback client read /metrics (absent: loopback clients only). */
  metricsToken?: string;
  /** Route only to suppliers staked in this StakeRegistry (payments on: unstaked ones are not paid). */
  requireStake?: { rpcUrl: string; chainId: number; stakeRegistry: string };
  /** Keep each key's spending here across restarts (a folder; absent: in memory only). */
  spendingDir?: string;
  /** Background model sweep period (default 15 s). */
  refreshEveryMs?: number;
  /**
   * More routes on the gateway's app, added before it listens (the CLI adds the explorer's here: the gateway
   * does not import explorer/). A route registered with `config: { public: true }` needs no API key.
   */
  extraRoutes?: (app: FastifyInstance, ctx: GatewayContext) => void;
  /** Share of (session, supplier) links re-run on another host of the span to catch wrong outputs (gateway/verify/; default 0: off). */
  verifyRate?: number;
  /** With verifyRate: pays the hosts that check and referee when they charge (the gateway's own payer). */
  verifierPayer?: StepPayer;
  /** With verifyRate: file disputes against condemned suppliers from this chain account and withhold their payments (gateway/verify/dispute-desk.ts). */
  disputes?: DisputeDeskOptions;
  logger?: Logger;
}

export interface Gateway {
  app: FastifyInstance;
  /** http://host:port */
  url: string;
  context: GatewayContext;
  close(): Promise<void>;
}

/** Statuses from fastify's own errors (bad JSON, wrong media type, body too large) mapped to OpenAI types. */
function typeForStatus(status: number): ErrorType {
  if (status === 401) return 'authentication_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  return status < 500 ? 'invalid_request_error' : 'server_error';
}

/** Largest body of the JSON routes (completions, chat); /v1/infer has its own (maxTensorBytes). */
export const JSON_BODY_LIMIT = 16 << 20;
/**
 * How long a client may take to send its whole request (headers and body). An upload's bytes are counted against
 * the upload budget from its headers on, so a client that announces a body and never sends it would otherwise
 * hold its share until the connection drops; the streamed reply is not bound by this.
 */
export const REQUEST_RECEIVE_TIMEOUT_MS = 60_000;

/** A key's name to its metrics label: the first 8 hex digits of its id (SHA-256 of the secret). */
export function keyLabels(keys: KeyRing): (name: string) => string {
  const byName = new Map(keys.list().map((k) => [k.name, k.id.slice(0, 8)]));
  return (name) => byName.get(name) ?? (keys.open ? 'open' : 'other');
}

/** Builds the fastify app on an existing context (tests, embedding). */
export function buildApp(ctx: GatewayContext, maxTensorBytes = 256 << 20): FastifyInstance {
  const app = Fastify({ loggerInstance: ctx.logger.child({ component: 'http' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: JSON_BODY_LIMIT, requestTimeout: REQUEST_RECEIVE_TIMEOUT_MS });
  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) {
      if (err.status >= 500) ctx.logger.warn({ url: req.url, status: err.status, err: err.message }, 'request failed');
      return reply.code(err.status).headers(err.headers).send(err.body());
    }
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) ctx.logger.error({ url: req.url, err }, 'internal error');
    // Fastify's body errors (malformed JSON, unsupported media type, too large) are the client's: 4xx, said plainly.
    const message = status === 500 ? 'internal error in the gateway' : err.message.replace(/^Body is not valid JSON but content-type is set to 'application\/json'$/, 'the request body is not valid JSON');
    return reply.code(status).send({ error: { message, type: typeForStatus(status), param: null, code: err.code ?? null } });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: { message: `no route ${req.method} ${req.url.split('?')[0]}`, type: 'not_found_error', param: null, code: 'unknown_url' } }));
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown';
    ctx.metrics.requests.inc({ route, status: String(reply.statusCode) });
    ctx.metrics.requestSeconds.observe({ route }, reply.elapsedTime / 1000);
  });
  // Before any body is read: a request without a valid key never gets its upload buffered.
  // Bodies in flight: one key at most two of the largest, all keys at most four (1 GiB with the defaults).
  authenticateBeforeBody(app, ctx.keys, new UploadBudget(4 * Math.max(maxTensorBytes, JSON_BODY_LIMIT), 2 * Math.max(maxTensorBytes, JSON_BODY_LIMIT)));
  registerMetaRoutes(app, ctx);
  registerTextRoutes(app, ctx);
  registerInferRoute(app, ctx, maxTensorBytes);
  return app;
}

/** Joins the grid, discovers models and listens. */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const logger = options.logger ?? createLogger('gridpipe-gateway');
  let stakeCheck: StakeCheck | undefined;
  let closeProvider = (): void => undefined;
  if (options.requireStake) {
    // One read-only registry view shared by routing (the client) and the catalog's coverage, cached per address.
    const provider = createProvider(options.requireStake.rpcUrl, options.requireStake.chainId);
    const { chainId, stakeRegistry } = options.requireStake;
    stakeCheck = cachedStakeCheck(attachStakeRegistry(stakeRegistry, provider), undefined, undefined, { chainId, stakeRegistry });
    closeProvider = () => provider.destroy();
  }
  const client = await GridClient.connect({
    bootstrap: options.bootstrap, network: options.network, logger, discovery: { lookupTimeoutMs: 5000 }, stakeCheck,
    listen: options.listen, relayServer: options.relayServer, routeMode: options.routeMode, wireEncoding: options.wireEncoding,
  });
  const catalog = new ModelCatalog(client, { models: options.models, refreshEveryMs: options.refreshEveryMs, logger, stakeCheck });
  const keys = new KeyRing(options.keys);
  const metrics = new GatewayMetrics(keyLabels(keys));
  const feed = new EventFeed();
  const desk = options.verifyRate && options.disputes ? await DisputeDesk.open(options.disputes, { feed, logger, registry: metrics.registry }).catch(async (err: unknown) => {
    await client.close().catch(() => undefined);
    closeProvider();
    throw err;
  }) : undefined;
  const payerFor = options.payerFor;
  registerHeapAfterGc(metrics.registry); // only under --expose-gc (leak hunting, the fuzz test)
  const ctx: GatewayContext = {
    client, catalog, keys, feed, metrics, logger, payerFor: desk && payerFor ? (key) => desk.withholding.wrap(payerFor(key)) : payerFor,
    priceLimits: options.priceLimits, metricsToken: options.metricsToken,
    verifier: options.verifyRate ? new Verifier({
      host: client.host, swarm: client.swarm, rate: options.verifyRate, logger, registry: metrics.registry, priceLimits: options.priceLimits,
      payer: options.verifierPayer && desk ? desk.withholding.wrap(options.verifierPayer) : options.verifierPayer,
      onCheck: (v) => publishVerdict(feed, v), ...(desk ? { onVerdict: (v, e) => desk.onVerdict(v, e) } : {}),
    }) : undefined,
  };
  let app: FastifyInstance | undefined;
  let spending: SpendingLedger | undefined;
  try {
    if (options.spendingDir && !ctx.keys.open) {
      spending = await SpendingLedger.open(options.spendingDir);
      await ctx.keys.persistTo(spending);
      ctx.keys.onLedgerError = (err) => logger.error({ err: (err as Error).message }, 'could not record a key\'s spending');
    }
    await catalog.start();
    app = buildApp(ctx, options.maxTensorBytes);
    options.extraRoutes?.(app, ctx);
    await app.listen({ port: options.port ?? 8080, host: options.host ?? '127.0.0.1' });
  } catch (err) {
    await app?.close().catch(() => undefined);
    await catalog.close().catch(() => undefined);
    await client.close().catch(() => undefined);
    await spending?.close().catch(() => undefined);
    await desk?.close().catch(() => undefined);
    closeProvider();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port ?? 8080;
  const host = options.host ?? '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (ctx.keys.open) logger.warn('no --keys given: the gateway is OPEN, anyone who can reach it may call it, with no rate or budget limits');
  logger.info({ url, models: catalog.servable().map((m) => m.id), keys: ctx.keys.list().length }, 'gateway listening');
  const running = app;
  return {
    app: running, url, context: ctx,
    close: async () => {
      await running.close();
      await catalog.close();
      await client.close();
      await spending?.close();
      await desk?.close();
      await closeSharedTemplateSandbox();
      closeProvider();
    },
  };
}
