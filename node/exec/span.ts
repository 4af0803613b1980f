/**
 * A span program: how a step runs a span of consecutive fragments on this node. Which inputs the client
 * sends, which come from the KV cache kept here (stateful pairs: `present.*` of one step is the next step's
 * `past_key_values.*`), which pass from one fragment of the span to the next inside the node, and which
 * outputs go back (graph outputs and tensors that fragments after the span read, from the manifest's
 * from/to; never the KV cache). Also validates a step's tensors against the fragments' declared types and
 * shapes before anything runs.
 */
import { readFile } from 'node:fs/promises';
import type ort from 'onnxruntime-node';
import { checkManifest, type Manifest, type ManifestFragment } from '../../fragments/manifest.js';
import { statefulPairs, type StatefulPair } from '../../fragments/stateful.js';
import type { WireTensor } from '../../proto/grid.js';
import { dataTypeName } from '../../fragments/onnx/dtype.js';
import { ExecError } from '../../net/exec/errors.js';
import type { ExecutorPool, FragmentExecutor, FragmentResolver, IoSpec } from './executor.js';
import { elementBytes, emptyTensor, wireToOrt } from '../../net/exec/tensors.js';
import { applyOutputFault, testFault } from './test-fault.js';

/** GRIDPIPE_TEST_FAULT: a cheating supplier for tests (test-fault.ts); unset in every real deployment. */
const TEST_FAULT = testFault();

/** A KV-cache slot: one stateful pair of one fragment. */
export interface KvSlot {
  input: string;
  output: string;
  spec: IoSpec;
  /** Axis of the cached positions (Optimum: 2 of [batch, heads, positions, head_dim]). */
  seqAxis: number;
  /** Axis of the batch, -1 when none. */
  batchAxis: number;
  /** The stateful output's declared positions dim ("past_sequence_length + sequence_length"), when symbolic. */
  outputSeqDim?: string;
}

/** What `prepare` learnt about a step's shape. */
export interface PreparedShape {
  /** Positions the KV cache holds after the step, when the graph's dims say so. */
  positionsAfter?: number;
}

interface Feed { name: string; source: 'client' | 'kv' | 'internal' }

interface FragmentStepPlan {
  executor: FragmentExecutor;
  feeds: Feed[];
  /** Outputs to fetch (undefined: all). */
  fetches?: string[];
}

/** A fragment of a span with, when the session named its manifest, the manifest's entry. */
export interface SpanMember { cid: string; executor: FragmentExecutor; info?: ManifestFragment }

export interface SpanRunResult {
  outputs: Map<string, ort.Tensor>;
  kv: Map<string, ort.Tensor>;
  queueMs: number;
  computeMs: number;
  /**
   * Positions of masked left padding at the front of each KV tensor's positions axis (a batched run's caches
   * are kept as rows of the batch's tensors, padded to its longest row); absent: none.
   */
  kvPadding?: number;
}

/** Index of the axis that grows with each step: where the stateful input's and output's dims differ. */
function kvAxes(input: IoSpec, output: IoSpec | undefined): { seqAxis: number; batchAxis: number } {
  const shape = input.shape;
  let seqAxis = -1;
  if (output && output.shape.length === shape.length) {
    for (let i = 0; i < shape.length; i++) {
      if (typeof shape[i] === 'string' && output.shape[i] !== shape[i]) { seqAxis = i; break; }
    }
  }
  if (seqAxis < 0) seqAxis = shape.findIndex((d) => typeof d === 'string' && /past|seq|len/i.test(d));
  if (seqAxis < 0 && shape.length >= 2) seqAxis = shape.length - 2;
  if (seqAxis < 0) throw new ExecError('EXECUTION_FAILED', `cannot tell which axis of "${input.name}" holds the cached positions`);
  let batchAxis = shape.findIndex((d, i) => i !== seqAxis && typeof d === 'string' && /batch/i.test(d));
  if (batchAxis < 0 && seqAxis !== 0 && typeof shape[0] === 'string') batchAxis = 0;
  return { seqAxis, batchAxis };
}

