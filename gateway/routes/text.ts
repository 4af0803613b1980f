/**
 * POST /v1/completions and POST /v1/chat/completions in OpenAI's formats, streamed (server-sent events ending
 * with `data: [DONE]`) or not. Each response carries the route and per-hop timings: the `x-gridpipe-route`
 * header and a `gridpipe` field (in the body, or the last chunk of a stream).
 */
import { vocabSize } from '../../fragments/manifest.js';
import { randomInt, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requestKey } from '../auth.js';
import type { GatewayContext } from '../context.js';
import type { CatalogModel } from '../catalog.js';
import { ApiError, badRequest, unavailable } from '../errors.js';
import { chatPromptIds } from '../chat-prompt.js';
import { GridGeneration } from '../generation.js';
import { affordableTokens, ceilingPrices, RequestBudget } from '../budget.js';
import { costCeiling, DEFAULT_PRICE_LIMITS } from '../../policy/price-limits.js';
import { gridError } from '../pipeline.js';
import { RequestTrace, routeHeader, type RouteMetadata } from '../trace.js';
import type { TextTokenizer } from '../tokenizers/index.js';
import {
  chatMessages, completionPrompt, objectBody, optionalBoolean, optionalNumber, requiredString, singleChoice, stopStrings, type Body,
} from '../validate.js';
import { refuseUnimplemented } from '../parameters.js';

type Endpoint = 'completions' | 'chat';

/** Chat requests without max_tokens get the rest of the context, capped here. */
const DEFAULT_CHAT_MAX_TOKENS = 512;

interface TextRequest {
  model: CatalogModel & { tokenizer: TextTokenizer };
  promptIds: number[];
  maxTokens: number;
  /** Whether the client set max_tokens (else it is the endpoint's default, lowered to what the key can pay for). */
  maxTokensGiven: boolean;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  sampling: { temperature: number; topP?: number; topK?: number; seed: number };
  /** `strict_experts`: a token whose chosen mixture-of-experts expert has no live server fails the request (docs/moe.md). */
  strictExperts: boolean;
  /** `"exact": true`: activations travel in the model's dtype on every link (no wire compression). */
  exact: boolean;
}

/** `system_fingerprint`: says when the model is synthetic (seeded weights: noise, not language). */
export function fingerprint(model: CatalogModel): string {
  return model.open.manifest.model.synthetic ? 'gridpipe-synthetic' : `gridpipe-${model.open.manifestCid.slice(-12)}`;
}

/** Registers the two text endpoints. */
export function registerTextRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  app.post('/v1/completions', (req, reply) => serveText(ctx, 'completions', req, reply));
  app.post('/v1/chat/completions', (req, reply) => serveText(ctx, 'chat', req, reply));
}

async function parse(ctx: GatewayContext, endpoint: Endpoint, b: Body): Promise<TextRequest> {
  const modelId = requiredString(b, 'model');
  singleChoice(b);
  refuseUnimplemented(endpoint, b);
  const stream = optionalBoolean(b, 'stream', false);
  const strictExperts = optionalBoolean(b, 'strict_experts', false);
  let includeUsage = false;
  if (b.stream_options !== undefined && b.stream_options !== null) {
    if (typeof b.stream_options !== 'object') throw badRequest('"stream_options" must be an object', 'stream_options', 'invalid_type');
    includeUsage = optionalBoolean(b.stream_options as Body, 'include_usage', false);
  }
  const temperatureGiven = optionalNumber(b, 'temperature', { min: 0, max: 2 });
  const topPGiven = optionalNumber(b, 'top_p', { min: 0, max: 1, exclusiveMin: true });
  const topKGiven = optionalNumber(b, 'top_k', { integer: true, min: 0 });
  const seed = optionalNumber(b, 'seed', { integer: true }) ?? randomInt(2 ** 31);
  const exact = optionalBoolean(b, 'exact', false);
  const maxField = endpoint === 'chat' && b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  const requestedMax = optionalNumber(b, maxField, { integer: true, min: 1 });
  const stop = stopStrings(b);
  const messages = endpoint === 'chat' ? chatMessages(b) : undefined;
  const prompt = endpoint === 'completions' ? completionPrompt(b) : undefined;

  const found = await ctx.catalog.resolve(modelId);
  if (found.kind !== 'text') throw badRequest(`model "${found.id}" is not a language model (no input_ids/logits); send its tensors to POST /v1/infer`, 'model', 'model_not_text');
  if (!found.tokenizer) throw unavailable(`model "${found.id}" has no usable tokenizer here: ${found.tokenizerError ?? 'unknown reason'}`, 'tokenizer_unavailable');
  const model = found as CatalogModel & { tokenizer: TextTokenizer };
  // Unset sampling parameters take the publisher's defaults (generation_config.json), else OpenAI's.
  const defaults = model.open.manifest.generation ?? {};
  const temperature = temperatureGiven ?? defaults.temperature ?? 1;
  const topP = topPGiven ?? defaults.topP;
  const topK = topKGiven ?? defaults.topK;
  let promptIds: number[];
  if (messages) promptIds = await chatPromptIds(model.id, model.tokenizer, messages);
  else if (prompt && 'ids' in prompt) {
    promptIds = prompt.ids;
    const vocab = vocabSize(model.open.manifest);
    const bad = vocab === undefined ? undefined : promptIds.find((id) => id >= vocab);
    if (bad !== undefined) throw badRequest(`token id ${bad} in the prompt is not a token of model "${model.id}" (ids are 0 to ${vocab! - 1})`, 'prompt', 'invalid_value');
  }
  else promptIds = model.tokenizer.encode((prompt as { text: string }).text, true);
  if (promptIds.length === 0) throw badRequest('the prompt encodes to no tokens', endpoint === 'chat' ? 'messages' : 'prompt', 'invalid_value');

  const context = model.contextLength;
  const what = endpoint === 'chat' ? 'messages' : 'prompt';
  if (context !== undefined && promptIds.length >= context) {
    throw badRequest(`This model's maximum context length is ${context} tokens. However, your ${what} is ${promptIds.length} tokens, leaving no room to generate.`, what, 'context_length_exceeded');
  }
  const maxTokens = requestedMax ?? (endpoint === 'completions' ? 16 : Math.min(DEFAULT_CHAT_MAX_TOKENS, context !== undefined ? context - promptIds.length : DEFAULT_CHAT_MAX_TOKENS));
  if (context !== undefined && promptIds.length + maxTokens > context) {
    throw badRequest(
      `This model's maximum context length is ${context} tokens. However, you requested ${promptIds.length + maxTokens} tokens (${promptIds.length} in the ${what}, ${maxTokens} in the completion). Please reduce the length of the ${what} or the completion.`,
      maxField, 'context_length_exceeded',
    );
  }
  return { model, promptIds, maxTokens, maxTokensGiven: requestedMax !== undefined, stop, stream, includeUsage, sampling: { temperature, topP, topK, seed }, strictExperts, exact };
}

