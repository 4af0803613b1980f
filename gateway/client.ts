/**
 * `gridpipe/client`: a small typed client for a gridpipe gateway (any OpenAI client works too; this one also
 * reads the route metadata and speaks /v1/infer). Uses the global fetch, in a browser as in Node.
 *
 * Runs in a browser: it imports only proto/wire.ts (generated message code on the protobufjs minimal
 * runtime), no node: module, no fs and no Buffer. test/gateway/client-sdk.test.ts walks its imports and runs
 * it with none of Node's modules in reach.
 */
import { decodeTensor, encodeTensor } from '../proto/wire.js';
import { GridpipeError } from '../errors/base.js';

export interface GridpipeClientOptions {
  /** The gateway, e.g. http://127.0.0.1:8080 (with or without /v1). */
  baseUrl: string;
  apiKey?: string;
  fetch?: typeof fetch;
}

export interface CompletionRequest {
  model: string;
  prompt: string | number[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  /** Mixture-of-experts models: fail (503 `expert_unavailable`, naming the expert) instead of falling back when a chosen expert has no live server. */
  strict_experts?: boolean;
}

export interface RouteHop { peerId: string; fragments: [number, number]; steps: number; wallMs: number; computeMs: number; queueMs: number; paymentMs?: number; payerMs?: number; replayed: number; cost: string; paidSteps: number }
/** The `gridpipe` field of a response: route, per-hop timings, failovers and cost. */
export interface RouteInfo {
  requestId: string; model: string; manifestCid: string; synthetic: boolean;
  route: { peerId: string; fragments: [number, number] }[];
  hops: RouteHop[]; failovers: number; steps: number; cost: string; latencyMs: number; firstTokenMs?: number;
  /** Mixture-of-experts models cut for selective activation: expert calls, their cost (part of `cost`) and fallbacks (docs/moe.md). */
  experts?: { calls: number; cost?: string; fallbacks: { layer: number; expert: number; by?: number; tokens: number }[] };
}

export interface Completion {
  id: string;
  text: string;
  finishReason: 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  gridpipe: RouteInfo;
  systemFingerprint: string;
}

/** A piece of a streamed completion; the last one carries finishReason and gridpipe. */
export interface CompletionChunk { text: string; finishReason?: 'stop' | 'length'; gridpipe?: RouteInfo; usage?: Completion['usage'] }

export interface ModelInfo { id: string; object: 'model'; created: number; owned_by: string; gridpipe: Record<string, unknown> }

/** A tensor for /v1/infer: an ONNX/onnxruntime dtype name, dims and the flat data. */
export interface Tensor { dtype: string; dims: number[]; data: ArrayLike<number> | ArrayLike<bigint> | number[] }

/**
 * An error answer of the gateway (OpenAI's shape). `code` is the answer's code, or `api_error` when it has
 * none; a 4xx answer is the caller's bad input.
 */
export class GridpipeApiError extends GridpipeError {
  constructor(readonly status: number, message: string, readonly type?: string, code?: string | null, readonly param?: string | null) {
    super(code ?? 'api_error', message, { badInput: status >= 400 && status < 500 });
    this.name = 'GridpipeApiError';
  }
}

const TENSORS_MEDIA_TYPE = 'application/x-gridpipe-tensors';
const DTYPES: Record<string, { code: number; array: new (b: ArrayBuffer, o: number, n: number) => ArrayLike<number | bigint>; size: number }> = {
  float32: { code: 1, array: Float32Array, size: 4 }, float: { code: 1, array: Float32Array, size: 4 },
  uint8: { code: 2, array: Uint8Array, size: 1 }, int8: { code: 3, array: Int8Array, size: 1 },
  int32: { code: 6, array: Int32Array, size: 4 }, int64: { code: 7, array: BigInt64Array, size: 8 },
  float64: { code: 11, array: Float64Array, size: 8 }, double: { code: 11, array: Float64Array, size: 8 },
};
const NAMES_BY_CODE: Record<number, string> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 11: 'float64' };

/** A tensor's data as raw little-endian bytes of its dtype. */
function tensorBytes(t: Tensor, code: number): Uint8Array {
  if (ArrayBuffer.isView(t.data)) return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const values = Array.from(t.data as ArrayLike<number | bigint>);
  const typed: ArrayBufferView = code === 7 ? BigInt64Array.from(values, (x) => BigInt(x))
    : code === 11 ? Float64Array.from(values, Number) : code === 6 ? Int32Array.from(values, Number)
      : code === 2 ? Uint8Array.from(values, Number) : code === 3 ? Int8Array.from(values, Number) : Float32Array.from(values, Number);
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

/** The chunks as one buffer (Buffer.concat without Buffer, which a browser lacks). */
function concatBytes(chunks: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const c of chunks) length += c.byteLength;
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out;
}

export class GridpipeClient {
  private readonly base: string;
  private readonly doFetch: typeof fetch;

