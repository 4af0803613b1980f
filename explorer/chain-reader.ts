/**
 * The Chain view's data, read from the contracts' events: stakes, unstakes, slashes (StakeRegistry),
 * deposits, redemptions, withdrawals (PaymentEscrow), disputes opened and resolved (DisputeManager), from
 * the chain config's deployment block on, fetched incrementally (each refresh reads only the new blocks);
 * plus each supplier's stake and each payer's escrow balance read at the latest block. Read-only: a
 * provider, never a signer.
 */
import type { EventLog, JsonRpcProvider, Log } from 'ethers';
import { connectGrid, createProvider, type ChainConfig, type GridContracts } from '../contracts/bindings.js';
import type { ChainEventView, ChainView } from './types.js';

export interface ChainReaderOptions {
  /** Use this RPC URL instead of the config's. */
  rpcUrl?: string;
  /** Shortest time between two reads of the chain; pages asking in between get the last view (default 2 s). */
  minRefreshMs?: number;
  /** Events kept for the page, newest (default 500). */
  keepEvents?: number;
}

const asString = (v: unknown): string => String(v);

/** One decoded log as a view, or undefined for events the explorer does not show. */
function eventView(log: EventLog, at: number, disputeSupplier: Map<string, string>): ChainEventView | undefined {
  const a = log.args;
  const base = { block: log.blockNumber, at, tx: log.transactionHash };
  switch (log.fragment.name) {
    case 'Staked': return { ...base, kind: 'staked', account: a.supplier as string, amount: asString(a.amount), detail: `total ${asString(a.totalStaked)}` };
    case 'UnstakeRequested': return { ...base, kind: 'unstake', account: a.supplier as string, amount: asString(a.amount) };
    case 'Slashed': return { ...base, kind: 'slashed', account: a.supplier as string, amount: asString(a.slashed), detail: `to ${a.recipient as string}` };
    case 'Deposited': return { ...base, kind: 'deposited', account: a.payer as string, amount: asString(a.amount), detail: `balance ${asString(a.balance)}` };
    case 'Redeemed': return { ...base, kind: 'redeemed', account: a.payee as string, payer: a.payer as string, amount: asString(a.amount), detail: `cumulative ${asString(a.cumulativeAmount)}` };
    case 'WithdrawalRequested': return { ...base, kind: 'withdrawal', account: a.payer as string, amount: asString(a.amount), detail: 'requested' };
    case 'Withdrawn':
      // Both StakeRegistry (supplier, amount) and PaymentEscrow (payer, amount, requested) have one.
      return 'supplier' in a.toObject()
        ? { ...base, kind: 'stake-withdrawn', account: a.supplier as string, amount: asString(a.amount) }
        : { ...base, kind: 'withdrawal', account: a.payer as string, amount: asString(a.amount), detail: 'withdrawn' };
    case 'DisputeOpened':
      disputeSupplier.set(asString(a.id), a.supplier as string);
      return { ...base, kind: 'dispute-opened', account: a.supplier as string, amount: asString(a.bond), detail: `dispute ${asString(a.id)} by ${a.challenger as string}` };
    case 'DisputeResolved':
      return { ...base, kind: 'dispute-resolved', account: disputeSupplier.get(asString(a.id)) ?? '', amount: asString(a.slashed), detail: `dispute ${asString(a.id)} ${a.upheld ? 'upheld' : 'rejected'}` };
    default: return undefined;
  }
}

export class ChainReader {
  private readonly provider: JsonRpcProvider;
  private readonly contracts: GridContracts;
  private nextBlock: number;
  private readonly events: ChainEventView[] = [];
  private readonly blockTimes = new Map<number, number>();
  private readonly disputeSupplier = new Map<string, string>();
  private last?: ChainView;
  private inflight?: Promise<ChainView>;
  private readonly minRefreshMs: number;
  private readonly keepEvents: number;

  constructor(private readonly config: ChainConfig, options: ChainReaderOptions = {}) {
    this.provider = createProvider(options.rpcUrl ?? config.rpcUrl, config.chainId);
    this.contracts = connectGrid(config, this.provider);
    this.nextBlock = config.blockNumber;
    this.minRefreshMs = options.minRefreshMs ?? 2000;
    this.keepEvents = options.keepEvents ?? 500;
  }

  /** The stake of one staking address (base units), for the Network view. */
  async stakeOf(address: string): Promise<string> {
    return (await this.contracts.stakeRegistry.stakeOf(address)).staked.toString();
  }

  /** The Chain view (new blocks read at most every `minRefreshMs`). */
  view(): Promise<ChainView> {
    if (this.last && Date.now() - this.last.at < this.minRefreshMs) return Promise.resolve(this.last);
    this.inflight ??= this.read().finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  close(): void { this.provider.destroy(); }

  private async blockTime(block: number): Promise<number> {
    let t = this.blockTimes.get(block);
    if (t === undefined) {
      t = ((await this.provider.getBlock(block))?.timestamp ?? 0) * 1000;
      this.blockTimes.set(block, t);
    }
    return t;
  }

  private async read(): Promise<ChainView> {
    const latest = await this.provider.getBlockNumber();
    if (latest >= this.nextBlock) {
      const sources = [this.contracts.stakeRegistry, this.contracts.paymentEscrow, this.contracts.disputeManager].filter((c) => c !== undefined);
      const logs = (await Promise.all(sources.map((c) => c.queryFilter('*', this.nextBlock, latest)))).flat()
        .filter((l: Log): l is EventLog => 'fragment' in l)
        .sort((x, y) => x.blockNumber - y.blockNumber || x.index - y.index);
      for (const log of logs) {
        const view = eventView(log, await this.blockTime(log.blockNumber), this.disputeSupplier);
        if (view) this.events.push(view);
      }
      this.nextBlock = latest + 1;
    }
    const all = this.events;
    const suppliers = [...new Set(all.filter((e) => e.kind === 'staked').map((e) => e.account))];
    const payers = [...new Set(all.filter((e) => e.kind === 'deposited').map((e) => e.account))];
    const stakes = await Promise.all(suppliers.map(async (address) => {
      const s = await this.contracts.stakeRegistry.stakeOf(address);
      return { address, staked: s.staked.toString(), unbonding: s.unbonding.toString() };
    }));
    const escrow = await Promise.all(payers.map(async (payer) => ({ payer, balance: (await this.contracts.paymentEscrow.balanceOf(payer)).toString() })));
    const earnings = new Map<string, { at: number; total: string }[]>();
    const totals = new Map<string, bigint>();
    for (const e of all) {
      if (e.kind !== 'redeemed') continue;
      const total = (totals.get(e.account) ?? 0n) + BigInt(e.amount);
      totals.set(e.account, total);
      earnings.set(e.account, [...(earnings.get(e.account) ?? []), { at: e.at, total: total.toString() }]);
    }
    const { token, stakeRegistry, paymentEscrow, disputeManager } = this.config;
    this.last = {
      at: Date.now(), configured: true, chainId: this.config.chainId, block: latest,
      contracts: { token, stakeRegistry, paymentEscrow, ...(disputeManager ? { disputeManager } : {}) },
      events: all.slice(-this.keepEvents).reverse(), stakes, escrow,
      earnings: [...earnings].map(([payee, points]) => ({ payee, points })),
    };
    return this.last;
  }
}
