/** The gateway's payer: signs cumulative vouchers for the suppliers a session uses (scheduler StepPayer). */
export { VoucherPayer, PayerError, payerLedgerDir, type VoucherPayerOptions, type PayerErrorCode, type PayeeTotal } from './voucher-payer.js';
export { PayerLedger } from './ledger.js';
export type { StepPayer, Payee } from '../../scheduler/payment.js';
