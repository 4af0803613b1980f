/**
 * API keys (`--keys FILE`): who may call, which payer account pays for them, and their limits.
 *
 * File format (JSON):
 * ```json
 * { "keys": {
 *     "gp-alice-7c1e...": { "name": "alice", "payer": "0xAbc...", "budget": "5000000",
 *                          "requestsPerMinute": 60, "tokensPerMinute": 20000 } } }
 * ```
 * `budget` is in the payment token's base units (a decimal integer string; absent = unlimited), `payer` is an
 * EVM address or the path of a wallet keystore (optional; the account the key's spending is paid from),
 * `requestsPerMinute` / `tokensPerMinute` are optional limits (absent = unlimited). Spending survives restarts when
 * the gateway has a data folder (gateway/spending.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { timingSafeEqual, createHash } from 'node:crypto';
import { overBudget, rateLimited, unauthorized } from './errors.js';
import type { SpendingLedger } from './spending.js';
import { GridpipeError } from '../errors/base.js';

export interface ApiKeyConfig {
  name: string;
  payer?: string;
  budget?: bigint;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

/** A key's live state: its configuration, what it spent and its recent use. */
export interface ApiKey extends ApiKeyConfig {
  /** SHA-256 of the secret: how the key is stored anywhere (never the secret). */
  id: string;
  spent: bigint;
  /** Reserved by requests in flight for vouchers they signed (or are signing): spent once they settle. */
  held: bigint;
}

/** The caller when the gateway runs without --keys. */
export const OPEN_ACCESS: ApiKey = { id: 'open', name: 'open', spent: 0n, held: 0n };

/** Raised for a keys file that cannot be used; names the entry and the problem. */
export class KeysFileError extends GridpipeError<'BAD_KEYS_FILE'> {
  override name = 'KeysFileError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('BAD_KEYS_FILE', message, { ...options, badInput: true });
  }
}

/** Parses and checks the keys file's JSON. */
export function parseKeys(json: unknown, where = 'keys file'): Map<string, ApiKeyConfig> {
  const fail = (what: string): never => { throw new KeysFileError(`${where}: ${what}`); };
  if (typeof json !== 'object' || json === null || typeof (json as { keys?: unknown }).keys !== 'object' || (json as { keys?: unknown }).keys === null) {
    return fail('expected {"keys": {"<key>": {"name": ...}}}');
  }
  const out = new Map<string, ApiKeyConfig>();
  for (const [key, raw] of Object.entries((json as { keys: Record<string, unknown> }).keys)) {
    if (key.length < 8) fail(`key "${key.slice(0, 4)}…" is shorter than 8 characters`);
    if (typeof raw !== 'object' || raw === null) return fail(`keys["${key.slice(0, 6)}…"] must be an object`);
    const e = raw as Record<string, unknown>;
    const label = typeof e.name === 'string' && e.name ? e.name : fail(`keys["${key.slice(0, 6)}…"].name must be a non-empty string`);
    const optionalCount = (field: string): number | undefined => {
      const v = e[field];
      if (v === undefined) return undefined;
      return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : fail(`${label}: ${field} must be a positive integer`);
    };
    let budget: bigint | undefined;
    if (e.budget !== undefined) {
      const text = typeof e.budget === 'number' ? String(e.budget) : e.budget;
      if (typeof text !== 'string' || !/^\d+$/.test(text)) fail(`${label}: budget must be a whole number of token base units (a string like "1000000")`);
      budget = BigInt(text as string);
    }
    if (e.payer !== undefined && (typeof e.payer !== 'string' || !e.payer)) fail(`${label}: payer must be an address or a keystore path`);
    out.set(key, {
      name: label, budget, requestsPerMinute: optionalCount('requestsPerMinute'), tokensPerMinute: optionalCount('tokensPerMinute'),
      ...(typeof e.payer === 'string' ? { payer: e.payer } : {}),
    });
  }
  if (out.size === 0) fail('no keys');
  return out;
}

