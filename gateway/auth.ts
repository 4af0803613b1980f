/**
 * Authentication before the body: an `onRequest` hook checks the API key from the headers, so a request
 * without a valid key is answered 401 (and its connection closed) before fastify reads a byte of its body.
 * Three 100 MiB `/v1/infer` uploads with no key used to be buffered whole before the 401 (RSS 161 → 645 MB).
 * Routes read the caller with `requestKey(req)`. Public routes (health, metrics, feed) skip the check; the
 * metrics route has its own guard (./routes/meta.ts). An authenticated request's body is then counted against
 * the upload budget (./upload-budget.ts) before it is read; a call to a route that runs work is admitted against the
 * key's rates and spent budget (429/402) before its body is read as well.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiKey, KeyRing } from './keys.js';
import { ApiError, rateLimited } from './errors.js';
import type { UploadBudget } from './upload-budget.js';

/** Routes anyone may call (by their route pattern); a route registered with `config: { public: true }` is public too (the explorer's). */
export const PUBLIC_ROUTES = new Set(['/healthz', '/metrics', '/v1/feed']);

/** Routes that run work on the grid: each call counts against the key's rates and budget, before its body is read. */
export const METERED_ROUTES = new Set(['/v1/completions', '/v1/chat/completions', '/v1/infer']);

const callers = new WeakMap<FastifyRequest, ApiKey>();

/** The bytes a request's body may bring: its declared length, else (chunked) its route's limit. */
function declaredBytes(req: FastifyRequest, fallback: number): number {
  const header = req.headers['content-length'];
  if (header !== undefined && /^\d+$/.test(header)) return Number(header);
  return req.headers['transfer-encoding'] !== undefined ? fallback : 0;
}

/**
 * Adds the hook: every non-public route's caller is authenticated from its headers, before its body; then the
 * body's bytes are taken from `uploads` (429 over the key's share, 503 over the total), until the reply ends.
 */
export function authenticateBeforeBody(app: FastifyInstance, keys: KeyRing, uploads: UploadBudget): void {
  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url;
    if (route === undefined || PUBLIC_ROUTES.has(route)) return; // unknown URLs get their 404
    if ((req.routeOptions.config as { public?: boolean } | undefined)?.public === true) return;
    try {
      const key = keys.authenticate(req.headers.authorization);
      callers.set(req, key);
      // Rates and a spent budget are refused before the body too: a key over its rate cannot make the gateway read more.
      if (METERED_ROUTES.has(route)) keys.admit(key);
      const bytes = declaredBytes(req, req.routeOptions.bodyLimit ?? uploads.perKeyBytes);
      if (bytes === 0) return;
      const taken = uploads.take(key.id, bytes);
      if (taken === 'key') throw rateLimited(`this key is already sending ${uploads.perKeyBytes} bytes of request bodies at most: wait for its uploads to finish`, 1);
      if (taken === 'total') throw new ApiError(503, 'the gateway is receiving as many request bodies as it takes: retry shortly', 'service_unavailable', 'uploads_busy', null, { 'retry-after': '1' });
      let given = false;
      reply.raw.once('close', () => { if (!given) { given = true; uploads.give(key.id, bytes); } });
    } catch (err) {
      // The body (if any) is not read: close the connection rather than drain it.
      if (err instanceof ApiError) reply.header('connection', 'close');
      throw err;
    }
  });
}

/** The caller the hook authenticated (routes registered behind it only). */
export function requestKey(req: FastifyRequest): ApiKey {
  const key = callers.get(req);
  if (!key) throw new ApiError(500, 'internal error: the request was not authenticated', 'server_error', 'not_authenticated');
  return key;
}
