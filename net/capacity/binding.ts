/**
 * Stake bindings: the staking key's EIP-712 statement "address X operates peer P until T" (typed data in
 * contracts/eip712.ts, domain = the StakeRegistry on its chain), carried in a capacity record. Without
 * it any peer could name a staked supplier's address and be counted, routed to and paid as staked.
 *
 * Checking one costs a keccak and a secp256k1 recovery (about a millisecond in JS); records are read
 * again and again with the same binding (it is signed once per binding period, not per record), so
 * recoveries are cached by digest and signature. Nothing here runs per step.
 *
 * A binding travels as a JSON file between the key holder and a supplier that runs without the key
 * (`gridpipe stake bind` writes one, `gridpipe supply --stake-binding FILE` reads it).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { getAddress, hexlify, isAddress, getBytes } from 'ethers';
import { recoverStakeBindingSigner, signStakeBinding, type TypedDataSigner } from '../../contracts/eip712.js';
import { GridpipeError } from '../../errors/base.js';

/** A stake binding as carried in a record (proto StakeBinding); the operator is the record's staking address. */
export interface RecordStakeBinding {
  chainId: number;
  /** The StakeRegistry's address (EIP-712 verifying contract). */
  stakeRegistry: string;
  /** Unix seconds; valid while now < until. */
  until: number;
  /** 65 bytes. */
  signature: Uint8Array;
}

/** A binding with the peer and operator it names: what a binding file holds. */
export interface StakeBindingStatement extends RecordStakeBinding {
  peerId: string;
  operator: string;
}

/** Why a binding is not accepted (metrics label and log text). */
export type UnboundReason = 'NO_ADDRESS' | 'MISSING' | 'MALFORMED' | 'WRONG_SIGNER' | 'EXPIRED' | 'UNCHECKED';

export class StakeBindingError extends GridpipeError<UnboundReason | 'BAD_FILE' | 'WRONG_PEER'> {
  override readonly name = 'StakeBindingError';
  constructor(code: UnboundReason | 'BAD_FILE' | 'WRONG_PEER', message: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, badInput: code === 'BAD_FILE' || code === 'WRONG_PEER' });
  }
}

/** Most verdicts remembered. */
const CACHE_LIMIT = 4096;
/** Signature verdicts by everything signed: whether the signer is the operator (expiry is checked apart). */
const verdicts = new Map<string, boolean>();
const HEX_ADDRESS = /^0x[0-9a-fA-F]{40}$/;

function signedByOperator(statement: StakeBindingStatement): boolean {
  const signature = hexlify(statement.signature);
  // Keyed by what is signed, not its digest: hashing the typed data costs most of a millisecond too.
  const key = `${statement.chainId}:${statement.stakeRegistry.toLowerCase()}:${statement.operator.toLowerCase()}:${statement.peerId}:${statement.until}:${signature}`;
  const hit = verdicts.get(key);
  if (hit !== undefined) return hit;
  let ok: boolean;
  try {
    const signer = recoverStakeBindingSigner(statement.stakeRegistry, statement.chainId, { operator: statement.operator, peerId: statement.peerId, until: BigInt(statement.until) }, signature);
    ok = signer !== null && signer === getAddress(statement.operator);
  } catch {
    ok = false; // a bad checksum or registry address: not a valid binding
  }
  if (verdicts.size >= CACHE_LIMIT) verdicts.delete(verdicts.keys().next().value as string);
  verdicts.set(key, ok);
  return ok;
}

/**
 * Whether the statement is the operator's valid signature that it operates `peerId` at `nowMs`; throws
 * nothing, answers the reason when not.
 */