/** Evaluates a symbolic dim such as "past_sequence_length + sequence_length" when its terms are bound. */
function evalDim(expr: string, bound: Map<string, number>): number | undefined {
  if (!expr.includes('+')) return bound.get(expr);
  let sum = 0;
  for (const term of expr.split('+')) {
    const t = term.trim();
    const v = /^\d+$/.test(t) ? Number(t) : bound.get(t);
    if (v === undefined) return undefined;
    sum += v;
  }
  return sum;
}

export class SpanProgram {
  /** Inputs the client sends, by name. */
  readonly clientInputs = new Map<string, IoSpec>();
  /** Outputs returned to the client, in order. */
  readonly returned: string[] = [];
  readonly kv: KvSlot[] = [];
  /** Positions the model takes at most (its manifest's contextLength), when known: caps max_length and steps. */
  contextLength?: number;
  private readonly plan: FragmentStepPlan[] = [];
  private readonly kvByOutput = new Map<string, KvSlot>();

  private constructor(readonly members: SpanMember[]) {}

  /** CIDs of the span, in order. */
  get cids(): string[] {
    return this.members.map((m) => m.cid);
  }

  /** Builds the program of a span; ExecError when the fragments do not chain. */
  static build(members: SpanMember[]): SpanProgram {
    if (!members.length) throw new ExecError('BAD_REQUEST', 'a session needs at least one fragment');
    const p = new SpanProgram(members);
    const produced = new Map<string, number>();
    const consumedLater = new Set<string>();
    const hasManifest = members.every((m) => m.info);
    const lastIndex = hasManifest ? members[members.length - 1].info!.index : -1;
    const stateful: StatefulPair[][] = members.map((m) => m.info?.stateful ?? statefulPairs(m.executor.inputs.map((i) => i.name), m.executor.outputs.map((o) => o.name)));

    members.forEach((m, j) => {
      const ex = m.executor;
      const inputNames = new Set(ex.inputs.map((i) => i.name));
      const outputNames = new Set(ex.outputs.map((o) => o.name));
      if (m.info) {
        for (const i of m.info.inputs) if (!inputNames.has(i.name)) throw new ExecError('EXECUTION_FAILED', `manifest fragment ${m.info.index} lists input "${i.name}" that ${ex.file} does not have`);
        for (const o of m.info.outputs) if (!outputNames.has(o.name)) throw new ExecError('EXECUTION_FAILED', `manifest fragment ${m.info.index} lists output "${o.name}" that ${ex.file} does not have`);
      }
      const pairsIn = new Map(stateful[j].map((s) => [s.input, s]));
      const feeds: Feed[] = [];
      for (const input of ex.inputs) {
        const pair = pairsIn.get(input.name);
        if (pair) {
          const out = ex.outputs.find((o) => o.name === pair.output);
          if (!out) throw new ExecError('EXECUTION_FAILED', `${ex.file}: stateful output "${pair.output}" is missing`);
          const axes = kvAxes(input, out);
          const outDim = out.shape[axes.seqAxis];
          const slot: KvSlot = { input: input.name, output: pair.output, spec: input, ...axes, ...(typeof outDim === 'string' ? { outputSeqDim: outDim } : {}) };
          p.kv.push(slot);
          p.kvByOutput.set(pair.output, slot);
          feeds.push({ name: input.name, source: 'kv' });
        } else if (produced.has(input.name)) {
          consumedLater.add(input.name);
          feeds.push({ name: input.name, source: 'internal' });
        } else {
          const known = p.clientInputs.get(input.name);
          if (known && known.dtype !== input.dtype) {
            throw new ExecError('EXECUTION_FAILED', `input "${input.name}" is ${dataTypeName(known.dtype)} in one fragment of the span and ${dataTypeName(input.dtype)} in another`);
          }
          if (!known) p.clientInputs.set(input.name, input);
          feeds.push({ name: input.name, source: 'client' });
        }
      }
      const kvOutputs = new Set(stateful[j].map((s) => s.output));
      for (const o of ex.outputs) if (!kvOutputs.has(o.name)) produced.set(o.name, j);
      p.plan.push({ executor: ex, feeds });
    });

    // what goes back to the client
    members.forEach((m, j) => {
      const kvOutputs = new Set(stateful[j].map((s) => s.output));
      if (hasManifest) {
        for (const o of m.info!.outputs) {
          if (kvOutputs.has(o.name)) continue;
          if (o.graphOutput || o.to.some((k) => k > lastIndex)) p.returned.push(o.name);
        }
      } else {
        for (const o of m.executor.outputs) if (!kvOutputs.has(o.name) && !consumedLater.has(o.name)) p.returned.push(o.name);
      }
    });
    const returned = new Set(p.returned);
    members.forEach((m, j) => {
      const kvOutputs = new Set(stateful[j].map((s) => s.output));
      const needed = m.executor.outputs.filter((o) => kvOutputs.has(o.name) || consumedLater.has(o.name) || returned.has(o.name)).map((o) => o.name);
      if (needed.length < m.executor.outputs.length) p.plan[j].fetches = needed;
    });
    return p;
  }

