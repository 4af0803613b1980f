// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title StakeRegistry
/// @notice Suppliers stake an ERC-20 to be listed. Unstaking is two steps: `requestUnstake` moves
/// stake into unbonding (no longer counted for listing, still slashable) and restarts the unbonding
/// clock; `withdraw` pays out everything unbonding once `unbondingDelay` has passed and no dispute
/// holds the supplier's stake frozen. Only the configured slasher (the DisputeManager, or an
/// account) may slash, freeze and unfreeze.
///
/// Accounting rule (checked by the test suite): token.balanceOf(this) == sum over suppliers of
/// (staked + unbonding), for a token without transfer fees.
///
/// Owner powers (`setMinimumStake`, `setUnbondingDelay`, `setSlasher`) are trust in the owner: a new slasher can
/// slash any stake. Deploy with the owner a timelock (e.g. OpenZeppelin TimelockController, delay ≥ the
/// unbonding delay, so suppliers can leave before a change takes effect); docs/verification.md says so. What
/// the contract enforces itself: a slasher that is a contract with a `challengeWindow()` (DisputeManager) never
/// has a window longer than the unbonding delay, so stake cannot leave while a receipt is still disputable.
contract StakeRegistry is Ownable {
    using SafeERC20 for IERC20;

    struct Stake {
        uint256 staked; // counts toward listing, slashable
        uint256 unbonding; // requested out, slashable until withdrawn
        uint64 unbondingReadyAt; // when `unbonding` may be withdrawn
        uint32 freezes; // open disputes against the supplier; withdraw waits while > 0
    }

    IERC20 public immutable token;
    uint256 public minimumStake;
    uint64 public unbondingDelay;
    address public slasher;

    mapping(address supplier => Stake) internal _stakes;

    event Staked(address indexed supplier, uint256 amount, uint256 totalStaked);
    event UnstakeRequested(address indexed supplier, uint256 amount, uint256 totalUnbonding, uint64 readyAt);
    event Withdrawn(address indexed supplier, uint256 amount);
    event Slashed(address indexed supplier, address indexed recipient, uint256 requested, uint256 slashed);
    event Frozen(address indexed supplier, uint32 freezes);
    event Unfrozen(address indexed supplier, uint32 freezes);
    event MinimumStakeSet(uint256 minimumStake);
    event UnbondingDelaySet(uint64 unbondingDelay);
    event SlasherSet(address indexed previousSlasher, address indexed newSlasher);

    error ZeroAmount();
    error ZeroAddress();
    error InsufficientStake(uint256 requested, uint256 available);
    error NothingToWithdraw();
    error StillUnbonding(uint64 readyAt);
    error StakeFrozen(address supplier, uint32 freezes);
    error NotFrozen(address supplier);
    error NotSlasher(address caller);
    error ChallengeWindowTooLong(uint64 challengeWindow, uint64 unbondingDelay);

    modifier onlySlasher() {
        if (msg.sender != slasher) revert NotSlasher(msg.sender);
        _;
    }

    constructor(IERC20 token_, uint256 minimumStake_, uint64 unbondingDelay_, address slasher_, address owner_) Ownable(owner_) {
        if (address(token_) == address(0) || slasher_ == address(0)) revert ZeroAddress();
        token = token_;
        minimumStake = minimumStake_;
        unbondingDelay = unbondingDelay_;
        slasher = slasher_;
        emit MinimumStakeSet(minimumStake_);
        emit UnbondingDelaySet(unbondingDelay_);
        emit SlasherSet(address(0), slasher_);
    }

    // ---------------------------------------------------------------- supplier

    /// @notice Adds `amount` to the caller's stake (needs an ERC-20 allowance).
    function stake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[msg.sender];
        s.staked += amount;
        emit Staked(msg.sender, amount, s.staked);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Moves `amount` of the caller's stake into unbonding and restarts the unbonding clock
    /// for everything unbonding.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[msg.sender];
        if (amount > s.staked) revert InsufficientStake(amount, s.staked);
        s.staked -= amount;
        s.unbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnstakeRequested(msg.sender, amount, s.unbonding, readyAt);
    }

    /// @notice Pays the caller everything unbonding, once the delay has passed and no dispute is open.
    function withdraw() external returns (uint256 amount) {
        Stake storage s = _stakes[msg.sender];
        amount = s.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < s.unbondingReadyAt) revert StillUnbonding(s.unbondingReadyAt);
        if (s.freezes != 0) revert StakeFrozen(msg.sender, s.freezes);
        s.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- slasher

    /// @notice Takes up to `amount` of `supplier`'s stake (staked first, then unbonding) and sends it
    /// to `recipient`. Takes what there is when the stake is smaller; returns the amount taken.
    function slash(address supplier, uint256 amount, address recipient) external onlySlasher returns (uint256 slashed) {
        if (amount == 0) revert ZeroAmount();
        if (recipient == address(0)) revert ZeroAddress();
        Stake storage s = _stakes[supplier];
        uint256 fromStaked = amount < s.staked ? amount : s.staked;
        uint256 rest = amount - fromStaked;
        uint256 fromUnbonding = rest < s.unbonding ? rest : s.unbonding;
        s.staked -= fromStaked;
        s.unbonding -= fromUnbonding;
        slashed = fromStaked + fromUnbonding;
        emit Slashed(supplier, recipient, amount, slashed);
        if (slashed != 0) token.safeTransfer(recipient, slashed);
    }

    /// @notice Holds `supplier`'s withdrawals while a dispute is open (counted, nestable).
    function freeze(address supplier) external onlySlasher {
        uint32 f = ++_stakes[supplier].freezes;
        emit Frozen(supplier, f);
    }

    /// @notice Releases one `freeze`.
    function unfreeze(address supplier) external onlySlasher {
        Stake storage s = _stakes[supplier];
        if (s.freezes == 0) revert NotFrozen(supplier);
        uint32 f = --s.freezes;
        emit Unfrozen(supplier, f);
    }

    // ---------------------------------------------------------------- owner

    function setMinimumStake(uint256 minimumStake_) external onlyOwner {
        minimumStake = minimumStake_;
        emit MinimumStakeSet(minimumStake_);
    }

    /// @notice Applies to unstake requests made from now on.
    function setUnbondingDelay(uint64 unbondingDelay_) external onlyOwner {
        _checkWindow(slasher, unbondingDelay_);
        unbondingDelay = unbondingDelay_;
        emit UnbondingDelaySet(unbondingDelay_);
    }

    function setSlasher(address slasher_) external onlyOwner {
        if (slasher_ == address(0)) revert ZeroAddress();
        _checkWindow(slasher_, unbondingDelay);
        emit SlasherSet(slasher, slasher_);
        slasher = slasher_;
    }

    /// @dev Reverts when `slasher_` is a contract whose `challengeWindow()` exceeds `delay` (an account, or a
    /// contract without that function, has no window to check).
    function _checkWindow(address slasher_, uint64 delay) internal view {
        if (slasher_.code.length == 0) return;
        (bool ok, bytes memory data) = slasher_.staticcall(abi.encodeWithSignature("challengeWindow()"));
        if (!ok || data.length < 32) return;
        uint64 window = abi.decode(data, (uint64));
        if (window > delay) revert ChallengeWindowTooLong(window, delay);
    }

    // ---------------------------------------------------------------- views

    /// @notice Listed: active stake of at least `minimumStake` (and more than zero).
    function isListed(address supplier) external view returns (bool) {
        uint256 staked = _stakes[supplier].staked;
        return staked != 0 && staked >= minimumStake;
    }

    function stakeOf(address supplier)
        external
        view
        returns (uint256 staked, uint256 unbonding, uint64 unbondingReadyAt, uint32 freezes)
    {
        Stake storage s = _stakes[supplier];
        return (s.staked, s.unbonding, s.unbondingReadyAt, s.freezes);
    }
}
