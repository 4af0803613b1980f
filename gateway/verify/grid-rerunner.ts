/**
 * The arbiter's re-runs on the grid (issue 21): opens the dispute's model by its manifest CID, picks live hosts
 * of the span whose staking address is not the accused's (free ones: the arbiter pays no one yet), and runs
 * the evidence's chunks on each in one call (rerun.ts), as the verifier does.
 */
import type { Logger } from 'pino';
import { ExecClient, type TensorMap } from '../../net/exec/client.js';
import type { GridClient, OpenModel } from '../../scheduler/client.js';
import { isPaidSpan } from '../../scheduler/payment.js';
import type { DisputeContext } from './dispute-evidence.js';
import type { DisputeRerunner } from './arbiter.js';
import { rerunOnHost } from './rerun.js';

export class GridRerunner implements DisputeRerunner {
  private readonly models = new Map<string, Promise<OpenModel>>();
  private readonly exec: ExecClient;

  constructor(private readonly client: GridClient, private readonly options: { timeoutMs?: number; logger?: Logger; exec?: ExecClient } = {}) {
    this.exec = options.exec ?? new ExecClient();
  }

  private model(manifestCid: string): Promise<OpenModel> {
    let m = this.models.get(manifestCid);
    if (!m) {
      m = this.client.openModel(manifestCid);
      m.catch(() => this.models.delete(manifestCid));
      this.models.set(manifestCid, m);
    }
    return m;
  }

  async spanCids(context: DisputeContext): Promise<string[]> {
    const { manifest } = await this.model(context.manifestCid);
    if (context.end > manifest.fragments.length) throw new RangeError(`the span ${context.start}..${context.end} is outside the model's ${manifest.fragments.length} fragments`);
    return manifest.fragments.slice(context.start, context.end).map((f) => f.cid);
  }

  async rerun(context: DisputeContext, chunks: { position: number; inputs: TensorMap }[], accused: string, hosts: number): Promise<TensorMap[][]> {
    const model = await this.model(context.manifestCid);
    const spans = (await model.discovery.refresh()).filter((s) => s.start <= context.start && context.end <= s.end
      && s.stakingAddress.toLowerCase() !== accused.toLowerCase() && !(isPaidSpan(s) && Number(s.pricePerGflop) > 0));
    const out: TensorMap[][] = [];
    const reduction = { ...(context.reduction.lastRowOnly ? { lastRowOnly: context.reduction.lastRowOnly } : {}), ...(context.reduction.topK ? { topK: context.reduction.topK } : {}), ...(context.reduction.sampled ? { sample: { temperature: 1, seed: 0, position: 0 } } : {}) }; // a sampled call is re-run as top-1 (rerun.ts)
    for (const host of spans) {
      if (out.length >= hosts) break;
      try {
        out.push(await rerunOnHost(this.exec, this.client.host.node, host, { model, start: context.start, end: context.end, maxLength: context.maxLength, chunks, want: context.want, reduction, timeoutMs: this.options.timeoutMs ?? 60_000 }));
      } catch (err) {
        this.options.logger?.debug({ peer: host.peerId, err: (err as Error).message }, 'arbiter re-run failed; trying another host');
      }
    }
    return out;
  }
}
