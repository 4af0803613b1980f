/**
 * One text generation on the grid: a pipeline session, the shared `generate` loop (prefill, then a token a
 * step, sampling by seed and position), incremental decoding, `stop` strings and end-of-sequence ids. Text
 * comes out as an async iterator of pieces; the trace records route, hops, failovers and cost.
 */
import { vocabSize } from '../fragments/manifest.js';
import type { GridClient } from '../scheduler/client.js';
import { generate, type StepRunner } from '../scheduler/generate.js';
import type { SamplingOptions } from '../policy/sampling.js';
import type { StepPayer } from '../scheduler/payment.js';
import type { PipelineSession } from '../scheduler/session.js';
import type { CatalogModel } from './catalog.js';
import { openPipeline } from './pipeline.js';
import { BudgetError } from './budget.js';
import type { PriceLimits } from '../policy/price-limits.js';
import { StopMatcher } from './stop.js';
import { IncrementalDecoder, type TextTokenizer } from './tokenizers/index.js';
import type { RequestTrace, RouteMetadata } from './trace.js';
import type { Verifier } from './verify/verifier.js';

export type FinishReason = 'stop' | 'length';

export interface GenerationParams {
  promptIds: number[];
  maxTokens: number;
  stop: string[];
  sampling: SamplingOptions;
  /** Stops early (finish "length") when this says the request may not spend more; receives the unpaid cost so far. */
  mayContinue?: (unpaidSoFar: bigint) => boolean;
  payer?: StepPayer;
  /** Prices the session accepts. */
  priceLimits?: PriceLimits;
  /** The gateway's verifier, which observes the session (gateway/verify/). */
  verifier?: Verifier;
  /** Aborted when the client has gone away: generation stops at the next token. */
  signal?: AbortSignal;
  /** Mixture-of-experts models: fail instead of falling back when a chosen expert has no live server. */
  strictExperts?: boolean;
  /** The request asked for exact outputs (`"exact": true`): activations are never compressed on the wire. */
  exact?: boolean;
}

export class GridGeneration {
  completionTokens = 0;
  finishReason: FinishReason = 'length';
  /** List price of the hops not paid by voucher (paid ones are counted by the request's budget as they are signed). */
  unpaidCost = 0n;
  /** Set when the budget refused a step's voucher after some output: the generation ended there (finish "length"). */
  budgetStop?: BudgetError;
  private session?: PipelineSession;

  constructor(private readonly client: GridClient, private readonly model: CatalogModel & { tokenizer: TextTokenizer }, private readonly params: GenerationParams, readonly trace: RequestTrace) {}

  /** Runs the generation, yielding text as it becomes final. Closing the iterator early closes the session. */
  async *pieces(): AsyncGenerator<string> {
    const { model, params, trace } = this;
    const tokenizer = model.tokenizer;
    const manifest = model.open.manifest;
    const session = openPipeline(this.client, model.open, params.promptIds.length + params.maxTokens, params.payer, params.priceLimits, params.verifier, { strictExperts: params.strictExperts, exact: params.exact });
    this.session = session;
    const runner: StepRunner = {
      step: async (inputs, position, tokens, hints) => {
        const outcome = await session.step(inputs, position, tokens, hints);
        trace.addStep(outcome);
        for (const hop of [...outcome.hops, ...(outcome.experts?.hops ?? [])]) if (hop.charge === undefined) this.unpaidCost += hop.cost;
        return outcome;
      },
    };
    // End of sequence: the tokenizer's eos token and the ids generation_config.json names.
    const stopIds = new Set([...tokenizer.stopIds, ...(manifest.generation?.eosTokenIds ?? [])]);
    const decoder = new IncrementalDecoder(tokenizer);
    const stopper = new StopMatcher(params.stop);
    try {
      try {
        for await (const token of generate(runner, {
          ...params.sampling,
          promptIds: params.promptIds, maxTokens: params.maxTokens, // stop ids end the loop below (finish_reason "stop")
          kvCache: manifest.statefulPairs.length > 0, maxLength: model.contextLength, vocabSize: vocabSize(manifest),
          inputNames: manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
        })) {
          trace.firstToken();
          this.completionTokens++;
          if (stopIds.has(token.id)) { this.finishReason = 'stop'; break; }
          const shown = stopper.push(decoder.push(token.id));
          if (shown) yield shown;
          if (stopper.done) { this.finishReason = 'stop'; break; }
          if (params.mayContinue && !params.mayContinue(this.unpaidCost)) break;
          if (params.signal?.aborted) break;
        }
      } catch (err) {
        // A step the budget will not pay for ends the request with what it has (finish "length"), like max_tokens;
        // with nothing produced yet, the caller answers 402.
        if (!(err instanceof BudgetError) || this.completionTokens === 0) throw err;
        this.budgetStop = err;
      }
      if (!stopper.done) {
        const rest = stopper.push(decoder.flush());
        if (stopper.done) this.finishReason = 'stop';
        const tail = rest + stopper.flush();
        if (tail) yield tail;
      }
    } finally {
      await session.close();
    }
  }

  /** The response metadata (the route as it is now, or as it ended). */
  metadata(): RouteMetadata {
    // a step that failed over and then threw (a budget stop, or every replacement failing) never reported its
    // failovers to the trace: the session counted them all
    if (this.session) this.trace.failovers = Math.max(this.trace.failovers, this.session.failovers);
    return this.trace.metadata(this.session?.route ?? []);
  }
}
