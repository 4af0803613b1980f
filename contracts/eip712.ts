/**
 * EIP-712 typed data of the payment vouchers and the supplier receipts, exactly as the contracts
 * hash them (PaymentEscrow.hashVoucher, DisputeManager.hashReceipt): the domain binds the chain id
 * and the contract's address, so a signature is worthless on another chain or contract.
 *
 * Also the stake binding (checked off chain, by every reader of capacity records): the staking key's
 * statement that it operates one libp2p peer id until a time, over the StakeRegistry's domain, so a peer
 * cannot name another supplier's staking address as its own.
 */
import { concat, dataLength, getAddress, keccak256, recoverAddress, Signature, toUtf8Bytes, TypedDataEncoder, isHexString, type Signer, type TypedDataDomain, type TypedDataField } from 'ethers';
import { CID } from 'multiformats/cid';

/** A cumulative payment voucher: everything `payer` owes `payee` so far (not an increment). */
export interface Voucher {
  payer: string;
  payee: string;
  /** Token base units, cumulative over the pair's lifetime. */
  cumulativeAmount: bigint;
  /** Unix seconds; redeemable while the block's timestamp is ≤ deadline. */
  deadline: bigint;
}

/**
 * A voucher with its payer's signature (0x hex, 65 bytes): what the gateway's ledger records, the supplier's
 * voucher book keeps and the escrow redeems. On the exec wire it travels as net/exec's WireVoucher (amount as
 * decimal text, signature as bytes), converted by net/exec/voucher-wire.ts and nowhere else.
 */
export interface SignedVoucher extends Voucher {
  signature: string;
}

/** A signed voucher as stored in JSON (the payer's ledger, the supplier's voucher book): its bigints as decimal text. */
export type SignedVoucherJson = Omit<SignedVoucher, 'cumulativeAmount' | 'deadline'> & { cumulativeAmount: string; deadline: string };

/** A signed voucher in its JSON form (the one converter; see signedVoucherFromJson). */
export function signedVoucherToJson(v: SignedVoucher): SignedVoucherJson {
  return { payer: v.payer, payee: v.payee, cumulativeAmount: v.cumulativeAmount.toString(), deadline: v.deadline.toString(), signature: v.signature };
}

/** A signed voucher back from its JSON form (throws on amounts that are not integers). */
export function signedVoucherFromJson(j: SignedVoucherJson): SignedVoucher {
  return { payer: j.payer, payee: j.payee, cumulativeAmount: BigInt(j.cumulativeAmount), deadline: BigInt(j.deadline), signature: j.signature };
}

/** A supplier's signed statement of what it computed for one step of a pipeline session. */
export interface Receipt {
  supplier: string;
  /** bytes32 (0x + 64 hex): the fragment's sha256 digest; see `cidToBytes32`. */
  fragmentCid: string;
  inputHash: string;
  outputHash: string;
  sessionId: string;
  step: bigint;
  /** Unix seconds; the challenge window runs from here. Verifiers must reject receipts not dated near now. */
  issuedAt: bigint;
}

/** Anything that signs typed data (ethers Wallet, HDNodeWallet, JsonRpcSigner). */
export type TypedDataSigner = Pick<Signer, 'signTypedData'>;

/** "operator runs peer `peerId` until `until`": the staking key binds a peer id to its stake. */
export interface StakeBinding {
  /** The staking address (the signer). */
  operator: string;
  /** The libp2p peer id (base58/CID text) the stake stands behind. */
  peerId: string;
  /** Unix seconds; the binding holds while now < until. */
  until: bigint;
}

export const STAKE_DOMAIN_NAME = 'GridpipeStakeRegistry';
export const ESCROW_DOMAIN_NAME = 'GridpipePaymentEscrow';
export const DISPUTE_DOMAIN_NAME = 'GridpipeDisputeManager';
export const DOMAIN_VERSION = '1';

