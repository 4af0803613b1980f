/**
 * The gateway files the dispute itself (issue 21): on a `supplier-condemned` verdict it builds the evidence
 * (dispute-evidence.ts), writes it to disk, and only then calls DisputeManager.fileDispute with the bond from
 * its own chain account, so a gateway that stops between the verdict and the transaction files it at its next
 * start (`resume`), the way the payer's vouchers survive a restart. One record per receipt, by its EIP-712
 * digest: a receipt already disputed on chain (filed before a crash, or by someone else) is not filed twice.
 */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { toUtf8Bytes } from 'ethers';
import { approveIfShort, ChainActionError, sendAction, type ActingAccount } from '../../contracts/actions.js';
import { receiptDigest } from '../../contracts/eip712.js';
import type { DisputeManagerContract } from '../../contracts/bindings.js';
import type { DigestTolerance } from '../../policy/verification.js';
import { evidenceFromJson, evidenceOfVerdict, evidenceToJson, type DisputeEvidence, type DisputeEvidenceJson } from './dispute-evidence.js';
import type { Verdict, VerdictEvidence } from './verifier.js';

/** A persisted dispute: pending until its transaction is mined. */
export interface DisputeRecord {
  digest: string;
  state: 'pending' | 'filed' | 'failed';
  evidence: DisputeEvidenceJson;
  disputeId?: string;
  error?: string;
}

/** What the filer tells the feed and metrics. */
export interface FiledDispute {
  digest: string;
  peerId: string;
  supplier: string;
  state: DisputeRecord['state'];
  disputeId?: bigint;
  error?: string;
}

export interface DisputeFilerOptions {
  /** Where pending evidence is kept (`<gateway data>/disputes`). */
  dir: string;
  /** The gateway's chain account (its contracts connected to its signer). */
  account: ActingAccount;
  chainId: number;
  tolerance?: DigestTolerance;
  logger?: Logger;
  registry?: Registry;
  /** Told each dispute's outcome (filed or failed). */
  onFiled?: (d: FiledDispute) => void;
}

export class DisputeFiler {
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;
  private readonly counter?: Counter;
  readonly filed: FiledDispute[] = [];

  constructor(private readonly options: DisputeFilerOptions) {
    if (options.registry) {
      this.counter = new Counter({ name: 'gridpipe_disputes_total', help: 'Disputes the gateway filed on chain against condemned suppliers, by outcome.', labelNames: ['outcome'], registers: [options.registry] });
    }
  }

  private get dm(): DisputeManagerContract {
    const dm = this.options.account.contracts.disputeManager;
    if (!dm) throw new Error('the chain config names no DisputeManager');
    return dm;
  }

  /**
   * The verifier's onVerdict: files a dispute against the condemned host (queued, off the request's path): the
   * supplier of the checked link, or a checker whose re-run the supplier and the referee both contradicted.
   */
  onVerdict(verdict: Verdict, evidence: VerdictEvidence): void {
    if (verdict.result !== 'supplier-condemned' && verdict.result !== 'checker-condemned') return;
    let built: DisputeEvidence;
    try {
      built = evidenceOfVerdict(verdict, evidence, this.options.tolerance);
    } catch (err) {
      const peer = verdict.result === 'supplier-condemned' ? verdict.supplier : verdict.checker;
      this.options.logger?.warn({ peer, err: (err as Error).message }, `condemned ${verdict.result === 'supplier-condemned' ? 'supplier' : 'checker'}, but no dispute can be filed`);
      this.counter?.inc({ outcome: 'unfileable' });
      return;
    }
    this.fileEvidence(built);
  }

  /** Persists `evidence`, then files it (queued; `idle()` waits for it). */
  fileEvidence(evidence: DisputeEvidence): void {
    this.enqueue(async () => {
      const record: DisputeRecord = { digest: receiptDigest(await this.dm.getAddress(), this.options.chainId, evidence.receipt), state: 'pending', evidence: evidenceToJson(evidence) };
      await this.save(record);
      await this.file(record);
    });
  }

  /** Files every dispute left pending by an earlier run. */
  async resume(): Promise<void> {
    await mkdir(this.options.dir, { recursive: true });
    for (const name of (await readdir(this.options.dir)).filter((n) => n.endsWith('.json')).sort()) {
      const record = JSON.parse(await readFile(path.join(this.options.dir, name), 'utf8')) as DisputeRecord;
      if (record.state === 'pending') this.enqueue(() => this.file(record));
    }
    await this.idle();
  }

  /** Every persisted dispute. */
  async records(): Promise<DisputeRecord[]> {
    await mkdir(this.options.dir, { recursive: true });
    const names = (await readdir(this.options.dir)).filter((n) => n.endsWith('.json')).sort();
    return Promise.all(names.map(async (n) => JSON.parse(await readFile(path.join(this.options.dir, n), 'utf8')) as DisputeRecord));
  }

  /** Resolves when every queued filing has finished. */
  async idle(): Promise<void> {
    while (this.pending) await this.queue;
  }

  private enqueue(job: () => Promise<void>): void {
    this.pending++;
    this.queue = this.queue.then(job).catch((err: unknown) => {
      this.options.logger?.warn({ err: (err as Error).message }, 'filing a dispute failed');
    }).finally(() => { this.pending--; });
  }

  /** Sends fileDispute (after the bond's approval) unless the receipt is disputed on chain already. */
  private async file(record: DisputeRecord): Promise<void> {
    const e = evidenceFromJson(record.evidence);
    const dm = this.dm;
    const existing = await dm.disputeOfReceipt(record.digest);
    if (existing !== 0n) {
      record.state = 'filed';
      record.disputeId = existing.toString();
    } else {
      try {
        const bond = await dm.disputeBond();
        if (bond > 0n) await approveIfShort(this.options.account, await dm.getAddress(), bond);
        const tx = await sendAction('fileDispute', () => dm.fileDispute(e.receipt, e.signature, e.inputs, e.revealedDigests, e.rerunDigests, toUtf8Bytes(JSON.stringify(e.context))));
        record.state = 'filed';
        record.disputeId = (await dm.disputeOfReceipt(record.digest)).toString();
        this.options.logger?.warn({ peer: e.peerId, supplier: e.receipt.supplier, dispute: record.disputeId, tx: tx.hash }, 'dispute filed against a condemned supplier');
      } catch (err) {
        // A revert is final (window closed, already disputed...); anything else (chain unreachable) stays pending.
        const final = err instanceof ChainActionError && err.code === 'REVERTED';
        record.state = final ? 'failed' : 'pending';
        record.error = (err as Error).message;
        this.options.logger?.warn({ peer: e.peerId, supplier: e.receipt.supplier, err: record.error, retried: !final }, 'the dispute could not be filed');
      }
    }
    await this.save(record);
    this.counter?.inc({ outcome: record.state });
    const filed: FiledDispute = {
      digest: record.digest, peerId: e.peerId, supplier: e.receipt.supplier, state: record.state,
      ...(record.disputeId ? { disputeId: BigInt(record.disputeId) } : {}), ...(record.error ? { error: record.error } : {}),
    };
    this.filed.push(filed);
    this.options.onFiled?.(filed);
  }

  /** Writes a record atomically (a crash leaves the old one or the new one, never half). */
  private async save(record: DisputeRecord): Promise<void> {
    await mkdir(this.options.dir, { recursive: true });
    const file = path.join(this.options.dir, `${record.digest}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(record));
    await rename(`${file}.tmp`, file);
  }
}
