/**
 * The paid grid the end-to-end dispute tests share (disputes, arbiter-paid, checker-dispute): anvil with the
 * contracts (wallet 9 the arbiter), a 4-layer GPT cut into 4 fragments, supplier processes that charge (staked
 * wallets) or serve free, a client and the gateway's paying account (wallet 4). Each test stakes and lays out
 * its own hosts; the first one started is everyone's bootstrap.
 */
import path from 'node:path';
import type { Wallet } from 'ethers';
import { GridClient, type GridClientOptions, type OpenModel } from '../../scheduler/client.js';
import type { GenerateOptions } from '../../scheduler/generate.js';
import { VoucherPayer } from '../../gateway/payer/index.js';
import type { Manifest } from '../../fragments/manifest.js';
import { startGridpipe, killAll, type RunningProcess } from '../helpers/process.js';
import { keystoreOf, PASSPHRASE, smallGpt, startPaymentChain, TOKEN, type PaymentChain } from '../payments/helpers.js';

/** Base units per GFLOP every paid host charges. */
export const PRICE = '1000000000000';
export const STAKE = 100n * TOKEN;
const PROMPT = [72, 101, 108, 108, 111, 32, 103, 114, 105, 100];
const MAX_TOKENS = 8;
/** Positions a session of the shared generation needs. */
export const SESSION_LENGTH = PROMPT.length + MAX_TOKENS;

export interface StartedSupplier { peerId: string; address: string; proc: RunningProcess }

export class DisputeGrid {
  bootstrap = '';
  private readonly procs: RunningProcess[] = [];
  private client?: GridClient;
  private payer?: VoucherPayer;

  private constructor(readonly dir: string, readonly chain: PaymentChain, readonly manifest: Manifest, readonly fragDir: string) {}

  /** Anvil and the contracts, the model's fragments, wallets 1–7 and 9 funded, wallet 9 the DisputeManager's arbiter. */
  static async open(dir: string): Promise<DisputeGrid> {
    const chain = await startPaymentChain(dir);
    const { manifest, fragDir } = await smallGpt(dir, 4);
    for (const w of [...chain.wallets.slice(1, 8), chain.wallets[9]]) await chain.mint(w.address, 1_000_000n);
    await (await chain.contracts.disputeManager!.setArbiter(chain.wallets[9].address)).wait();
    return new DisputeGrid(dir, chain, manifest, fragDir);
  }

  /** A supplier process hosting `fragments`: paid (PRICE) with `wallet`, free without; the first becomes the bootstrap. */
  async start(name: string, fragments: string, opts: { wallet?: Wallet; env?: NodeJS.ProcessEnv; extra?: string[] } = {}): Promise<StartedSupplier> {
    const args = ['supply', '--data', path.join(this.dir, name), '--listen', '/ip4/127.0.0.1/tcp/0', '--network', 'local', '--host', this.fragDir, '--fragments', fragments, '--json'];
    if (this.bootstrap) args.push('--bootstrap', this.bootstrap);
    if (opts.wallet) args.push('--wallet', await keystoreOf(opts.wallet, path.join(this.dir, `${name}.json`)), '--chain-config', this.chain.configPath, '--price-per-gflop', PRICE);
    const proc = startGridpipe([...args, ...(opts.extra ?? [])], { GRIDPIPE_PASSPHRASE: PASSPHRASE, ...opts.env });
    this.procs.push(proc);
    const ready = (await proc.ready) as { peerId: string; addresses: string[] };
    if (!this.bootstrap) this.bootstrap = ready.addresses[0];
    return { peerId: ready.peerId, address: ready.addresses[0], proc };
  }

  /** A client of the grid and the model opened on it. */
  async connect(options: Partial<GridClientOptions> = {}): Promise<{ client: GridClient; model: OpenModel }> {
    this.client = await GridClient.connect({ bootstrap: [this.bootstrap], network: 'local', discovery: { lookupTimeoutMs: 5000 }, ...options });
    return { client: this.client, model: await this.client.openModel(this.fragDir) };
  }

  /** The gateway's payer: wallet 4, with 10,000 tokens in escrow. */
  async openPayer(): Promise<VoucherPayer> {
    await this.chain.deposit(this.chain.wallets[4], 10_000n * TOKEN);
    this.payer = await VoucherPayer.open({ chain: { chainConfig: this.chain.config, wallet: this.chain.wallets[4] }, dataDir: path.join(this.dir, 'gateway') });
    return this.payer;
  }

  /** The same greedy generation every test runs. */
  options(): GenerateOptions {
    return { promptIds: PROMPT, maxTokens: MAX_TOKENS, kvCache: true, inputNames: this.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')) };
  }

  /** Stops the payer, the client, every supplier and the chain. */
  async close(): Promise<void> {
    await this.payer?.close();
    await this.client?.close();
    await Promise.all(this.procs.map((p) => p.stop('SIGTERM')));
    await killAll();
    await this.chain.close();
  }
}