  /** Bytes of KV cache one position costs for a batch, when every dim but the positions is known. */
  kvBytesPerPosition(batch: number): number | undefined {
    let total = 0;
    for (const s of this.kv) {
      let n = elementBytes(s.spec.type);
      for (let i = 0; i < s.spec.shape.length; i++) {
        if (i === s.seqAxis) continue;
        const d = s.spec.shape[i];
        if (i === s.batchAxis) n *= batch;
        else if (typeof d === 'number') n *= d;
        else return undefined;
      }
      total += n;
    }
    return total;
  }

  /** Dims of an empty KV input for a batch; ExecError when a dim other than batch/positions is symbolic. */
  emptyKvDims(slot: KvSlot, batch: number): number[] {
    return slot.spec.shape.map((d, i) => {
      if (i === slot.seqAxis) return 0;
      if (i === slot.batchAxis) return batch;
      if (typeof d === 'number') return d;
      throw new ExecError('EXECUTION_FAILED', `cannot size an empty KV cache for "${slot.input}": dim ${i} is "${d}"`);
    });
  }

  /** An empty KV cache (before the first step). */
  emptyKv(batch: number): Map<string, ort.Tensor> {
    return new Map(this.kv.map((s) => [s.input, emptyTensor(s.spec.type, this.emptyKvDims(s, batch))]));
  }

  /** The KV slot fed by an output, if it is a stateful output. */
  kvSlotOfOutput(name: string): KvSlot | undefined {
    return this.kvByOutput.get(name);
  }

