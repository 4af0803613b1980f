/** Prometheus metrics of a supplier's payments, on the supplier's registry. */
import { Counter, Gauge, Registry } from 'prom-client';

export class PaymentMetrics {
  readonly vouchers: Counter<'outcome'>;
  readonly charged: Counter;
  readonly redeemed: Counter;
  readonly redemptions: Counter<'outcome'>;
  readonly unredeemed: Gauge;
  readonly credit: Gauge;
  readonly receipts: Counter;

  constructor(registry: Registry = new Registry()) {
    const registers = [registry];
    this.vouchers = new Counter({
      name: 'gridpipe_payment_vouchers_total',
      help: 'Vouchers seen on steps and session openings, by outcome (accepted, superseded, opened, missing, invalid, unfunded, over_credit).',
      labelNames: ['outcome'], registers,
    });
    this.charged = new Counter({ name: 'gridpipe_payment_charged_base_units_total', help: 'Work delivered to payers, token base units (float; exact values are in the voucher book).', registers });
    this.redeemed = new Counter({ name: 'gridpipe_payment_redeemed_base_units_total', help: 'Value redeemed on chain, token base units (float).', registers });
    this.redemptions = new Counter({ name: 'gridpipe_payment_redemptions_total', help: 'Redemption transactions, by outcome (ok, failed).', labelNames: ['outcome'], registers });
    this.credit = new Gauge({ name: 'gridpipe_payment_credit_base_units', help: 'Work delivered beyond the payers\' vouchers (credit held over all payers), token base units (float).', registers });
    this.receipts = new Counter({ name: 'gridpipe_payment_receipts_total', help: 'Receipts signed (one per session start and per new voucher, over the session\'s running hashes).', registers });
    this.unredeemed = new Gauge({ name: 'gridpipe_payment_unredeemed_base_units', help: 'Value of vouchers held and not redeemed yet, token base units (float).', registers });
  }
}
