/**
 * The explorer over HTTP, on any fastify app (the gateway's, or a node's own explorer server): the page
 * (bundled at build into dist/explorer/page, served with a policy that loads nothing from elsewhere), the
 * versioned JSON API under /explorer/api/v1 and the live stream (server-sent events). Public and read-only:
 * no route takes a key, none returns one, and nothing here carries a prompt or a completion.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Explorer } from './explorer.js';
import type { RequestView } from './types.js';

export const EXPLORER_PREFIX = '/explorer';
export const EXPLORER_API = `${EXPLORER_PREFIX}/api/v1`;

/** Every explorer route is public: a gateway with API keys lets them through without one (gateway/auth.ts). */
const PUBLIC = { config: { public: true } };

/** The page's files: index.html, app.js, app.css (built by explorer/bundle.ts). */
const PAGE_FILES: Record<string, string> = { 'index.html': 'text/html; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };

/** Nothing from another origin, no inline script: the page works offline and cannot be made to call out. */
const CONTENT_SECURITY_POLICY = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Where the built page is: next to this module in dist/, or dist/explorer/page when run from the sources. */
export function pageDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const beside = path.join(here, 'page');
  if (existsSync(path.join(beside, 'app.js'))) return beside;
  return path.join(here, '..', 'dist', 'explorer', 'page');
}

function notFound(reply: FastifyReply, what: string): FastifyReply {
  return reply.code(404).send({ error: { message: what, type: 'not_found_error', param: null, code: 'not_found' } });
}

/** Registers the page, the API and the live stream on `app`. */
export function registerExplorerRoutes(app: FastifyInstance, explorer: Explorer, options: { keepAliveMs?: number; statsEveryMs?: number } = {}): void {
  const dir = pageDir();
  const files = new Map<string, Buffer>();
  const file = (name: string): Buffer | undefined => {
    if (!files.has(name) && existsSync(path.join(dir, name))) files.set(name, readFileSync(path.join(dir, name)));
    return files.get(name);
  };

  app.get(EXPLORER_PREFIX, PUBLIC, (_req, reply) => reply.redirect(`${EXPLORER_PREFIX}/`));
  const serveFile = (name: string, reply: FastifyReply): FastifyReply => {
    const type = PAGE_FILES[name];
    const body = type ? file(name) : undefined;
    if (!body) return notFound(reply, type ? 'the explorer page is not built: run npm run build' : `no file ${name}`);
    explorer.touch();
    return reply.type(type).header('content-security-policy', CONTENT_SECURITY_POLICY).header('cache-control', 'no-cache').send(body);
  };
  app.get(`${EXPLORER_PREFIX}/`, PUBLIC, (_req, reply) => serveFile('index.html', reply));
  app.get(`${EXPLORER_PREFIX}/:file`, PUBLIC, (req, reply) => serveFile((req.params as { file: string }).file, reply));

  app.get(`${EXPLORER_API}/network`, PUBLIC, async () => { explorer.touch(); return explorer.network(); });
  app.get(`${EXPLORER_API}/peers/:id`, PUBLIC, async (req, reply) => {
    explorer.touch();
    const id = (req.params as { id: string }).id;
    const net = await explorer.network();
    const peer = net.peers.find((p) => p.peerId === id);
    return peer ? { peer, edges: net.edges.filter((e) => e.from === id || e.to === id) } : notFound(reply, 'no such supplier in the records');
  });
  app.get(`${EXPLORER_API}/models`, PUBLIC, async () => { explorer.touch(); return explorer.models(); });
  app.get(`${EXPLORER_API}/models/:cid`, PUBLIC, async (req, reply) => {
    explorer.touch();
    const id = (req.params as { cid: string }).cid;
    const model = (await explorer.models()).models.find((m) => m.manifestCid === id || m.name === id);
    return model ?? notFound(reply, 'no such model');
  });
  app.get(`${EXPLORER_API}/live`, PUBLIC, async () => { explorer.touch(); return explorer.liveView(); });
  app.get(`${EXPLORER_API}/chain`, PUBLIC, async () => { explorer.touch(); return explorer.chainView(); });

  // Open streams end when the server closes (else a page left open would hold the close until it goes away).
  const streams = new Set<ServerResponse>();
  app.addHook('preClose', (done) => {
    for (const res of streams) res.end();
    done();
  });
  app.get(`${EXPLORER_API}/live/stream`, PUBLIC, (_req, reply) => {
    reply.hijack();
    const res = reply.raw;
    streams.add(res);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': gridpipe explorer live stream\n\n');
    const send = (event: string, data: unknown): void => { res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`); };
    explorer.touch();
    const unsubscribe = explorer.live.subscribe((r: RequestView) => send('request', r));
    const stats = setInterval(() => { explorer.touch(); send('stats', explorer.live.stats()); }, options.statsEveryMs ?? 5000);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), options.keepAliveMs ?? 15_000);
    stats.unref();
    keepAlive.unref();
    res.on('close', () => { streams.delete(res); clearInterval(stats); clearInterval(keepAlive); unsubscribe(); });
  });
}