  constructor(private readonly options: GridpipeClientOptions) {
    this.base = options.baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
    // A browser's fetch must be called with the global as `this`, never as a method of this client.
    this.doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  /** The models the gateway can serve now. */
  async models(): Promise<ModelInfo[]> {
    const res = await this.request('GET', '/v1/models');
    return ((await res.json()) as { data: ModelInfo[] }).data;
  }

  /** A whole completion. */
  async complete(request: CompletionRequest): Promise<Completion> {
    const res = await this.request('POST', '/v1/completions', { ...request, stream: false });
    const body = (await res.json()) as { id: string; choices: { text: string; finish_reason: 'stop' | 'length' }[]; usage: Completion['usage']; gridpipe: RouteInfo; system_fingerprint: string };
    return { id: body.id, text: body.choices[0].text, finishReason: body.choices[0].finish_reason, usage: body.usage, gridpipe: body.gridpipe, systemFingerprint: body.system_fingerprint };
  }

  /** A completion streamed piece by piece (server-sent events). */
  async *stream(request: CompletionRequest, signal?: AbortSignal): AsyncGenerator<CompletionChunk> {
    const res = await this.request('POST', '/v1/completions', { ...request, stream: true, stream_options: { include_usage: true } }, { signal });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let last: CompletionChunk | undefined;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (!data) continue;
          if (data === '[DONE]') { if (last) yield last; return; }
          const chunk = JSON.parse(data) as { error?: { message: string; type?: string; code?: string }; choices: { text: string; finish_reason: 'stop' | 'length' | null }[]; usage?: Completion['usage']; gridpipe?: RouteInfo };
          if (chunk.error) throw new GridpipeApiError(502, chunk.error.message, chunk.error.type, chunk.error.code);
          const choice = chunk.choices[0];
          if (choice?.text) yield { text: choice.text };
          // The finish, usage and route come in the last chunks: merge them into one final chunk.
          if (choice?.finish_reason || chunk.usage || chunk.gridpipe) {
            last = { text: '', ...last, ...(choice?.finish_reason ? { finishReason: choice.finish_reason } : {}), ...(chunk.usage ? { usage: chunk.usage } : {}), ...(chunk.gridpipe ? { gridpipe: chunk.gridpipe } : {}) };
          }
        }
      }
      throw new GridpipeApiError(502, 'the stream ended without [DONE]');
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }

  /** Runs a tensor model: named tensors in, named tensors out (binary frames both ways). */
  async infer(model: string, tensors: Record<string, Tensor>): Promise<{ outputs: Record<string, Tensor>; route?: unknown }> {
    const frames: Uint8Array[] = [];
    for (const [name, t] of Object.entries(tensors)) {
      const spec = DTYPES[t.dtype];
      if (!spec) throw new Error(`tensor "${name}": dtype ${t.dtype} is not one this client encodes (${Object.keys(DTYPES).join(', ')})`);
      const data = tensorBytes(t, spec.code);
      const bytes = encodeTensor({ name, dtype: spec.code, dims: t.dims, data });
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, bytes.byteLength);
      frames.push(length, bytes);
    }
    const res = await this.request('POST', `/v1/infer?model=${encodeURIComponent(model)}`, concatBytes(frames), { contentType: TENSORS_MEDIA_TYPE, accept: TENSORS_MEDIA_TYPE });
    const body = new Uint8Array(await res.arrayBuffer());
    const outputs: Record<string, Tensor> = {};
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let at = 0; at < body.byteLength;) {
      const length = view.getUint32(at);
      const wire = decodeTensor(body.subarray(at + 4, at + 4 + length));
      at += 4 + length;
      const dtype = NAMES_BY_CODE[wire.dtype];
      if (!dtype) throw new Error(`output "${wire.name}" has dtype code ${wire.dtype}, not one this client decodes`);
      const spec = DTYPES[dtype];
      const copy = wire.data.slice(); // aligned copy
      outputs[wire.name] = { dtype, dims: wire.dims, data: new spec.array(copy.buffer as ArrayBuffer, copy.byteOffset, copy.byteLength / spec.size) as ArrayLike<number> };
    }
    const route = res.headers.get('x-gridpipe-route');
    return { outputs, route: route ? JSON.parse(route) : undefined };
  }

  private async request(method: string, path: string, body?: unknown, extra: { signal?: AbortSignal; contentType?: string; accept?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    if (extra.accept) headers.accept = extra.accept;
    let payload: NonNullable<RequestInit['body']> | undefined;
    if (body !== undefined) {
      headers['content-type'] = extra.contentType ?? 'application/json';
      payload = extra.contentType ? (body as Uint8Array as NonNullable<RequestInit['body']>) : JSON.stringify(body);
    }
    const res = await this.doFetch(`${this.base}${path}`, { method, headers, body: payload, signal: extra.signal });
    if (!res.ok) {
      const text = await res.text();
      let error: { message?: string; type?: string; code?: string | null; param?: string | null } = {};
      try { error = (JSON.parse(text) as { error: typeof error }).error ?? {}; } catch { error = { message: text }; }
      throw new GridpipeApiError(res.status, error.message ?? `HTTP ${res.status}`, error.type, error.code, error.param);
    }
    return res;
  }
}
