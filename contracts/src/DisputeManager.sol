// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {StakeRegistry} from "./StakeRegistry.sol";

/// @title DisputeManager
/// @notice Slashing on evidence. A supplier signs an EIP-712 receipt for every step it serves
/// {fragmentCid, inputHash, outputHash, sessionId, step, issuedAt}. Anyone holding such a receipt and
/// a different output for the same input (from a verifying re-run) may open a dispute within
/// `challengeWindow` of `issuedAt`, posting `disputeBond`. Opening freezes the supplier's withdrawals
/// in the StakeRegistry (this contract must be its slasher), so the stake cannot leave while the
/// dispute is open. The arbiter re-runs the step off-chain and resolves:
///  - upheld: the supplier is slashed `slashAmount` (or what it has); `challengerRewardBps` of it and
///    the bond go to the challenger, the rest to the treasury (so a supplier challenging itself
///    still loses the treasury's share). A receipt can be upheld once.
///  - rejected: the bond goes to the supplier; the receipt may be disputed again (with a new bond).
/// One open dispute per receipt at a time.
///
/// Accounting rule (checked by the test suite): token.balanceOf(this) == sum of open disputes' bonds.
///
/// Bounds (issue 21): `challengeWindow ≤ stakeRegistry.unbondingDelay()` in every setter (and the registry
/// refuses a shorter delay or a slasher with a longer window); a receipt's issuedAt at most MAX_ISSUED_AHEAD
/// in the future. The arbiter is a replaceable role (`setArbiter`): docs/verification.md describes it.
contract DisputeManager is EIP712, Ownable {
    using SafeERC20 for IERC20;

    struct Receipt {
        address supplier;
        bytes32 fragmentCid; // sha256 digest of the fragment's bytes (the CID's multihash digest)
        bytes32 inputHash;
        bytes32 outputHash;
        bytes32 sessionId;
        uint64 step;
        uint64 issuedAt; // unix seconds; the challenge window runs from here
    }

    enum Status {
        None,
        Open,
        Upheld,
        Rejected
    }

    struct Dispute {
        address supplier;
        uint64 openedAt;
        Status status;
        address challenger;
        bytes32 receiptDigest;
        bytes32 outputHash;
        bytes32 contradictingOutputHash;
        uint256 bond;
    }

    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(address supplier,bytes32 fragmentCid,bytes32 inputHash,bytes32 outputHash,bytes32 sessionId,uint64 step,uint64 issuedAt)"
    );
    uint16 public constant BPS = 10_000;
    /// @notice How far in the future a receipt's issuedAt may lie (clock skew): a supplier cannot stretch the
    /// window past the unbonding delay. The verifier bounds it off chain too (gateway/verify/).
    uint64 public constant MAX_ISSUED_AHEAD = 300;

    StakeRegistry public immutable stakeRegistry;
    IERC20 public immutable token;

    address public arbiter;
    address public treasury;
    uint64 public challengeWindow;
    uint256 public slashAmount;
    uint256 public disputeBond;
    uint16 public challengerRewardBps;

    uint256 public disputeCount;
    mapping(uint256 id => Dispute) internal _disputes;
    /// @notice The open or upheld dispute of a receipt digest; 0 when none.
    mapping(bytes32 receiptDigest => uint256 id) public disputeOfReceipt;
    /// @notice keccak256(abi.encode(inputs, revealedDigests, rerunDigests, context)) of a dispute filed with
    /// evidence (fileDispute); 0 for one opened without (openDispute), which the arbiter service rejects.
    mapping(uint256 id => bytes32) public evidenceHash;

    event DisputeOpened(
        uint256 indexed id,
        address indexed supplier,
        address indexed challenger,
        bytes32 receiptDigest,
        bytes32 fragmentCid,
        bytes32 sessionId,
        uint64 step,
        bytes32 outputHash,
        bytes32 contradictingOutputHash,
        uint256 bond
    );
    /// @notice The evidence of a dispute filed with fileDispute: the supplier's input and digest streams (their
    /// sha256 checked against the signed receipt here), the challenger's re-run digests and what to re-run
    /// (context: JSON {manifestCid, start, end}). The arbiter re-runs from this alone.
    event DisputeEvidence(uint256 indexed id, bytes inputs, bytes revealedDigests, bytes rerunDigests, bytes context);
    event DisputeResolved(uint256 indexed id, bool upheld, uint256 slashed, uint256 challengerReward);
    event ArbiterSet(address indexed arbiter);
    event ParametersSet(address treasury, uint64 challengeWindow, uint256 slashAmount, uint256 disputeBond, uint16 challengerRewardBps);

    error ZeroAddress();
    error InvalidBps(uint16 bps);
    error NotArbiter(address caller);
    error NotContradicting();
    error ChallengeWindowClosed(uint256 closedAt);
    error InvalidSignature();
    error ReceiptAlreadyDisputed(uint256 id);
    error DisputeNotOpen(uint256 id);
    error ChallengeWindowTooLong(uint64 challengeWindow, uint64 unbondingDelay);
    error ReceiptFromTheFuture(uint64 issuedAt, uint256 latest);
    error EvidenceMismatch(bytes32 expected, bytes32 revealed);

    constructor(
        StakeRegistry stakeRegistry_,
        address arbiter_,
        address treasury_,
        uint64 challengeWindow_,
        uint256 slashAmount_,
        uint256 disputeBond_,
        uint16 challengerRewardBps_,
        address owner_
    ) EIP712("GridpipeDisputeManager", "1") Ownable(owner_) {
        if (address(stakeRegistry_) == address(0) || arbiter_ == address(0)) revert ZeroAddress();
        stakeRegistry = stakeRegistry_;
        token = stakeRegistry_.token();
        arbiter = arbiter_;
        emit ArbiterSet(arbiter_);
        _setParameters(treasury_, challengeWindow_, slashAmount_, disputeBond_, challengerRewardBps_);
    }

    /// @notice Opens a dispute against `receipt` (signed by `receipt.supplier`), claiming the right
    /// output is `contradictingOutputHash`. Takes `disputeBond` from the caller (needs an allowance).
    /// Without evidence on chain the arbiter has nothing to re-run: prefer fileDispute.
    function openDispute(Receipt calldata receipt, bytes calldata supplierSignature, bytes32 contradictingOutputHash)
        external
        returns (uint256 id)
    {
        return _open(receipt, supplierSignature, contradictingOutputHash);
    }

    /// @notice Opens a dispute with its evidence (issue 21): `inputs` must hash (sha256) to the receipt's
    /// inputHash and `revealedDigests` to its outputHash, so the evidence is what the supplier signed, not
    /// what the challenger says it signed; `rerunDigests` is the challenger's re-run of the same inputs (its
    /// sha256 the contradicting hash). The arbiter re-runs the inputs and compares within the tolerance.
    function fileDispute(
        Receipt calldata receipt,
        bytes calldata supplierSignature,
        bytes calldata inputs,
        bytes calldata revealedDigests,
        bytes calldata rerunDigests,
        bytes calldata context
    ) external returns (uint256 id) {
        bytes32 inputsHash = sha256(inputs);
        if (inputsHash != receipt.inputHash) revert EvidenceMismatch(receipt.inputHash, inputsHash);
        bytes32 revealedHash = sha256(revealedDigests);
        if (revealedHash != receipt.outputHash) revert EvidenceMismatch(receipt.outputHash, revealedHash);
        id = _open(receipt, supplierSignature, sha256(rerunDigests));
        evidenceHash[id] = keccak256(abi.encode(inputs, revealedDigests, rerunDigests, context));
        emit DisputeEvidence(id, inputs, revealedDigests, rerunDigests, context);
    }

    function _open(Receipt calldata receipt, bytes calldata supplierSignature, bytes32 contradictingOutputHash)
        internal
        returns (uint256 id)
    {
        if (contradictingOutputHash == receipt.outputHash) revert NotContradicting();
        if (receipt.issuedAt > block.timestamp + MAX_ISSUED_AHEAD) revert ReceiptFromTheFuture(receipt.issuedAt, block.timestamp + MAX_ISSUED_AHEAD);
        uint256 closesAt = uint256(receipt.issuedAt) + challengeWindow;
        if (block.timestamp > closesAt) revert ChallengeWindowClosed(closesAt);
        bytes32 digest = hashReceipt(receipt);
        if (!SignatureChecker.isValidSignatureNowCalldata(receipt.supplier, digest, supplierSignature)) {
            revert InvalidSignature();
        }
        uint256 existing = disputeOfReceipt[digest];
        if (existing != 0) revert ReceiptAlreadyDisputed(existing);

        id = ++disputeCount;
        uint256 bond = disputeBond;
        _disputes[id] = Dispute({
            supplier: receipt.supplier,
            openedAt: uint64(block.timestamp),
            status: Status.Open,
            challenger: msg.sender,
            receiptDigest: digest,
            outputHash: receipt.outputHash,
            contradictingOutputHash: contradictingOutputHash,
            bond: bond
        });
        disputeOfReceipt[digest] = id;
        _emitOpened(id, receipt, digest, contradictingOutputHash, bond);
        stakeRegistry.freeze(receipt.supplier);
        if (bond != 0) token.safeTransferFrom(msg.sender, address(this), bond);
    }

    /// @notice Resolves an open dispute. Only the arbiter.
    function resolveDispute(uint256 id, bool upheld) external returns (uint256 slashed, uint256 reward) {
        if (msg.sender != arbiter) revert NotArbiter(msg.sender);
        Dispute storage d = _disputes[id];
        if (d.status != Status.Open) revert DisputeNotOpen(id);
        address supplier = d.supplier;
        address challenger = d.challenger;
        uint256 bond = d.bond;
        stakeRegistry.unfreeze(supplier);
        if (upheld) {
            d.status = Status.Upheld;
            if (slashAmount != 0) slashed = stakeRegistry.slash(supplier, slashAmount, address(this));
            reward = (slashed * challengerRewardBps) / BPS;
            emit DisputeResolved(id, true, slashed, reward);
            if (reward + bond != 0) token.safeTransfer(challenger, reward + bond);
            if (slashed - reward != 0) token.safeTransfer(treasury, slashed - reward);
        } else {
            d.status = Status.Rejected;
            delete disputeOfReceipt[d.receiptDigest];
            emit DisputeResolved(id, false, 0, 0);
            if (bond != 0) token.safeTransfer(supplier, bond);
        }
    }

    // ---------------------------------------------------------------- owner

    function setArbiter(address arbiter_) external onlyOwner {
        if (arbiter_ == address(0)) revert ZeroAddress();
        arbiter = arbiter_;
        emit ArbiterSet(arbiter_);
    }

    /// @notice Applies to disputes opened from now on (an open dispute keeps its bond).
    function setParameters(
        address treasury_,
        uint64 challengeWindow_,
        uint256 slashAmount_,
        uint256 disputeBond_,
        uint16 challengerRewardBps_
    ) external onlyOwner {
        _setParameters(treasury_, challengeWindow_, slashAmount_, disputeBond_, challengerRewardBps_);
    }

    // ---------------------------------------------------------------- views

    function getDispute(uint256 id) external view returns (Dispute memory) {
        return _disputes[id];
    }

    /// @notice The EIP-712 digest a supplier signs for `receipt` (bound to this chain and contract).
    function hashReceipt(Receipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RECEIPT_TYPEHASH, r.supplier, r.fragmentCid, r.inputHash, r.outputHash, r.sessionId, r.step, r.issuedAt
                )
            )
        );
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _emitOpened(uint256 id, Receipt calldata r, bytes32 digest, bytes32 contradicting, uint256 bond) internal {
        emit DisputeOpened(
            id, r.supplier, msg.sender, digest, r.fragmentCid, r.sessionId, r.step, r.outputHash, contradicting, bond
        );
    }

    function _setParameters(
        address treasury_,
        uint64 challengeWindow_,
        uint256 slashAmount_,
        uint256 disputeBond_,
        uint16 challengerRewardBps_
    ) internal {
        if (treasury_ == address(0)) revert ZeroAddress();
        if (challengerRewardBps_ > BPS) revert InvalidBps(challengerRewardBps_);
        // A receipt must stay disputable only while the stake it puts at risk cannot have left.
        uint64 delay = stakeRegistry.unbondingDelay();
        if (challengeWindow_ > delay) revert ChallengeWindowTooLong(challengeWindow_, delay);
        treasury = treasury_;
        challengeWindow = challengeWindow_;
        slashAmount = slashAmount_;
        disputeBond = disputeBond_;
        challengerRewardBps = challengerRewardBps_;
        emit ParametersSet(treasury_, challengeWindow_, slashAmount_, disputeBond_, challengerRewardBps_);
    }
}