async function serveText(ctx: GatewayContext, endpoint: Endpoint, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const key = requestKey(req);
  const r = await parse(ctx, endpoint, objectBody(req.body));
  const { model } = r;
  if (model.missing.length) await ctx.catalog.refresh();
  if (model.missing.length) throw unavailable(`model "${model.id}" cannot be served right now: no live supplier hosts fragment ${model.missing[0]}`);
  // The most this request may cost (all its positions at the dearest acceptable host of each fragment): refused
  // up front when the key cannot cover it, and no voucher takes it past that (gateway/budget.ts).
  const priceLimits = ctx.priceLimits ?? DEFAULT_PRICE_LIMITS;
  const prices = ceilingPrices(model.open.manifest, model.open.discovery.current, priceLimits);
  const left = ctx.keys.remaining(key);
  // An unset max_tokens takes what the key can still pay for, as it takes the rest of the context.
  if (!r.maxTokensGiven && left !== undefined) r.maxTokens = affordableTokens(model.open.manifest, prices, r.promptIds.length, r.maxTokens, left);
  const ceiling = costCeiling(model.open.manifest, prices, { positions: r.promptIds.length + r.maxTokens, steps: r.maxTokens + 1 });
  const budget = new RequestBudget(ctx.keys, key, ceiling);
  budget.admit(`this request (${r.promptIds.length} prompt tokens, up to ${r.maxTokens} new)`);

  const requestId = `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
  const created = Math.floor(Date.now() / 1000);
  const manifest = model.open.manifest;
  const trace = new RequestTrace(requestId, { name: model.id, manifestCid: model.open.manifestCid, synthetic: manifest.model.synthetic });
  trace.onHop = (hop) => ctx.metrics.hopSeconds.observe({ peer: hop.peerId }, hop.wallMs / 1000);
  // A client that goes away (before or during the answer) stops the generation and frees the suppliers.
  const gone = new AbortController();
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) gone.abort(); });
  const clientGone = new ApiError(499, 'the client closed the connection', 'invalid_request_error', 'client_closed');
  const generation = new GridGeneration(ctx.client, model, {
    promptIds: r.promptIds, maxTokens: r.maxTokens, stop: r.stop, sampling: r.sampling, payer: budget.wrap(ctx.payerFor?.(key)), signal: gone.signal,
    priceLimits, verifier: ctx.verifier, exact: r.exact, mayContinue: key.budget === undefined ? undefined : (unpaid) => budget.fits(unpaid),
    strictExperts: r.strictExperts,
  }, trace);
  const endpointPath = endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions';
  ctx.feed.publish({ event: 'request.started', requestId, at: Date.now(), endpoint: endpointPath, model: model.id, key: key.name, stream: r.stream });
  ctx.metrics.inflight.inc();
  let settled = false;
  /** Charges the key, counts metrics and tells the feed, once, however the request ended. */
  const settle = (status: number, error?: ApiError): RouteMetadata => {
    const meta = generation.metadata();
    if (settled) return meta;
    settled = true;
    ctx.metrics.inflight.dec();
    const usage = { promptTokens: r.promptIds.length, completionTokens: generation.completionTokens };
    budget.settle(usage.promptTokens + usage.completionTokens, generation.unpaidCost);
    if (generation.budgetStop) ctx.logger.info({ requestId, key: key.name, reason: generation.budgetStop.message }, 'request cut short by its budget');
    const record = { ...meta, key: key.name, usage };
    ctx.metrics.recordGridRequest(record);
    if (trace.firstTokenMs !== undefined) ctx.metrics.firstTokenSeconds.observe({ model: model.id }, trace.firstTokenMs / 1000);
    if (error) ctx.feed.publish({ event: 'request.failed', requestId, at: Date.now(), endpoint: endpointPath, model: model.id, key: key.name, status: error.status, error: error.message, failovers: meta.failovers });
    else ctx.feed.publish({ ...record, event: 'request.finished', at: Date.now(), endpoint: endpointPath, status, finishReason: generation.finishReason });
    return meta;
  };
  const usageOf = (): { prompt_tokens: number; completion_tokens: number; total_tokens: number } => ({
    prompt_tokens: r.promptIds.length, completion_tokens: generation.completionTokens, total_tokens: r.promptIds.length + generation.completionTokens,
  });
  const base = { id: requestId, created, model: model.id, system_fingerprint: fingerprint(model) };
  const labels = { 'x-gridpipe-request-id': requestId, 'x-gridpipe-synthetic': String(manifest.model.synthetic) };
  const pieces = generation.pieces();
  // Settles as "client gone" with what was spent so far.
  gone.signal.addEventListener('abort', () => { if (!settled) settle(499, clientGone); });

  if (!r.stream) {
    let text = '';
    try {
      for await (const piece of pieces) text += piece;
    } catch (err) {
      const apiError = gridError(err, model.id);
      settle(apiError.status, apiError);
      throw apiError;
    }
    if (gone.signal.aborted) throw clientGone;
    const meta = settle(200);
    reply.headers({ ...labels, 'x-gridpipe-route': routeHeader(meta) });
    const choice = endpoint === 'chat'
      ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: generation.finishReason }
      : { text, index: 0, logprobs: null, finish_reason: generation.finishReason };
    return { ...base, object: endpoint === 'chat' ? 'chat.completion' : 'text_completion', choices: [choice], usage: usageOf(), gridpipe: meta };
  }

  // Streaming: wait for the first piece (or the end) so that errors before any output get a plain status, and
  // so the route header names the suppliers the first step really ran on.
  let first: IteratorResult<string>;
  try {
    first = await pieces.next();
  } catch (err) {
    const apiError = gridError(err, model.id);
    settle(apiError.status, apiError);
    throw apiError;
  }
  if (gone.signal.aborted) {
    await pieces.return(undefined);
    throw clientGone;
  }
  const object = endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const chunk = (choice: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}): string =>
    `data: ${JSON.stringify({ ...base, object, choices: choice ? [choice] : [], ...extra })}\n\n`;
  const textChoice = (text: string, finish: string | null): Record<string, unknown> => (endpoint === 'chat'
    ? { index: 0, delta: finish ? {} : { content: text }, logprobs: null, finish_reason: finish }
    : { text, index: 0, logprobs: null, finish_reason: finish });
  async function* events(): AsyncGenerator<string> {
    try {
      if (endpoint === 'chat') yield chunk({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
      if (!first.done && first.value) yield chunk(textChoice(first.value, null));
      if (!first.done) for await (const piece of { [Symbol.asyncIterator]: () => pieces }) yield chunk(textChoice(piece, null));
    } catch (err) {
      // Headers are gone: report the failure in the stream, as OpenAI does, and end it.
      const apiError = gridError(err, model.id);
      settle(apiError.status, apiError);
      yield `data: ${JSON.stringify(apiError.body())}\n\n`;
      return;
    } finally {
      // The client went away mid-stream: stop generating (closes the pipeline session).
      await pieces.return(undefined).catch(() => undefined);
    }
    const meta = settle(200);
    if (r.includeUsage) {
      yield chunk(textChoice('', generation.finishReason));
      yield chunk(undefined, { usage: usageOf(), gridpipe: meta });
    } else {
      yield chunk(textChoice('', generation.finishReason), { gridpipe: meta });
    }
    yield 'data: [DONE]\n\n';
  }
  const stream = Readable.from(events(), { objectMode: false });
  reply.headers({ ...labels, 'x-gridpipe-route': routeHeader(generation.metadata()), 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  reply.type('text/event-stream');
  return reply.send(stream);
}
