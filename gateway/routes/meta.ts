/**
 * GET /v1/models (servable models, OpenAI's list shape), GET /healthz, GET /metrics (loopback or the operator's
 * token), GET /v1/feed (SSE, public: carries no key names and no error text, see ../feed.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { requestKey } from '../auth.js';
import type { GatewayContext } from '../context.js';
import type { CatalogModel } from '../catalog.js';
import { ApiError, unauthorized } from '../errors.js';
import { SUPPORTED_PARAMETERS } from '../parameters.js';

/**
 * A model in OpenAI's shape plus a `gridpipe` field (manifest CID, kind, synthetic, context, hosts); text models
 * also list the request parameters the gateway implements for them and their publisher's sampling defaults.
 */
export function modelObject(m: CatalogModel): Record<string, unknown> {
  const manifest = m.open.manifest;
  const text = m.kind === 'text' ? { supported_parameters: SUPPORTED_PARAMETERS, generation_defaults: manifest.generation ?? {} } : {};
  return {
    id: m.id, object: 'model', created: m.created, owned_by: 'gridpipe', ...text,
    gridpipe: {
      manifestCid: m.open.manifestCid, name: manifest.name, kind: m.kind, synthetic: manifest.model.synthetic,
      fragments: manifest.fragments.length, hosts: m.hosts, contextLength: m.contextLength ?? null,
      tokenizer: manifest.tokenizer.kind, parameters: manifest.model.parameters,
      inputs: manifest.model.inputs.filter((i) => !i.name.startsWith('past_key_values')), outputs: manifest.model.outputs.filter((o) => !o.name.startsWith('present')),
    },
  };
}

const isLoopback = (address: string | undefined): boolean =>
  !!address && (address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.'));

/**
 * /metrics is the operator's: loopback clients read it freely; from elsewhere only with the operator's
 * `--metrics-token` as a Bearer token (compared in constant time); otherwise 403 / 401.
 */
function metricsAllowed(ctx: GatewayContext, req: FastifyRequest): void {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (ctx.metricsToken && m) {
    const want = createHash('sha256').update(ctx.metricsToken).digest();
    if (timingSafeEqual(createHash('sha256').update(m[1]).digest(), want)) return;
    throw unauthorized('the metrics token is not valid', 'invalid_metrics_token');
  }
  if (isLoopback(req.socket.remoteAddress)) return;
  throw new ApiError(403, ctx.metricsToken ? '/metrics needs the operator\'s metrics token: send "Authorization: Bearer <token>"' : '/metrics is served to loopback clients only (start the gateway with --metrics-token to read it from elsewhere)', 'authentication_error', 'metrics_forbidden');
}

/** Registers the listing, health, metrics and feed routes. */
export function registerMetaRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  app.get('/v1/models', async (req) => {
    requestKey(req);
    await ctx.catalog.refresh();
    const models = ctx.catalog.servable();
    ctx.metrics.servableModels.set(models.length);
    return { object: 'list', data: models.map(modelObject) };
  });

  app.get('/v1/models/:id', async (req) => {
    requestKey(req);
    return modelObject(await ctx.catalog.resolve((req.params as { id: string }).id));
  });

  app.get('/healthz', async () => {
    const servable = ctx.catalog.servable().length;
    ctx.metrics.servableModels.set(servable);
    return { ok: true, models: servable, known: ctx.catalog.all().length, open: ctx.keys.open };
  });

  app.get('/metrics', async (req, reply) => {
    metricsAllowed(ctx, req);
    reply.type(ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });

  app.get('/v1/feed', (req, reply) => {
    reply.hijack();
    ctx.feed.serve(reply.raw, { replay: (req.query as Record<string, unknown>).replay !== 'false' });
  });
}