/** Reads a keys file. */
export async function readKeysFile(file: string): Promise<Map<string, ApiKeyConfig>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new KeysFileError(`${file}: ${(err as Error).message}`);
  }
  try {
    return parseKeys(JSON.parse(text), file);
  } catch (err) {
    if (err instanceof KeysFileError) throw err;
    throw new KeysFileError(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

/**
 * The keys file holds the secrets: a warning when its mode lets the group or others read (or write) it, or
 * undefined when it is private (or on a system without POSIX modes). A warning, not a refusal: files made
 * with the default umask (0644) are common and refusing them would stop running gateways on upgrade.
 */
export async function keysFileModeProblem(file: string): Promise<string | undefined> {
  if (process.platform === 'win32') return undefined;
  const mode = (await stat(file)).mode & 0o777;
  if ((mode & 0o077) === 0) return undefined;
  return `${file} holds API keys but is readable${mode & 0o022 ? ' or writable' : ''} by ${mode & 0o007 ? 'every user' : 'its group'} (mode 0${mode.toString(8)}): run chmod 600 ${file}`;
}

const WINDOW_MS = 60_000;

/** A sliding one-minute window of (time, amount) entries. */
class MinuteWindow {
  private entries: { at: number; amount: number }[] = [];
  private sum = 0;

  private expire(now: number): void {
    while (this.entries.length && this.entries[0].at <= now - WINDOW_MS) this.sum -= this.entries.shift()!.amount;
  }

  /** Used in the last minute. */
  used(now: number): number { this.expire(now); return this.sum; }

  add(now: number, amount: number): void {
    if (amount <= 0) return;
    this.entries.push({ at: now, amount });
    this.sum += amount;
  }

  /** Seconds until the use drops below `limit` (0 when it already is). */
  retryAfterS(now: number, limit: number): number {
    this.expire(now);
    let sum = this.sum;
    for (const e of this.entries) {
      if (sum < limit) break;
      sum -= e.amount;
      if (sum < limit) return (e.at + WINDOW_MS - now) / 1000;
    }
    return sum < limit ? 0 : WINDOW_MS / 1000;
  }
}

/** The keys the gateway accepts, with their rate windows and spending. */
export class KeyRing {
  private readonly byHash = new Map<string, ApiKey>();
  private readonly requests = new WeakMap<ApiKey, MinuteWindow>();
  private readonly tokens = new WeakMap<ApiKey, MinuteWindow>();

  /** `keys` undefined = open access (anyone, no limits). */
  constructor(keys?: Map<string, ApiKeyConfig>, private readonly now: () => number = Date.now) {
    for (const [secret, config] of keys ?? []) {
      const id = hash(secret);
      this.byHash.set(id, { ...config, id, spent: 0n, held: 0n });
    }
  }

  /** Where spending is kept across restarts: loads what each key has spent and records every charge from now on. */
  async persistTo(ledger: SpendingLedger): Promise<void> {
    const spent = await ledger.load([...this.byHash.keys()]);
    for (const [id, key] of this.byHash) key.spent = spent.get(id) ?? 0n;
    this.ledger = ledger;
  }

  private ledger?: SpendingLedger;

  get open(): boolean { return this.byHash.size === 0; }

  /** Every key's state (for metrics and tests). */
  list(): ApiKey[] { return [...this.byHash.values()]; }

  /** The key an Authorization header names; 401 when missing or unknown (open access: everyone). */
  authenticate(authorization: string | undefined): ApiKey {
    if (this.open) return OPEN_ACCESS;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw unauthorized('no API key: send "Authorization: Bearer <key>"', 'missing_api_key');
    const wanted = Buffer.from(hash(m[1]), 'hex');
    // Constant-time comparison against every hash, so a key's validity does not leak through timing.
    let found: ApiKey | undefined;
    for (const [h, key] of this.byHash) if (timingSafeEqual(Buffer.from(h, 'hex'), wanted)) found = key;
    if (!found) throw unauthorized('the API key is not valid');
    return found;
  }

  /** Admits one request for `key`, or throws 429 (rate) / 402 (budget). Counts the request. */
  admit(key: ApiKey): void {
    if (key === OPEN_ACCESS) return;
    const now = this.now();
    const requests = this.window(this.requests, key);
    if (key.requestsPerMinute !== undefined && requests.used(now) >= key.requestsPerMinute) {
      throw rateLimited(`rate limit of ${key.requestsPerMinute} requests per minute reached for key "${key.name}"`, requests.retryAfterS(now, key.requestsPerMinute));
    }
    const tokens = this.window(this.tokens, key);
    if (key.tokensPerMinute !== undefined && tokens.used(now) >= key.tokensPerMinute) {
      throw rateLimited(`rate limit of ${key.tokensPerMinute} tokens per minute reached for key "${key.name}"`, tokens.retryAfterS(now, key.tokensPerMinute));
    }
    if (key.budget !== undefined && key.spent >= key.budget) {
      throw overBudget(`key "${key.name}" has spent its budget (${key.spent} of ${key.budget} base units)`);
    }
    requests.add(now, 1);
  }

  /** What `key` may still reserve: budget less spent and held (undefined: no budget). */
  remaining(key: ApiKey): bigint | undefined {
    if (key.budget === undefined || key === OPEN_ACCESS) return undefined;
    const left = key.budget - key.spent - key.held;
    return left > 0n ? left : 0n;
  }

  /**
   * Reserves `amount` of the key's budget for a request in flight: false (and nothing reserved) when spent +
   * held + amount would pass the budget. Synchronous, so concurrent requests of one key cannot both take the
   * last room (the event loop runs one check-and-add at a time).
   */
  hold(key: ApiKey, amount: bigint): boolean {
    if (amount <= 0n || key.budget === undefined || key === OPEN_ACCESS) return true;
    if (key.spent + key.held + amount > key.budget) return false;
    key.held += amount;
    return true;
  }

  /** Gives back what `hold` reserved (the request ended, or the voucher was not signed). */
  release(key: ApiKey, amount: bigint): void {
    if (amount <= 0n || key.budget === undefined || key === OPEN_ACCESS) return;
    key.held = key.held > amount ? key.held - amount : 0n;
  }

  /** Records what a request used: tokens (prompt + generated) and its cost in base units. */
  charge(key: ApiKey, tokens: number, cost: bigint): void {
    if (key === OPEN_ACCESS) return;
    this.window(this.tokens, key).add(this.now(), tokens);
    if (cost === 0n) return;
    key.spent += cost;
    // Written in the background: a lost write (a crash in the next milliseconds) forgets one request's cost at most.
    this.ledger?.record(key.id, key.spent).catch((err: unknown) => this.onLedgerError?.(err));
  }

  /** Called when a spending write fails (logged by the server). */
  onLedgerError?: (err: unknown) => void;

  private window(map: WeakMap<ApiKey, MinuteWindow>, key: ApiKey): MinuteWindow {
    let w = map.get(key);
    if (!w) map.set(key, (w = new MinuteWindow()));
    return w;
  }
}

function hash(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
