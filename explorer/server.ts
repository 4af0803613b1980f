/**
 * The explorer on its own HTTP server, for a node started with `--explorer` (a gateway serves it on its own
 * app instead). It listens on loopback unless told otherwise; `/` leads to the page.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { Explorer, type ExplorerOptions } from './explorer.js';
import { EXPLORER_PREFIX, registerExplorerRoutes } from './routes.js';

export interface ExplorerServer {
  /** The page's URL (http://host:port/explorer/). */
  url: string;
  explorer: Explorer;
  app: FastifyInstance;
  close(): Promise<void>;
}

/** Starts an explorer server on `host:port` (0 = any free port). */
export async function startExplorerServer(options: ExplorerOptions & { port?: number; host?: string }): Promise<ExplorerServer> {
  const explorer = new Explorer(options);
  const app = Fastify({ logger: false });
  registerExplorerRoutes(app, explorer);
  app.get('/', (_req, reply) => reply.redirect(`${EXPLORER_PREFIX}/`));
  const host = options.host ?? '127.0.0.1';
  try {
    await app.listen({ port: options.port ?? 0, host });
  } catch (err) {
    explorer.close();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port ?? 0;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}${EXPLORER_PREFIX}/`, explorer, app,
    close: async () => { explorer.close(); await app.close(); },
  };
}
