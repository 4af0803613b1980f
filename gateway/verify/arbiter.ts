/**
 * The arbiter service (issue 21): the replaceable component behind DisputeManager's `arbiter` role, run as
 * its own process (`gridpipe arbiter`) with its own key, not the deployer's. For each open dispute it reads
 * the evidence the challenger filed on chain (DisputeEvidence: the input and digest streams, whose sha256 the
 * contract already checked against the supplier's signed receipt), re-runs the inputs itself on hosts of the
 * span other than the accused, and rules:
 *  - upheld when the re-runs agree with each other and the supplier's revealed digests differ from them in
 *    their numbers (overlap, mean or largest error, an exact output), beyond policy/verification's tolerance;
 *  - rejected otherwise: no evidence (a dispute opened with openDispute), a context naming another span than
 *    the receipt, streams that do not split as the context says, no host to re-run, re-runs that disagree,
 *    digests that agree within the tolerance, or a difference of structure (which outputs, which shapes: the
 *    context is not signed by the supplier, so a structural difference proves only a wrong context).
 * A rejected dispute pays the bond to the supplier; an upheld one slashes it (DisputeManager.resolveDispute).
 */
import type { Logger } from 'pino';
import { getBytes, toUtf8String, type EventLog } from 'ethers';
import type { DisputeManagerContract } from '../../contracts/bindings.js';
import { DisputeStatus } from '../../contracts/bindings.js';
import { sendAction } from '../../contracts/actions.js';
import type { TensorMap } from '../../net/exec/client.js';
import { ortToWire, wireToOrt } from '../../net/exec/tensors.js';
import { committedDigests, readDigestStream, readTensorStream } from '../../policy/receipt-commitment.js';
import { DEFAULT_DIGEST_TOLERANCE, firstMismatch, type DigestTolerance, type StepDigest, type TensorDigest } from '../../policy/verification.js';
import { isIncomparable } from './rerun.js';
import { spanDigest } from '../../contracts/eip712.js';
import type { DisputeContext } from './dispute-evidence.js';

/** Re-runs a dispute's chunks on hosts of the span other than the accused (GridRerunner on the grid). */
export interface DisputeRerunner {
  /** The fragment CIDs of the context's span (from its manifest). */
  spanCids(context: DisputeContext): Promise<string[]>;
  /** Each host's outputs of every chunk, from up to `hosts` hosts whose staking address is not `accused`. */
  rerun(context: DisputeContext, chunks: { position: number; inputs: TensorMap }[], accused: string, hosts: number): Promise<TensorMap[][]>;
}

/** A ruling and why. */
export interface Ruling {
  upheld: boolean;
  reason: string;
}

/** The evidence as the contract emitted it. */
export interface FiledEvidence {
  inputs: Uint8Array;
  revealedDigests: Uint8Array;
  context: Uint8Array;
}

export interface ArbiterOptions {
  /** DisputeManager connected to the arbiter's signer. */
  disputeManager: DisputeManagerContract;
  rerunner: DisputeRerunner;
  /** Hosts that re-run each dispute (default 2; all must agree). */
  referees?: number;
  tolerance?: DigestTolerance;
  logger?: Logger;
  /** Told each ruling. */
  onRuling?: (id: bigint, ruling: Ruling) => void;
}

/** Parses and bounds the context a challenger filed (it is not signed by the supplier). */
export function parseContext(bytes: Uint8Array): DisputeContext | undefined {
  try {
    const c = JSON.parse(toUtf8String(bytes)) as DisputeContext;
    const int = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
    if (typeof c.manifestCid !== 'string' || !int(c.start) || !int(c.end) || c.end <= c.start || !int(c.maxLength)) return undefined;
    if (!Array.isArray(c.chunks) || !c.chunks.length || !c.chunks.every((k) => int(k.position) && int(k.tensors) && int(k.outputs) && (k.tokens === undefined || (int(k.tokens) && k.tokens > 0)))) return undefined;
    if (!Array.isArray(c.want) || !c.want.every((w) => typeof w === 'string') || typeof c.reduction !== 'object' || c.reduction === null) return undefined;
    return c;
  } catch {
    return undefined;
  }
}