  /**
   * Checks a step's tensors against the span and converts them: every client input present once, none
   * extra, dtype and rank as declared, fixed dims equal, symbolic dims consistent with each other and with
   * the KV cache as it will be at this step (`kvDims`). ExecError BAD_REQUEST naming the first problem.
   */
  prepare(tensors: readonly WireTensor[], kvDims: Map<string, number[]>, shape?: PreparedShape): Map<string, ort.Tensor> {
    const bound = new Map<string, number>();
    const bind = (symbol: string, value: number, what: string): void => {
      if (symbol.includes('+')) return;
      const had = bound.get(symbol);
      if (had === undefined) bound.set(symbol, value);
      else if (had !== value) throw new ExecError('BAD_REQUEST', `${what}: "${symbol}" is ${value} here but ${had} elsewhere in this step`);
    };
    for (const s of this.kv) {
      const dims = kvDims.get(s.input);
      if (!dims) continue;
      s.spec.shape.forEach((d, i) => { if (typeof d === 'string') bind(d, dims[i], `KV cache "${s.input}"`); });
    }
    const feeds = new Map<string, ort.Tensor>();
    for (const t of tensors) {
      const spec = this.clientInputs.get(t.name);
      if (!spec) {
        if (this.kv.some((s) => s.input === t.name)) throw new ExecError('BAD_REQUEST', `input "${t.name}" is KV cache that this node keeps; do not send it`);
        throw new ExecError('BAD_REQUEST', `unexpected input "${t.name}" (the span reads ${[...this.clientInputs.keys()].join(', ') || 'nothing from the client'})`);
      }
      if (feeds.has(t.name)) throw new ExecError('BAD_REQUEST', `input "${t.name}" sent twice`);
      if (t.dtype !== spec.dtype) throw new ExecError('BAD_REQUEST', `input "${t.name}" is ${dataTypeName(t.dtype)}, expected ${dataTypeName(spec.dtype)}`);
      if (spec.shape.length && t.dims.length !== spec.shape.length) {
        throw new ExecError('BAD_REQUEST', `input "${t.name}" has ${t.dims.length} dims [${t.dims.join(', ')}], expected ${spec.shape.length} [${spec.shape.join(', ')}]`);
      }
      spec.shape.forEach((d, i) => {
        if (typeof d === 'number') {
          if (d >= 0 && t.dims[i] !== d) throw new ExecError('BAD_REQUEST', `input "${t.name}" dim ${i} is ${t.dims[i]}, expected ${d}`);
        } else {
          bind(d, t.dims[i], `input "${t.name}" dim ${i}`);
        }
      });
      feeds.set(t.name, wireToOrt(t));
    }
    for (const name of this.clientInputs.keys()) if (!feeds.has(name)) throw new ExecError('BAD_REQUEST', `input "${name}" is missing`);
    // derived dims ("past_sequence_length + sequence_length") once every symbol is bound
    for (const [name, spec] of this.clientInputs) {
      const dims = feeds.get(name)!.dims;
      spec.shape.forEach((d, i) => {
        if (typeof d !== 'string' || !d.includes('+')) return;
        const want = evalDim(d, bound);
        if (want !== undefined && want !== dims[i]) throw new ExecError('BAD_REQUEST', `input "${name}" dim ${i} is ${dims[i]}, expected ${d} = ${want}`);
      });
    }
    // The model's context bounds every positions dim a step binds (batch dims aside), with a KV cache or not.
    if (this.contextLength !== undefined) {
      for (const [symbol, value] of bound) {
        if (!/batch/i.test(symbol) && value > this.contextLength) throw new ExecError('BAD_REQUEST', `"${symbol}" is ${value} in this step, over the model's context of ${this.contextLength} positions`);
      }
    }
    if (shape) {
      let after: number | undefined;
      for (const s of this.kv) {
        const v = s.outputSeqDim === undefined ? undefined : evalDim(s.outputSeqDim, bound);
        if (v !== undefined) after = Math.max(after ?? 0, v);
      }
      shape.positionsAfter = after;
    }
    return feeds;
  }

  /** Runs the span's fragments in order; the KV map passed in is not modified. */
  async run(client: Map<string, ort.Tensor>, kv: Map<string, ort.Tensor>): Promise<SpanRunResult> {
    const internal = new Map<string, ort.Tensor>();
    const nextKv = new Map<string, ort.Tensor>();
    let queueMs = 0;
    let computeMs = 0;
    let lastFeeds: Record<string, ort.Tensor> = {};
    for (const step of this.plan) {
      const feeds: Record<string, ort.Tensor> = {};
      // the run's work for the executor's placement (run-placement.ts): elements of the feeds that are not KV cache
      let work = 0;
      for (const f of step.feeds) {
        const t = f.source === 'client' ? client.get(f.name) : f.source === 'kv' ? kv.get(f.name) : internal.get(f.name);
        if (!t) throw new ExecError('INTERNAL', `no tensor for "${f.name}" (${f.source})`);
        feeds[f.name] = t;
        if (f.source !== 'kv') work += t.size;
      }
      lastFeeds = feeds;
      const r = await step.executor.run(feeds, step.fetches, work);
      queueMs += r.queueMs;
      computeMs += r.computeMs;
      for (const name in r.outputs) {
        const slot = this.kvByOutput.get(name);
        if (slot) nextKv.set(slot.input, r.outputs[name]);
        else internal.set(name, r.outputs[name]);
      }
    }
    const outputs = new Map<string, ort.Tensor>();
    for (const name of this.returned) {
      const t = internal.get(name);
      if (t) outputs.set(name, t);
    }
    if (TEST_FAULT) applyOutputFault(TEST_FAULT, outputs, lastFeeds, client);
    return { outputs, kv: nextKv, queueMs, computeMs };
  }
}