export function verifyStakeBinding(statement: StakeBindingStatement, nowMs: number = Date.now()): { bound: boolean; reason?: UnboundReason } {
  if (!HEX_ADDRESS.test(statement.operator)) return { bound: false, reason: 'NO_ADDRESS' };
  if (!HEX_ADDRESS.test(statement.stakeRegistry) || !Number.isSafeInteger(statement.chainId) || statement.chainId <= 0
    || !Number.isSafeInteger(statement.until) || statement.signature.byteLength !== 65 || !statement.peerId) {
    return { bound: false, reason: 'MALFORMED' };
  }
  if (!signedByOperator(statement)) return { bound: false, reason: 'WRONG_SIGNER' };
  if (statement.until * 1000 <= nowMs) return { bound: false, reason: 'EXPIRED' };
  return { bound: true };
}

/** Checks a record's binding against its own peer id and staking address. */
export function checkStakeBinding(record: { peerId: string; stakingAddress: string; stakeBinding?: RecordStakeBinding }, nowMs: number): { bound: boolean; reason?: UnboundReason } {
  if (!record.stakingAddress) return { bound: false, reason: 'NO_ADDRESS' };
  if (!record.stakeBinding) return { bound: false, reason: 'MISSING' };
  return verifyStakeBinding({ ...record.stakeBinding, peerId: record.peerId, operator: record.stakingAddress }, nowMs);
}

/** Signs "the wallet's address operates `peerId` until now + validForSeconds" over the StakeRegistry's domain. */
export async function makeStakeBinding(
  wallet: TypedDataSigner & { getAddress(): Promise<string> },
  peerId: string,
  domain: { chainId: number; stakeRegistry: string },
  validForSeconds: number,
  nowMs: number = Date.now(),
): Promise<StakeBindingStatement> {
  if (!(validForSeconds > 0)) throw new RangeError(`a binding must be valid for a positive time, got ${validForSeconds} s`);
  const operator = getAddress(await wallet.getAddress());
  const until = Math.floor(nowMs / 1000) + Math.floor(validForSeconds);
  const signature = await signStakeBinding(wallet, domain.stakeRegistry, domain.chainId, { operator, peerId, until: BigInt(until) });
  return { peerId, operator, chainId: domain.chainId, stakeRegistry: getAddress(domain.stakeRegistry), until, signature: getBytes(signature) };
}

/** The binding part a record carries. */
export function recordBinding(statement: StakeBindingStatement): RecordStakeBinding {
  return { chainId: statement.chainId, stakeRegistry: statement.stakeRegistry, until: statement.until, signature: statement.signature };
}

/** Writes a binding file (JSON, no secrets: it is a signature anyone may see). */
export async function writeStakeBindingFile(file: string, statement: StakeBindingStatement): Promise<void> {
  const json = { version: 1, peerId: statement.peerId, operator: statement.operator, chainId: statement.chainId, stakeRegistry: statement.stakeRegistry, until: statement.until, signature: hexlify(statement.signature) };
  await writeFile(file, `${JSON.stringify(json, null, 2)}\n`);
}

