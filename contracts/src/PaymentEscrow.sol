// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title PaymentEscrow
/// @notice Developers (payers) deposit an ERC-20; the gateway signs EIP-712 cumulative vouchers per
/// supplier (payee): one signature covers all work so far. A payee redeems its latest voucher
/// whenever it likes and is paid `cumulativeAmount - redeemed[payer][payee]`.
///
/// Withdrawal rule ("redemptions come first"): `requestWithdrawal(amount)` reserves nothing. During
/// `withdrawalDelay`, and after it until `withdraw()` is called, payees keep redeeming against the
/// payer's whole balance. `withdraw()` then pays min(requested, balance left). So a withdrawal can
/// never take funds that a redemption claims before the withdrawal executes; a payee that sees
/// `WithdrawalRequested` has at least `withdrawalDelay` to redeem. A new request replaces the
/// previous one and restarts the clock; `requestWithdrawal(0)` cancels.
///
/// Accounting rule (checked by the test suite): token.balanceOf(this) == sum of payer balances,
/// for a token without transfer fees.
contract PaymentEscrow is EIP712 {
    using SafeERC20 for IERC20;

    struct Voucher {
        address payer;
        address payee;
        uint256 cumulativeAmount; // everything the payer owes the payee so far, not an increment
        uint256 deadline; // unix seconds; redeemable while block.timestamp <= deadline
    }

    struct Account {
        uint256 balance;
        uint256 withdrawalAmount; // requested, not reserved
        uint64 withdrawableAt;
    }

    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address payer,address payee,uint256 cumulativeAmount,uint256 deadline)");

    IERC20 public immutable token;
    uint64 public immutable withdrawalDelay;

    mapping(address payer => Account) internal _accounts;
    /// @notice Cumulative amount already paid from `payer` to `payee`.
    mapping(address payer => mapping(address payee => uint256)) public redeemed;

    event Deposited(address indexed payer, address indexed from, uint256 amount, uint256 balance);
    event Redeemed(address indexed payer, address indexed payee, uint256 amount, uint256 cumulativeAmount);
    event WithdrawalRequested(address indexed payer, uint256 amount, uint64 withdrawableAt);
    event Withdrawn(address indexed payer, uint256 amount, uint256 requested);

    error ZeroAmount();
    error ZeroAddress();
    error LengthMismatch(uint256 vouchers, uint256 signatures);
    error VoucherExpired(uint256 deadline);
    error VoucherAlreadyRedeemed(uint256 cumulativeAmount, uint256 alreadyRedeemed);
    error InvalidSignature();
    error InsufficientEscrow(uint256 required, uint256 available);
    error NoWithdrawalRequested();
    error WithdrawalNotReady(uint64 withdrawableAt);

    constructor(IERC20 token_, uint64 withdrawalDelay_) EIP712("GridpipePaymentEscrow", "1") {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
        withdrawalDelay = withdrawalDelay_;
    }

    // ---------------------------------------------------------------- payer

    /// @notice Adds `amount` to the caller's escrow (needs an ERC-20 allowance).
    function deposit(uint256 amount) external {
        _deposit(msg.sender, amount);
    }

    /// @notice Adds `amount`, paid by the caller, to `payer`'s escrow.
    function depositFor(address payer, uint256 amount) external {
        if (payer == address(0)) revert ZeroAddress();
        _deposit(payer, amount);
    }

    /// @notice Announces a withdrawal of `amount` (at most the balance); 0 cancels. Replaces any
    /// earlier request and restarts the delay.
    function requestWithdrawal(uint256 amount) external {
        Account storage a = _accounts[msg.sender];
        if (amount > a.balance) revert InsufficientEscrow(amount, a.balance);
        uint64 readyAt = amount == 0 ? 0 : uint64(block.timestamp) + withdrawalDelay;
        a.withdrawalAmount = amount;
        a.withdrawableAt = readyAt;
        emit WithdrawalRequested(msg.sender, amount, readyAt);
    }

    /// @notice Pays the caller min(requested, balance) once the delay has passed.
    function withdraw() external returns (uint256 amount) {
        Account storage a = _accounts[msg.sender];
        uint256 requested = a.withdrawalAmount;
        if (requested == 0) revert NoWithdrawalRequested();
        if (block.timestamp < a.withdrawableAt) revert WithdrawalNotReady(a.withdrawableAt);
        amount = requested < a.balance ? requested : a.balance;
        a.balance -= amount;
        a.withdrawalAmount = 0;
        a.withdrawableAt = 0;
        emit Withdrawn(msg.sender, amount, requested);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- payee (anyone may submit)

    /// @notice Pays `voucher.payee` what the voucher adds to earlier redemptions. Anyone may submit
    /// it (a relayer, the payee); the money only ever goes to the payee.
    function redeem(Voucher calldata voucher, bytes calldata signature) external returns (uint256 amount) {
        amount = _settle(voucher, signature);
        token.safeTransfer(voucher.payee, amount);
    }

    /// @notice Redeems several vouchers atomically (any failure reverts all). Consecutive vouchers to
    /// the same payee are paid with one transfer, so sort by payee.
    function redeemBatch(Voucher[] calldata vouchers, bytes[] calldata signatures) external returns (uint256 total) {
        uint256 n = vouchers.length;
        if (n != signatures.length) revert LengthMismatch(n, signatures.length);
        address payee;
        uint256 owed;
        for (uint256 i = 0; i < n; ++i) {
            Voucher calldata v = vouchers[i];
            if (v.payee != payee) {
                if (owed != 0) token.safeTransfer(payee, owed);
                payee = v.payee;
                owed = 0;
            }
            uint256 amount = _settle(v, signatures[i]);
            owed += amount;
            total += amount;
        }
        if (owed != 0) token.safeTransfer(payee, owed);
    }

    // ---------------------------------------------------------------- views

    function balanceOf(address payer) external view returns (uint256) {
        return _accounts[payer].balance;
    }

    function withdrawalRequest(address payer) external view returns (uint256 amount, uint64 withdrawableAt) {
        Account storage a = _accounts[payer];
        return (a.withdrawalAmount, a.withdrawableAt);
    }

    /// @notice The EIP-712 digest a payer signs for `voucher` (bound to this chain and contract).
    function hashVoucher(Voucher calldata voucher) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(VOUCHER_TYPEHASH, voucher.payer, voucher.payee, voucher.cumulativeAmount, voucher.deadline)
            )
        );
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internal

    function _deposit(address payer, uint256 amount) internal {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[payer];
        a.balance += amount;
        emit Deposited(payer, msg.sender, amount, a.balance);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Checks a voucher and books it (state only); returns what it pays. The caller transfers.
    function _settle(Voucher calldata v, bytes calldata signature) internal returns (uint256 amount) {
        if (block.timestamp > v.deadline) revert VoucherExpired(v.deadline);
        if (v.payee == address(0)) revert ZeroAddress();
        uint256 already = redeemed[v.payer][v.payee];
        if (v.cumulativeAmount <= already) revert VoucherAlreadyRedeemed(v.cumulativeAmount, already);
        if (!SignatureChecker.isValidSignatureNowCalldata(v.payer, hashVoucher(v), signature)) {
            revert InvalidSignature();
        }
        amount = v.cumulativeAmount - already;
        Account storage a = _accounts[v.payer];
        if (amount > a.balance) revert InsufficientEscrow(amount, a.balance);
        a.balance -= amount;
        redeemed[v.payer][v.payee] = v.cumulativeAmount;
        emit Redeemed(v.payer, v.payee, amount, v.cumulativeAmount);
    }
}
