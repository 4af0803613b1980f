/** GET /v1/models (servable models, OpenAI's list shape), GET /healthz, GET /metrics, GET /v1/feed (SSE). */
import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';
import type { CatalogModel } from '../catalog.js';

/** A model in OpenAI's shape plus a `gridpipe` field (manifest CID, kind, synthetic, context, hosts). */
export function modelObject(m: CatalogModel): Record<string, unknown> {
  const manifest = m.open.manifest;
  return {
    id: m.id, object: 'model', created: m.created, owned_by: 'gridpipe',
    gridpipe: {
      manifestCid: m.open.manifestCid, name: manifest.name, kind: m.kind, synthetic: manifest.model.synthetic,
      fragments: manifest.fragments.length, hosts: m.hosts, contextLength: m.contextLength ?? null,
      tokenizer: manifest.tokenizer.kind, parameters: manifest.model.parameters,
      inputs: manifest.model.inputs.filter((i) => !i.name.startsWith('past_key_values')), outputs: manifest.model.outputs.filter((o) => !o.name.startsWith('present')),
    },
  };
}

/** Registers the listing, health, metrics and feed routes. */
export function registerMetaRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  app.get('/v1/models', async (req) => {
    ctx.keys.authenticate(req.headers.authorization);
    await ctx.catalog.refresh();
    const models = ctx.catalog.servable();
    ctx.metrics.servableModels.set(models.length);
    return { object: 'list', data: models.map(modelObject) };
  });

  app.get('/v1/models/:id', async (req) => {
    ctx.keys.authenticate(req.headers.authorization);
    return modelObject(await ctx.catalog.resolve((req.params as { id: string }).id));
  });

  app.get('/healthz', async () => {
    const servable = ctx.catalog.servable().length;
    ctx.metrics.servableModels.set(servable);
    return { ok: true, models: servable, known: ctx.catalog.all().length, open: ctx.keys.open };
  });

  app.get('/metrics', async (_req, reply) => {
    reply.type(ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });

  app.get('/v1/feed', (req, reply) => {
    reply.hijack();
    ctx.feed.serve(reply.raw, { replay: (req.query as Record<string, unknown>).replay !== 'false' });
  });
}
