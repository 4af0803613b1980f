/**
 * POST /v1/infer: named tensors in, named tensors out, for any model on the grid (image classifiers,
 * embedders...). JSON or binary frames (see ../tensors.ts), chosen by Content-Type for the request and by
 * Accept for the reply. The model is the body's `model` (JSON) or `?model=` / `x-gridpipe-model` (binary).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type ort from 'onnxruntime-node';
import { requestKey } from '../auth.js';
import type { GatewayContext } from '../context.js';
import { badRequest, unavailable } from '../errors.js';
import { gridError, openPipeline } from '../pipeline.js';
import { RequestBudget, requestCeiling } from '../budget.js';
import { DEFAULT_PRICE_LIMITS } from '../../policy/price-limits.js';
import { RequestTrace, routeHeader } from '../trace.js';
import { TENSORS_MEDIA_TYPE, tensorFromJson, tensorToJson, tensorsFromFrames, tensorsToFrames, type TensorMap } from '../tensors.js';
import { dataTypeFromName, ortTypeName } from '../../fragments/onnx/dtype.js';
import type { Manifest } from '../../fragments/manifest.js';
import { objectBody, optionalBoolean } from '../validate.js';
import { fingerprint } from './text.js';

/** Registers the infer endpoint and its binary body parser. */
export function registerInferRoute(app: FastifyInstance, ctx: GatewayContext, bodyLimit: number): void {
  app.addContentTypeParser([TENSORS_MEDIA_TYPE, 'application/octet-stream'], { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  app.post('/v1/infer', { bodyLimit }, (req, reply) => serveInfer(ctx, req, reply));
}

/**
 * The request's model id, tensors and `strict_experts` (a mixture-of-experts model's chosen expert with no live
 * server fails the request instead of falling back: docs/moe.md), in whichever encoding it came.
 */
function readRequest(req: FastifyRequest): { modelId: string; inputs: TensorMap; strictExperts: boolean } {
  if (Buffer.isBuffer(req.body)) {
    const query = req.query as Record<string, unknown>;
    const modelId = typeof query.model === 'string' ? query.model : req.headers['x-gridpipe-model'];
    if (typeof modelId !== 'string' || !modelId) throw badRequest('binary requests name the model with ?model=<id> or an x-gridpipe-model header', 'model', 'invalid_type');
    return { modelId, inputs: tensorsFromFrames(req.body), strictExperts: strictExpertsQuery(query.strict_experts) };
  }
  const b = objectBody(req.body);
  if (typeof b.model !== 'string' || !b.model) throw badRequest('"model" is required and must be a non-empty string', 'model', 'invalid_type');
  if (typeof b.inputs !== 'object' || b.inputs === null || Array.isArray(b.inputs)) throw badRequest('"inputs" must be an object of named tensors', 'inputs', 'invalid_type');
  const inputs: TensorMap = {};
  for (const [name, value] of Object.entries(b.inputs as Record<string, unknown>)) inputs[name] = tensorFromJson(name, value);
  return { modelId: b.model, inputs, strictExperts: optionalBoolean(b, 'strict_experts', false) };
}

/** `?strict_experts=true|false` of a binary request (absent: false). */
function strictExpertsQuery(value: unknown): boolean {
  if (value === undefined) return false;
  if (value === 'true' || value === 'false') return value === 'true';
  throw badRequest(`"strict_experts" must be true or false, got ${JSON.stringify(value)}`, 'strict_experts', 'invalid_type');
}

/** Checks the tensors against the model's graph inputs (names, types, fixed dims); 400 on a mismatch. */
function checkInputs(manifest: Manifest, inputs: TensorMap): void {
  const wanted = manifest.model.inputs.filter((i) => !i.name.startsWith('past_key_values'));
  for (const name of Object.keys(inputs)) {
    if (!wanted.some((w) => w.name === name)) throw badRequest(`the model has no input "${name}" (its inputs: ${wanted.map((w) => w.name).join(', ')})`, `inputs.${name}`, 'invalid_value');
  }
  for (const w of wanted) {
    const t = inputs[w.name];
    if (!t) throw badRequest(`input "${w.name}" is missing (the model's inputs: ${wanted.map((x) => x.name).join(', ')})`, `inputs.${w.name}`, 'invalid_value');
    let type: string | undefined;
    try { type = ortTypeName(dataTypeFromName(w.dtype)); } catch { type = undefined; }
    if (type && t.type !== type) throw badRequest(`input "${w.name}" must be ${type}, got ${t.type}`, `inputs.${w.name}.dtype`, 'invalid_value');
    if (w.shape) {
      const fixed = w.shape.map((d) => (typeof d === 'number' ? d : null));
      if (t.dims.length !== fixed.length || fixed.some((d, i) => d !== null && d !== t.dims[i])) {
        throw badRequest(`input "${w.name}" must have shape [${w.shape.map((d) => d ?? '?').join(', ')}], got [${t.dims.join(', ')}]`, `inputs.${w.name}.dims`, 'invalid_value');
      }
      if (t.dims.some((d) => d === 0)) throw badRequest(`input "${w.name}" is empty`, `inputs.${w.name}.dims`, 'invalid_value');
    }
  }
}

async function serveInfer(ctx: GatewayContext, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const key = requestKey(req);
  const { modelId, inputs, strictExperts } = readRequest(req);
  const model = await ctx.catalog.resolve(modelId);
  const manifest = model.open.manifest;
  checkInputs(manifest, inputs);
  if (model.missing.length) await ctx.catalog.refresh();
  if (model.missing.length) throw unavailable(`model "${model.id}" cannot be served right now: no live supplier hosts fragment ${model.missing[0]}`);

  // One "position" per call; a symbolic leading dim is the batch, and the cost scales with it.
  const first = manifest.model.inputs[0];
  const batch = first?.shape && typeof first.shape[0] !== 'number' ? (inputs[first.name]?.dims[0] ?? 1) : 1;
  // Models with a KV cache run as one prefill: the servers' caches must hold the longest input dim.
  const maxLength = Math.max(1, ...Object.values(inputs).flatMap((t) => t.dims.slice(1)));
  // What the step is priced and checked on: new KV positions for a model with a cache, else one run per batch entry.
  const tokens = manifest.statefulPairs.length > 0 ? maxLength : batch;
  // Priced before any voucher: refused up front when the key cannot cover the ceiling (gateway/budget.ts).
  const priceLimits = ctx.priceLimits ?? DEFAULT_PRICE_LIMITS;
  const budget = new RequestBudget(ctx.keys, key, requestCeiling(manifest, model.open.discovery.current, priceLimits, { positions: tokens, steps: 1 }));
  budget.admit('this request');

  const requestId = `infer-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
  const trace = new RequestTrace(requestId, { name: model.id, manifestCid: model.open.manifestCid, synthetic: manifest.model.synthetic });
  trace.onHop = (hop) => ctx.metrics.hopSeconds.observe({ peer: hop.peerId }, hop.wallMs / 1000);
  ctx.feed.publish({ event: 'request.started', requestId, at: Date.now(), endpoint: '/v1/infer', model: model.id, key: key.name, stream: false });
  ctx.metrics.inflight.inc();
  const session = openPipeline(ctx.client, model.open, maxLength, budget.wrap(ctx.payerFor?.(key)), priceLimits, ctx.verifier, { strictExperts });
  let unpaidCost = 0n;
  let outputs: Record<string, ort.Tensor>;
  try {
    const outcome = await session.step(inputs, 0, tokens);
    trace.addStep(outcome);
    for (const hop of outcome.hops) if (hop.charge === undefined) unpaidCost += hop.cost;
    outputs = outcome.outputs;
  } catch (err) {
    const apiError = gridError(err, model.id);
    ctx.metrics.inflight.dec();
    budget.settle(0, unpaidCost);
    ctx.feed.publish({ event: 'request.failed', requestId, at: Date.now(), endpoint: '/v1/infer', model: model.id, key: key.name, status: apiError.status, error: apiError.message });
    throw apiError;
  } finally {
    await session.close();
  }
  const meta = trace.metadata(session.route);
  ctx.metrics.inflight.dec();
  budget.settle(0, unpaidCost);
  ctx.metrics.recordGridRequest({ ...meta, key: key.name });
  ctx.feed.publish({ ...meta, key: key.name, event: 'request.finished', at: Date.now(), endpoint: '/v1/infer', status: 200 });
  reply.headers({
    'x-gridpipe-request-id': requestId, 'x-gridpipe-route': routeHeader(meta), 'x-gridpipe-synthetic': String(manifest.model.synthetic),
    'x-gridpipe-cost': meta.cost,
  });
  if (wantsBinary(req.headers.accept)) {
    reply.type(TENSORS_MEDIA_TYPE);
    return tensorsToFrames(outputs);
  }
  return {
    id: requestId, object: 'infer.result', model: model.id, system_fingerprint: fingerprint(model),
    outputs: Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name, tensorToJson(t)])), gridpipe: meta,
  };
}

function wantsBinary(accept: string | undefined): boolean {
  return !!accept && (accept.includes(TENSORS_MEDIA_TYPE) || (accept.includes('application/octet-stream') && !accept.includes('application/json')));
}