export const VOUCHER_TYPES: Record<string, TypedDataField[]> = {
  Voucher: [
    { name: 'payer', type: 'address' },
    { name: 'payee', type: 'address' },
    { name: 'cumulativeAmount', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
};

export const RECEIPT_TYPES: Record<string, TypedDataField[]> = {
  Receipt: [
    { name: 'supplier', type: 'address' },
    { name: 'fragmentCid', type: 'bytes32' },
    { name: 'inputHash', type: 'bytes32' },
    { name: 'outputHash', type: 'bytes32' },
    { name: 'sessionId', type: 'bytes32' },
    { name: 'step', type: 'uint64' },
    { name: 'issuedAt', type: 'uint64' },
  ],
};

export const STAKE_BINDING_TYPES: Record<string, TypedDataField[]> = {
  StakeBinding: [
    { name: 'operator', type: 'address' },
    { name: 'peerId', type: 'string' },
    { name: 'until', type: 'uint64' },
  ],
};

/** The domain of stake bindings: the StakeRegistry on its chain. */
export function stakeDomain(stakeRegistryAddress: string, chainId: number | bigint): TypedDataDomain {
  return { name: STAKE_DOMAIN_NAME, version: DOMAIN_VERSION, chainId, verifyingContract: getAddress(stakeRegistryAddress) };
}

/** The digest the staking key signs for a binding. */
export function stakeBindingDigest(stakeRegistryAddress: string, chainId: number | bigint, binding: StakeBinding): string {
  return TypedDataEncoder.hash(stakeDomain(stakeRegistryAddress, chainId), STAKE_BINDING_TYPES, stakeBindingValue(binding));
}

/** Signs a binding as its operator (the signer must be `binding.operator` for readers to accept it). */
export function signStakeBinding(wallet: TypedDataSigner, stakeRegistryAddress: string, chainId: number | bigint, binding: StakeBinding): Promise<string> {
  return wallet.signTypedData(stakeDomain(stakeRegistryAddress, chainId), STAKE_BINDING_TYPES, stakeBindingValue(binding));
}

/** The address that signed `binding` (null when the signature is malformed or non-canonical). */
export function recoverStakeBindingSigner(stakeRegistryAddress: string, chainId: number | bigint, binding: StakeBinding, signature: string): string | null {
  return recoverDigest(stakeBindingDigest(stakeRegistryAddress, chainId, binding), signature);
}

export function escrowDomain(escrowAddress: string, chainId: number | bigint): TypedDataDomain {
  return { name: ESCROW_DOMAIN_NAME, version: DOMAIN_VERSION, chainId, verifyingContract: getAddress(escrowAddress) };
}

export function disputeDomain(disputeManagerAddress: string, chainId: number | bigint): TypedDataDomain {
  return { name: DISPUTE_DOMAIN_NAME, version: DOMAIN_VERSION, chainId, verifyingContract: getAddress(disputeManagerAddress) };
}

/** The digest the payer signs (equals PaymentEscrow.hashVoucher on that chain and contract). */
export function voucherDigest(escrowAddress: string, chainId: number | bigint, voucher: Voucher): string {
  return TypedDataEncoder.hash(escrowDomain(escrowAddress, chainId), VOUCHER_TYPES, voucherValue(voucher));
}

/** Signs a voucher as its payer (the signer must be `voucher.payer` for the escrow to accept it). */
export function signVoucher(wallet: TypedDataSigner, escrowAddress: string, chainId: number | bigint, voucher: Voucher): Promise<string> {
  return wallet.signTypedData(escrowDomain(escrowAddress, chainId), VOUCHER_TYPES, voucherValue(voucher));
}

/** The address that signed `voucher` (null when the signature is malformed or non-canonical). */
export function recoverVoucherSigner(escrowAddress: string, chainId: number | bigint, voucher: Voucher, signature: string): string | null {
  return recoverDigest(voucherDigest(escrowAddress, chainId, voucher), signature);
}

/**
 * Whether `signature` is `voucher.payer`'s (EOA) signature of `voucher` for that escrow and chain,
 * with the checks the contract makes on the signature (canonical low-s). Does not look at the
 * deadline or balances; contract-wallet (ERC-1271) payers can only be checked on chain.
 */
export function verifyVoucher(escrowAddress: string, chainId: number | bigint, voucher: Voucher, signature: string): boolean {
  const signer = recoverVoucherSigner(escrowAddress, chainId, voucher, signature);
  return signer !== null && signer === getAddress(voucher.payer);
}

/** The digest a supplier signs (equals DisputeManager.hashReceipt on that chain and contract). */
export function receiptDigest(disputeManagerAddress: string, chainId: number | bigint, receipt: Receipt): string {
  return TypedDataEncoder.hash(disputeDomain(disputeManagerAddress, chainId), RECEIPT_TYPES, receiptValue(receipt));
}

/** Signs a receipt as its supplier. */
export function signReceipt(wallet: TypedDataSigner, disputeManagerAddress: string, chainId: number | bigint, receipt: Receipt): Promise<string> {
  return wallet.signTypedData(disputeDomain(disputeManagerAddress, chainId), RECEIPT_TYPES, receiptValue(receipt));
}

/** Whether `signature` is `receipt.supplier`'s (EOA) signature of `receipt`. */
export function verifyReceipt(disputeManagerAddress: string, chainId: number | bigint, receipt: Receipt, signature: string): boolean {
  const signer = recoverDigest(receiptDigest(disputeManagerAddress, chainId, receipt), signature);
  return signer !== null && signer === getAddress(receipt.supplier);
}

/**
 * A bytes32 for a fragment CID: the sha256 digest inside a CIDv1 (what `fragments/cid.ts` makes), a
 * 0x-prefixed 32-byte hex as is, else keccak256 of the text.
 */
export function cidToBytes32(cid: string): string {
  if (isHexString(cid, 32)) return cid.toLowerCase();
  try {
    const parsed = CID.parse(cid);
    if (parsed.multihash.code === 0x12 && parsed.multihash.digest.length === 32) {
      return `0x${Buffer.from(parsed.multihash.digest).toString('hex')}`;
    }
  } catch {
    // not a CID: hash the text
  }
  return keccak256(toUtf8Bytes(cid));
}

/** The bytes32 naming a span of fragments in a receipt: the fragment's own for one, keccak256 of them all for several. */
export function spanDigest(cids: readonly string[]): string {
  if (cids.length === 1) return cidToBytes32(cids[0]);
  return keccak256(concat(cids.map((c) => cidToBytes32(c))));
}

const SECP256K1_HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;

function recoverDigest(digest: string, signature: string): string | null {
  try {
    if (dataLength(signature) !== 65) return null; // the contracts take 65-byte signatures only
    const sig = Signature.from(signature);
    if (BigInt(sig.s) > SECP256K1_HALF_N) return null;
    return getAddress(recoverAddress(digest, sig));
  } catch {
    return null;
  }
}

function voucherValue(v: Voucher): Record<string, unknown> {
  return { payer: getAddress(v.payer), payee: getAddress(v.payee), cumulativeAmount: v.cumulativeAmount, deadline: v.deadline };
}

function stakeBindingValue(b: StakeBinding): Record<string, unknown> {
  return { operator: getAddress(b.operator), peerId: b.peerId, until: b.until };
}

function receiptValue(r: Receipt): Record<string, unknown> {
  return {
    supplier: getAddress(r.supplier),
    fragmentCid: r.fragmentCid,
    inputHash: r.inputHash,
    outputHash: r.outputHash,
    sessionId: r.sessionId,
    step: r.step,
    issuedAt: r.issuedAt,
  };
}