/** Splits a flat list into consecutive groups of the given sizes (undefined when the sizes do not add up). */
function split<T>(items: readonly T[], sizes: readonly number[]): T[][] | undefined {
  if (sizes.reduce((a, b) => a + b, 0) !== items.length) return undefined;
  const out: T[][] = [];
  let at = 0;
  for (const n of sizes) { out.push(items.slice(at, at + n)); at += n; }
  return out;
}

/** A chunk's committed digests as compared (see rerun.ts comparableDigest): sampled outputs out, sorted by name. */
function comparableCommitted(digests: readonly TensorDigest[], sampled: boolean): StepDigest {
  return digests.filter((d) => !isIncomparable(d.name, sampled)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The ruling on one dispute's evidence, given the re-runs (pure: the contract tests and the service share it).
 * `fragmentCid` is the receipt's; `spanCids` the fragment CIDs of the span the context names.
 */
export function rule(evidence: { revealedDigests: Uint8Array; context: DisputeContext }, fragmentCid: string, spanCids: readonly string[], reruns: readonly TensorMap[][], tolerance: DigestTolerance = DEFAULT_DIGEST_TOLERANCE): Ruling {
  const { context } = evidence;
  if (spanDigest(spanCids).toLowerCase() !== fragmentCid.toLowerCase()) return { upheld: false, reason: 'the context names another span than the receipt' };
  if (!reruns.length) return { upheld: false, reason: 'no host of the span re-ran the evidence' };
  const sampled = !!context.reduction.sampled;
  const rerunDigests = reruns.map((run) => run.map((outputs) => comparableCommitted(committedOf(outputs), sampled)));
  for (let i = 1; i < rerunDigests.length; i++) {
    if (firstMismatch(rerunDigests[0], rerunDigests[i], tolerance)) return { upheld: false, reason: 'the re-runs disagree with each other' };
  }
  let revealed: TensorDigest[];
  try {
    revealed = readDigestStream(evidence.revealedDigests);
  } catch {
    return { upheld: false, reason: 'the revealed digests do not decode' };
  }
  const perChunk = split(revealed, context.chunks.map((c) => c.outputs));
  if (!perChunk || perChunk.length !== rerunDigests[0].length) return { upheld: false, reason: 'the revealed digests do not split into the context\'s chunks' };
  const supplier = perChunk.map((d) => comparableCommitted(d, sampled));
  const differs = firstMismatch(supplier, rerunDigests[0], tolerance);
  if (!differs) return { upheld: false, reason: 'the supplier\'s outputs agree with the re-run within the tolerance' };
  if (differs.mismatch.reason === 'outputs' || differs.mismatch.reason === 'shape') return { upheld: false, reason: `the re-run differs in structure (${differs.mismatch.reason}), not in numbers: the context does not reproduce the call` };
  return { upheld: true, reason: `step ${differs.step} differs: ${differs.mismatch.reason}${differs.mismatch.measured !== undefined ? ` ${differs.mismatch.measured}` : ''}` };
}

/** The input stream of the evidence as each chunk's inputs (undefined when it does not split as the context says). */
export function chunkInputs(inputs: Uint8Array, context: DisputeContext): { position: number; inputs: TensorMap }[] | undefined {
  let tensors;
  try {
    tensors = readTensorStream(inputs);
  } catch {
    return undefined;
  }
  const groups = split(tensors, context.chunks.map((c) => c.tensors));
  if (!groups) return undefined;
  return groups.map((g, i) => ({ position: context.chunks[i].position, inputs: Object.fromEntries(g.map((t) => [t.name, wireToOrt({ ...t, dims: [...t.dims] })])) }));
}

/** The committed digests of outputs (tests: what a supplier would have revealed). */
export function committedOf(outputs: TensorMap): TensorDigest[] {
  return committedDigests(Object.entries(outputs).map(([name, t]) => ortToWire(name, t)));
}

export class Arbiter {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  /** Rulings made, by dispute id. */
  readonly rulings = new Map<bigint, Ruling>();

  constructor(private readonly options: ArbiterOptions) {}

  /** The evidence filed for dispute `id`, or undefined when it was opened without (openDispute). */
  async evidenceOf(id: bigint): Promise<FiledEvidence | undefined> {
    const dm = this.options.disputeManager;
    const logs = await dm.queryFilter(dm.filters.DisputeEvidence(id));
    const log = logs[0] as EventLog | undefined;
    if (!log) return undefined;
    const [, inputs, revealedDigests, , context] = log.args as unknown as [bigint, string, string, string, string];
    return { inputs: getBytes(inputs), revealedDigests: getBytes(revealedDigests), context: getBytes(context) };
  }

  /** Decides dispute `id` (without resolving it). */
  async decide(id: bigint): Promise<Ruling> {
    const dm = this.options.disputeManager;
    const d = await dm.getDispute(id);
    const evidence = await this.evidenceOf(id);
    if (!evidence) return { upheld: false, reason: 'no evidence was filed with the dispute' };
    const context = parseContext(evidence.context);
    if (!context) return { upheld: false, reason: 'the evidence\'s context does not parse' };
    const chunks = chunkInputs(evidence.inputs, context);
    if (!chunks) return { upheld: false, reason: 'the input stream does not split into the context\'s chunks' };
    const opened = await dm.queryFilter(dm.filters.DisputeOpened(id));
    const fragmentCid = (opened[0] as EventLog | undefined)?.args?.fragmentCid as string | undefined;
    if (!fragmentCid) return { upheld: false, reason: 'no DisputeOpened event for the dispute' };
    let spanCids: string[];
    let reruns: TensorMap[][];
    try {
      spanCids = await this.options.rerunner.spanCids(context);
      reruns = await this.options.rerunner.rerun(context, chunks, d.supplier, this.options.referees ?? 2);
    } catch (err) {
      return { upheld: false, reason: `the evidence could not be re-run: ${(err as Error).message}` };
    }
    return rule({ revealedDigests: evidence.revealedDigests, context }, fragmentCid, spanCids, reruns, this.options.tolerance);
  }

  /** Decides and resolves dispute `id` on chain. */
  async judge(id: bigint): Promise<Ruling> {
    const ruling = await this.decide(id);
    await sendAction('resolveDispute', () => this.options.disputeManager.resolveDispute(id, ruling.upheld));
    this.rulings.set(id, ruling);
    this.options.logger?.info({ dispute: id.toString(), ...ruling }, ruling.upheld ? 'dispute upheld: the supplier is slashed' : 'dispute rejected');
    this.options.onRuling?.(id, ruling);
    return ruling;
  }

  /** Judges every open dispute. */
  async sweep(): Promise<Map<bigint, Ruling>> {
    const dm = this.options.disputeManager;
    const done = new Map<bigint, Ruling>();
    const count = await dm.disputeCount();
    for (let id = 1n; id <= count; id++) {
      if ((await dm.getDispute(id)).status !== BigInt(DisputeStatus.Open)) continue;
      try {
        done.set(id, await this.judge(id));
      } catch (err) {
        this.options.logger?.warn({ dispute: id.toString(), err: (err as Error).message }, 'could not resolve a dispute; will try again');
      }
    }
    return done;
  }

  /** Sweeps every `everyMs` until stop(). */
  start(everyMs = 5000): void {
    const tick = (): void => {
      this.running = this.sweep().catch((err: unknown) => this.options.logger?.warn({ err: (err as Error).message }, 'arbiter sweep failed'))
        .finally(() => { if (this.timer) this.timer = setTimeout(tick, everyMs); });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearTimeout(t);
    await this.running;
  }
}