/** Reads a binding file; BAD_FILE naming what is wrong with it. Does not verify the signature. */
export async function readStakeBindingFile(file: string): Promise<StakeBindingStatement> {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new StakeBindingError('BAD_FILE', `stake binding ${file}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (what: string): never => { throw new StakeBindingError('BAD_FILE', `stake binding ${file}: ${what}`); };
  if (typeof o !== 'object' || o === null) bad('not a JSON object');
  if (typeof o.peerId !== 'string' || !o.peerId) bad('no peerId');
  if (typeof o.operator !== 'string' || !isAddress(o.operator)) bad('operator is not an EVM address');
  if (typeof o.stakeRegistry !== 'string' || !isAddress(o.stakeRegistry)) bad('stakeRegistry is not an EVM address');
  if (!Number.isSafeInteger(o.chainId) || (o.chainId as number) <= 0) bad('chainId is not a positive integer');
  if (!Number.isSafeInteger(o.until)) bad('until is not unix seconds');
  let signature: Uint8Array = new Uint8Array(0);
  try {
    signature = getBytes(o.signature as string);
  } catch {
    bad('signature is not hex');
  }
  if (signature.byteLength !== 65) bad(`signature is ${signature.byteLength} bytes, not 65`);
  return {
    peerId: o.peerId as string, operator: getAddress(o.operator as string), chainId: o.chainId as number,
    stakeRegistry: getAddress(o.stakeRegistry as string), until: o.until as number, signature,
  };
}

export interface StakeBinderOptions {
  /** This supplier's peer id. */
  peerId: string;
  /** The staking key: the binding is signed here, at start and again before it runs out. */
  wallet?: TypedDataSigner & { getAddress(): Promise<string> };
  /** The StakeRegistry's chain and address (with `wallet`). */
  domain?: { chainId: number; stakeRegistry: string };
  /** A binding the key holder made (`gridpipe stake bind`), for a supplier without the key. */
  statement?: StakeBindingStatement;
  /** The staking address the supplier was told to name (must be the binding's operator). */
  stakingAddress?: string;
  /** Life of a self-signed binding (default 7 days); re-signed when less than half is left. */
  validForSeconds?: number;
  /** Called once each time the binding stops holding (expired, mismatched): one line for the operator. */
  onUnbound?: (message: string) => void;
}

/** The supplier's side: which binding (if any) its records carry now. */
export class StakeBinder {
  private statement?: StakeBindingStatement;
  private warned?: string;
  private readonly validFor: number;

  constructor(private readonly options: StakeBinderOptions) {
    this.validFor = options.validForSeconds ?? 7 * 24 * 3600;
    this.statement = options.statement;
  }

  /** Why the binding given at start does not hold (undefined when it does, or when there is none to check). */
  check(nowMs: number = Date.now()): string | undefined {
    const s = this.statement;
    if (!s || this.options.wallet) return undefined;
    if (s.peerId !== this.options.peerId) return `the stake binding names peer ${s.peerId}, not this supplier (${this.options.peerId}); running as unstaked`;
    if (this.options.stakingAddress && getAddress(this.options.stakingAddress) !== s.operator) {
      return `the stake binding is signed for ${s.operator}, not --staking-address ${this.options.stakingAddress}; running as unstaked`;
    }
    const v = verifyStakeBinding(s, nowMs);
    if (!v.bound) return v.reason === 'EXPIRED'
      ? `the stake binding of ${s.operator} expired at ${new Date(s.until * 1000).toISOString()}; running as unstaked (make a new one with \`gridpipe stake bind\`)`
      : `the stake binding is not ${s.operator}'s valid signature (${v.reason}); running as unstaked`;
    return undefined;
  }

  /** `check()` at start: the problem (if any) is reported by the caller, and `onUnbound` only for a later, different one. */
  checkAtStart(nowMs: number = Date.now()): string | undefined {
    this.warned = this.check(nowMs);
    return this.warned;
  }

  /** The staking address and binding the next record carries: both absent when unbound. */
  async current(nowMs: number = Date.now()): Promise<{ stakingAddress: string; stakeBinding?: RecordStakeBinding }> {
    const { wallet, domain } = this.options;
    if (wallet && domain) {
      const s = this.statement;
      if (!s || (s.until * 1000 - nowMs) < (this.validFor * 1000) / 2) {
        this.statement = await makeStakeBinding(wallet, this.options.peerId, domain, this.validFor, nowMs);
      }
      return { stakingAddress: this.statement!.operator, stakeBinding: recordBinding(this.statement!) };
    }
    const problem = this.check(nowMs);
    if (problem || !this.statement) {
      if (problem && problem !== this.warned) this.options.onUnbound?.(problem);
      this.warned = problem;
      // Still name the address (readers drop it): the operator sees what it meant to be.
      return { stakingAddress: this.options.stakingAddress ?? '' };
    }
    return { stakingAddress: this.statement.operator, stakeBinding: recordBinding(this.statement) };
  }
}
