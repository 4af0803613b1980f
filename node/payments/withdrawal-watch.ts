/**
 * Watches PaymentEscrow for `WithdrawalRequested` and redeems at once the vouchers this supplier holds of
 * the payer asking: after `withdrawalDelay` the payer can take its escrow out, and an unredeemed voucher
 * is then worth nothing (contracts/README.md promises suppliers redeem when they see the event). Polls the
 * chain's logs (eth_getLogs from the last block seen), which works on any RPC endpoint, filters or not.
 */
import { getAddress, type EventLog, type Log } from 'ethers';
import type { Logger } from 'pino';
import type { PaymentEscrowContract } from '../../contracts/bindings.js';
import type { Redeemer } from './redeemer.js';

export interface WithdrawalWatchInit {
  escrow: PaymentEscrowContract;
  /** Latest block number. */
  blockNumber: () => Promise<number>;
  redeemer: Redeemer;
  /** Time between two polls (ms). */
  intervalMs: number;
  logger?: Logger;
}

/** Most blocks asked for in one eth_getLogs (RPC providers cap the range). */
const MAX_BLOCK_RANGE = 5_000;
/** Polls a payer's redemption is retried after it failed, before waiting for the next request. */
const MAX_TRIES = 5;

export class WithdrawalWatch {
  private next?: number;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Payers that asked to withdraw and whose vouchers are not redeemed yet, with the tries left. */
  private readonly pending = new Map<string, number>();

  constructor(private readonly init: WithdrawalWatchInit) {}

  /**
   * Starts watching from the current block (what came before is redeemed at start-up anyway). With the
   * chain unreachable now, the first poll that reaches it starts from its head.
   */
  async start(): Promise<void> {
    try {
      this.next = await this.init.blockNumber();
    } catch (err) {
      this.init.logger?.warn({ err: (err as Error).message }, 'cannot read the chain\'s head; watching escrow withdrawals from the first block it answers with');
    }
    this.schedule();
  }

  /** No more polls; a redemption already started is the redeemer's to finish (Redeemer.idle). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One poll: new WithdrawalRequested events, then redemption of the payers concerned. */
  async poll(): Promise<void> {
    const head = await this.init.blockNumber();
    if (this.next === undefined) this.next = head;
    while (this.next <= head) {
      const to = Math.min(head, this.next + MAX_BLOCK_RANGE - 1);
      const logs = await this.init.escrow.queryFilter('WithdrawalRequested', this.next, to);
      for (const log of logs) {
        const payer = payerOf(log);
        if (payer && this.init.redeemer.holdsUnredeemed(payer)) {
          this.init.logger?.info({ payer, block: log.blockNumber }, 'payer asked to withdraw from escrow; redeeming its vouchers now');
          this.pending.set(payer, MAX_TRIES);
        }
      }
      this.next = to + 1;
    }
    for (const payer of this.pending.keys()) if (!this.init.redeemer.holdsUnredeemed(payer)) this.pending.delete(payer);
    if (this.pending.size === 0 || this.stopped) return; // after stop, the final redemption covers them
    const payers = new Set(this.pending.keys());
    await this.init.redeemer.redeemAll(payers);
    for (const payer of payers) {
      const left = (this.pending.get(payer) ?? 1) - 1;
      if (!this.init.redeemer.holdsUnredeemed(payer) || left <= 0) this.pending.delete(payer);
      else this.pending.set(payer, left);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.poll()
        .catch((err: unknown) => this.init.logger?.warn({ err: (err as Error).message }, 'watching escrow withdrawals failed; trying again'))
        .finally(() => this.schedule());
    }, this.init.intervalMs);
    this.timer.unref();
  }
}

function payerOf(log: EventLog | Log): string | undefined {
  if (!('args' in log)) return undefined;
  try {
    return getAddress(String(log.args[0]));
  } catch {
    return undefined;
  }
}
