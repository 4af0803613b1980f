/**
 * The guard of a supplier's local admin endpoint. Listening on 127.0.0.1 is not enough: any web page the
 * operator visits can POST to a loopback port (CSRF), and DNS rebinding lets a page read from one under a
 * name of its own. So every request must carry the Host the endpoint listens on (127.0.0.1:PORT or
 * localhost:PORT) and no foreign Origin, and anything beyond the read-only status and metrics must carry
 * the admin token: random, written 0600 to `<data>/admin-token` at start, read by `gridpipe earnings
 * --admin` and `gridpipe redeem --admin`.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';

/** The token file inside a supplier's data folder. */
export function adminTokenPath(dataDir: string): string {
  return path.join(dataDir, 'admin-token');
}

/** Makes a new token and writes it (0600, replacing the last run's). */
export function writeAdminToken(dataDir: string): string {
  const token = randomBytes(32).toString('hex');
  const file = adminTokenPath(dataDir);
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600); // an existing file keeps its mode on write
  return token;
}

/** Reads the token of the supplier using `dataDir`; undefined when there is none. */
export function readAdminToken(dataDir: string): string | undefined {
  try {
    return readFileSync(adminTokenPath(dataDir), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Routes that only read what the node shows anyway (its record, Prometheus metrics): no token needed. */
const OPEN_ROUTES = new Set(['GET /status', 'GET /metrics']);

/** Why a request is refused: HTTP status and message; undefined when it may go on. */
export function checkAdminRequest(req: IncomingMessage, route: string, port: number, token: string): { status: number; error: string } | undefined {
  const allowed = [`127.0.0.1:${port}`, `localhost:${port}`];
  const host = (req.headers.host ?? '').toLowerCase();
  if (!allowed.includes(host)) return { status: 403, error: `the admin endpoint answers only requests to ${allowed[0]} (Host was "${host}")` };
  const origin = req.headers.origin;
  if (origin !== undefined && !allowed.some((h) => origin.toLowerCase() === `http://${h}`)) return { status: 403, error: 'requests from web pages are refused (foreign Origin)' };
  if (OPEN_ROUTES.has(route)) return undefined;
  const given = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  if (a.length !== b.length || !timingSafeEqual(a, b)) return { status: 401, error: 'the admin token is missing or wrong (Authorization: Bearer <data>/admin-token)' };
  return undefined;
}
