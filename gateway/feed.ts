/**
 * The live feed (GET /v1/feed, server-sent events) the network explorer reads: one event when a request
 * starts, one when it finishes (route, hops, failovers, tokens, cost) or fails. New subscribers first get
 * the recent events, so a page opened mid-traffic is not empty.
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

export type FeedEvent = RequestStarted | RequestFinished | RequestFailed;

export class EventFeed {
  private readonly emitter = new EventEmitter();
  private readonly recent: FeedEvent[] = [];

  constructor(private readonly keepRecent = 100) {
    this.emitter.setMaxListeners(0);
  }

  /** Publishes an event to every subscriber. */
  publish(event: FeedEvent): void {
    this.recent.push(event);
    if (this.recent.length > this.keepRecent) this.recent.shift();
    this.emitter.emit('event', event);
  }

  /** Calls `listener` for each new event; returns the unsubscribe function. */
  subscribe(listener: (event: FeedEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => { this.emitter.off('event', listener); };
  }

  /** The recent events, oldest first. */
  history(): FeedEvent[] { return [...this.recent]; }

  /** Streams the feed to an HTTP response as server-sent events until the client goes away. */
  serve(res: ServerResponse, options: { replay?: boolean; keepAliveMs?: number } = {}): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const send = (e: FeedEvent): void => { res.write(`event: ${e.event}\ndata: ${JSON.stringify(e)}\n\n`); };
    res.write(': gridpipe gateway feed\n\n');
    if (options.replay ?? true) for (const e of this.recent) send(e);
    const unsubscribe = this.subscribe(send);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), options.keepAliveMs ?? 15_000);
    keepAlive.unref();
    res.on('close', () => { clearInterval(keepAlive); unsubscribe(); });
  }
}
