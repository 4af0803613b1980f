/**
 * What the gateway does with a condemning verdict (issue 21), wired in one place: a condemned supplier's payee is withheld from every payer of the gateway
 * (withholding-payer.ts) and a dispute is filed against it from the gateway's chain account (dispute-filer.ts),
 * itself announced on the feed (`dispute.filed`). Pending disputes of an earlier run are filed at start, and
 * the suppliers they accuse stay withheld.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { openChain, requireWallet, type ChainAccess, type ChainAccessOptions } from '../../contracts/chain.js';
import { actingAs } from '../../contracts/actions.js';
import type { EventFeed } from '../feed.js';
import { DisputeFiler } from './dispute-filer.js';
import { Withholding } from './withholding-payer.js';
import type { Verdict, VerdictEvidence } from './verifier.js';

export interface DisputeDeskOptions {
  /** The gateway's chain account (it posts the bonds): chain config, RPC and wallet. */
  chain: ChainAccessOptions;
  /** The gateway's data folder: disputes are kept in `<data>/disputes`. */
  dataDir: string;
}

export class DisputeDesk {
  readonly withholding = new Withholding();

  private constructor(private readonly chain: ChainAccess, readonly filer: DisputeFiler | undefined) {}

  /** Opens the chain account and files what an earlier run left pending (in the background). */
  static async open(options: DisputeDeskOptions, deps: { feed?: EventFeed; logger?: Logger; registry?: Registry }): Promise<DisputeDesk> {
    const chain = await openChain(options.chain);
    try {
      requireWallet(chain, 'filing disputes');
      const filer = chain.config.disputeManager ? new DisputeFiler({
        dir: path.join(options.dataDir, 'disputes'), account: await actingAs(chain.config, chain.wallet!), chainId: chain.config.chainId,
        logger: deps.logger, registry: deps.registry,
        onFiled: (d) => deps.feed?.publish({ event: 'dispute.filed', at: Date.now(), key: '', peerId: d.peerId, supplier: d.supplier, state: d.state, ...(d.disputeId !== undefined ? { disputeId: d.disputeId.toString() } : {}) }),
      }) : undefined;
      const desk = new DisputeDesk(chain, filer);
      if (filer) {
        for (const r of await filer.records()) desk.withholding.withhold(r.evidence.receipt.supplier);
        void filer.resume().catch((err: unknown) => deps.logger?.warn({ err: (err as Error).message }, 'could not file the disputes left pending'));
      }
      return desk;
    } catch (err) {
      chain.close();
      throw err;
    }
  }

  /** The verifier's onVerdict: withholds the condemned host's payments (supplier or checker) and files the dispute. */
  onVerdict(v: Verdict, e: VerdictEvidence): void {
    if (v.result === 'supplier-condemned') this.withholding.withhold(e.link.supplier.stakingAddress);
    else if (v.result === 'checker-condemned' && e.checkerHost) this.withholding.withhold(e.checkerHost.stakingAddress);
    else return;
    this.filer?.onVerdict(v, e);
  }

  async close(): Promise<void> {
    await this.filer?.idle();
    this.chain.close();
  }
}