export interface FragmentRefIn { cid: string; manifestCid?: string; index?: number }

/** Loads manifests by CID through the resolver (JSON files), cached. */
export class ManifestCache {
  private readonly cache = new Map<string, Promise<Manifest>>();

  constructor(private readonly resolve: FragmentResolver) {}

  get(cid: string): Promise<Manifest> {
    let p = this.cache.get(cid);
    if (!p) {
      p = (async () => {
        const file = await this.resolve(cid);
        if (!file) throw new ExecError('NOT_FOUND', `manifest ${cid} is not hosted on this node`);
        let parsed: unknown;
        try {
          parsed = JSON.parse(await readFile(file, 'utf8'));
        } catch (err) {
          throw new ExecError('INTERNAL', `manifest ${cid} at ${file} cannot be read: ${(err as Error).message}`);
        }
        try {
          return checkManifest(parsed, file);
        } catch (err) {
          throw new ExecError('INTERNAL', (err as Error).message);
        }
      })();
      this.cache.set(cid, p);
      p.catch(() => this.cache.delete(cid));
    }
    return p;
  }
}

/** Resolves a span's fragment refs to executors (and manifest entries) and builds its program. */
export async function loadSpan(refs: readonly FragmentRefIn[], pool: ExecutorPool, manifests: ManifestCache): Promise<SpanProgram> {
  if (!refs.length) throw new ExecError('BAD_REQUEST', 'open names no fragments');
  const withManifest = refs.filter((r) => r.manifestCid).length;
  if (withManifest && withManifest !== refs.length) throw new ExecError('BAD_REQUEST', 'either every fragment of the span names its manifest or none does');
  const members: SpanMember[] = [];
  for (let i = 0; i < refs.length; i++) {
    const ref = refs[i];
    if (!ref.cid) throw new ExecError('BAD_REQUEST', `fragment ${i} of the span has no cid`);
    let info: ManifestFragment | undefined;
    if (ref.manifestCid) {
      if (ref.manifestCid !== refs[0].manifestCid) throw new ExecError('BAD_REQUEST', 'the fragments of a span must come from one manifest');
      const manifest = await manifests.get(ref.manifestCid);
      const index = ref.index ?? 0;
      info = manifest.fragments[index];
      if (!info) throw new ExecError('BAD_REQUEST', `manifest ${ref.manifestCid} has no fragment ${index}`);
      if (info.cid !== ref.cid) throw new ExecError('BAD_REQUEST', `fragment ${index} of manifest ${ref.manifestCid} is ${info.cid}, not ${ref.cid}`);
      if (i > 0 && index !== members[i - 1].info!.index + 1) throw new ExecError('BAD_REQUEST', `the span's fragments must be consecutive (fragment ${index} follows ${members[i - 1].info!.index})`);
    }
    members.push({ cid: ref.cid, executor: await pool.get(ref.cid), info });
  }
  const program = SpanProgram.build(members);
  if (refs[0].manifestCid) program.contextLength = (await manifests.get(refs[0].manifestCid)).model.contextLength;
  return program;
}
