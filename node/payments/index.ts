/**
 * A supplier's payments: the voucher gate, the durable voucher book,
 * redemption on chain, signed receipts.
 */
export { SupplierPayments, PAYMENT_DEFAULTS, summarize, type SupplierPaymentsOptions, type EarningsSummary } from './supplier-payments.js';
export { PaymentGate, type PaymentGateInit, type AdmittedStep } from './gate.js';
export { VoucherBook, VoucherBookError, voucherBookDir, type PayerAccount } from './voucher-book.js';
export { Redeemer, type RedeemerInit, type RedeemResult } from './redeemer.js';
export { ReceiptSigner, decodeSignedReceipt, tensorsDigest, type ReceiptInput } from './receipts.js';
export { spanDigest } from '../../contracts/eip712.js';
export { CachedBalances, KeyedMutex, type BalanceSource } from './balances.js';
export { PaymentMetrics } from './metrics.js';
export { CreditLimits, type CreditLimitsInit, type CreditRefusal } from './credit.js';
export { VerifiedVouchers, sameVoucher, voucherKey } from './verified-vouchers.js';
export { WithdrawalWatch, type WithdrawalWatchInit } from './withdrawal-watch.js';
