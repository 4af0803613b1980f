/**
 * Authentication before the body: an `onRequest` hook checks the API key from the headers, so a request
 * without a valid key is answered 401 (and its connection closed) before fastify reads a byte of its body.
 * Three 100 MiB `/v1/infer` uploads with no key used to be buffered whole before the 401 (RSS 161 → 645 MB).
 * Routes read the caller with `requestKey(req)`. Public routes (health, metrics, feed) skip the check; the
 * metrics route has its own guard (./routes/meta.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiKey, KeyRing } from './keys.js';
import { ApiError } from './errors.js';

/** Routes anyone may call (by their route pattern). */
export const PUBLIC_ROUTES = new Set(['/healthz', '/metrics', '/v1/feed']);

const callers = new WeakMap<FastifyRequest, ApiKey>();

/** Adds the hook: every non-public route's caller is authenticated from its headers, before its body. */
export function authenticateBeforeBody(app: FastifyInstance, keys: KeyRing): void {
  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url;
    if (route === undefined || PUBLIC_ROUTES.has(route)) return; // unknown URLs get their 404
    try {
      callers.set(req, keys.authenticate(req.headers.authorization));
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
