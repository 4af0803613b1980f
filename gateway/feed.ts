/**
 * The live feed (GET /v1/feed, server-sent events) the network explorer reads: one event when a request
 * starts, one when it finishes (route, hops, failovers, tokens, cost) or fails. New subscribers first get
 * the recent events, so a page opened mid-traffic is not empty. The feed is public (the explorer reads it
 * from a browser): events are stripped of the caller's key (no key name, no key id) and a failure carries
 * its error code, never the error's text (which can name keys, budgets, peers' messages or local paths).
 * Verification verdicts and filed disputes (issue 21) travel on the same feed as `verify.verdict` and
 * `dispute.filed`: peer ids, spans and chain addresses are public already.
 */
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { RouteMetadata } from './trace.js';

export interface RequestStarted { event: 'request.started'; requestId: string; at: number; endpoint: string; model: string; key: string; stream: boolean }

/** What a finished grid request did (also the basis of its metrics). */
export interface RequestRecord extends RouteMetadata {
  key: string;
  usage?: { promptTokens: number; completionTokens: number };
}
export interface RequestFinished extends RequestRecord { event: 'request.finished'; at: number; endpoint: string; status: number; finishReason?: string }
export interface RequestFailed { event: 'request.failed'; requestId: string; at: number; endpoint: string; model?: string; key: string; status: number; error: string; failovers?: number }

/** A verification check's verdict (issue 21, gateway/verify/): who was checked, by whom, and what was found. No key. */
export interface VerifyVerdict {
  event: 'verify.verdict'; at: number; key: string;
  result: 'agree' | 'supplier-condemned' | 'checker-condemned' | 'undecided' | 'unchecked';
  supplier: string; span: [number, number]; steps: number; checker?: string; referee?: string; mismatch?: string;
}
/** A dispute the gateway filed on chain against a condemned supplier (gateway/verify/dispute-filer.ts). No key. */
export interface DisputeFiled { event: 'dispute.filed'; at: number; key: string; peerId: string; supplier: string; state: 'pending' | 'filed' | 'failed'; disputeId?: string }

export type FeedEvent = RequestStarted | RequestFinished | RequestFailed | VerifyVerdict | DisputeFiled;

/** What leaves the gateway: the event without its key, a failure's error reduced to a code. */
export type PublicFeedEvent = Omit<RequestStarted, 'key'> | Omit<RequestFinished, 'key'> | Omit<RequestFailed, 'key'> | Omit<VerifyVerdict, 'key'> | Omit<DisputeFiled, 'key'>;

const ERROR_CODE = /^[a-z][a-z0-9_]{0,63}$/;

/** The public form of an event: no key; `error` only when it is already a short code (else by status). */
export function publicEvent(event: FeedEvent): PublicFeedEvent {
  const { key: _key, ...rest } = event;
  if (rest.event !== 'request.failed') return rest;
  return { ...rest, error: ERROR_CODE.test(rest.error) ? rest.error : codeForStatus(rest.status) };
}

function codeForStatus(status: number): string {
  switch (status) {
    case 400: return 'invalid_request';
    case 401: return 'invalid_api_key';
    case 402: return 'insufficient_quota';
    case 404: return 'not_found';
    case 429: return 'rate_limit_exceeded';
    case 499: return 'client_closed';
    case 502: return 'upstream_error';
    case 503: return 'unavailable';
    default: return status >= 500 ? 'server_error' : 'invalid_request';
  }
}

export class EventFeed {
  private readonly emitter = new EventEmitter();
  private readonly recent: PublicFeedEvent[] = [];

  constructor(private readonly keepRecent = 100) {
    this.emitter.setMaxListeners(0);
  }

  /** Publishes an event (its public form) to every subscriber. */
  publish(event: FeedEvent): void {
    const pub = publicEvent(event);
    this.recent.push(pub);
    if (this.recent.length > this.keepRecent) this.recent.shift();
    this.emitter.emit('event', pub);
  }

  /** Calls `listener` for each new event; returns the unsubscribe function. */
  subscribe(listener: (event: PublicFeedEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => { this.emitter.off('event', listener); };
  }

  /** The recent events, oldest first. */
  history(): PublicFeedEvent[] { return [...this.recent]; }

  /** Streams the feed to an HTTP response as server-sent events until the client goes away. */
  serve(res: ServerResponse, options: { replay?: boolean; keepAliveMs?: number } = {}): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const send = (e: PublicFeedEvent): void => { res.write(`event: ${e.event}\ndata: ${JSON.stringify(e)}\n\n`); };
    res.write(': gridpipe gateway feed\n\n');
    if (options.replay ?? true) for (const e of this.recent) send(e);
    const unsubscribe = this.subscribe(send);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), options.keepAliveMs ?? 15_000);
    keepAlive.unref();
    res.on('close', () => { clearInterval(keepAlive); unsubscribe(); });
  }
}
