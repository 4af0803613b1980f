/**
 * Paying for expert and router calls of a cut mixture-of-experts layer, as a pipeline session pays its spans
 * (scheduler/session.ts, docs/payments.md): each call to a supplier that charges carries the payer's cumulative
 * voucher, priced with the same `stepCharge` the supplier charges with, over the one fragment called and the
 * tokens sent to it. So a token pays only for the experts it was routed to: an expert host is paid for
 * (its fragment's FLOPs per token) × (the tokens that chose it), and never for the tokens that went elsewhere.
 */
import type { Manifest } from '../fragments/manifest.js';
import type { WireVoucher } from '../net/exec/codec.js';
import { parseBaseUnits, stepCharge } from '../policy/pricing.js';
import type { HostedSpan } from './discovery.js';
import { isPaidSpan, PaymentNeededError, type StepPayer } from './payment.js';

/** What an expert call carries to a paid supplier, and what it pays. */
export interface ExpertCallPayment {
  charge: bigint;
  options: { voucher: WireVoucher; chunkTokens: number[] };
}

/**
 * The voucher for a call of `fragment` with `tokens` rows on `host`; undefined for a free supplier (no staking
 * address, or a price of 0 and no payer). A supplier that charges with no payer is a PaymentNeededError.
 */
export async function payExpertCall(manifest: Manifest, payer: StepPayer | undefined, host: HostedSpan, fragment: number, tokens: number): Promise<ExpertCallPayment | undefined> {
  if (!isPaidSpan(host)) return undefined;
  const price = parseBaseUnits(host.pricePerGflop, 'the supplier\'s price per GFLOP');
  if (!payer) {
    if (price === 0n) return undefined;
    throw new PaymentNeededError(host.peerId);
  }
  const chunkTokens = [tokens];
  const charge = stepCharge(manifest, price, { start: fragment, end: fragment + 1, chunkTokens });
  return { charge, options: { voucher: await payer.voucherFor(host, charge), chunkTokens } };
}

/** The voucher a session to a paid expert host opens with (the payer's current one to it; amount 0 at first contact). */
export async function expertOpenVoucher(payer: StepPayer | undefined, host: HostedSpan): Promise<WireVoucher | undefined> {
  return isPaidSpan(host) && payer ? payer.voucherFor(host, 0n) : undefined;
}

/** What an unpaid expert call is worth at the host's advertised price (0 when it names none or an unreadable one). */
export function expertListPrice(manifest: Manifest, host: HostedSpan, fragment: number, tokens: number): bigint {
  try {
    return stepCharge(manifest, parseBaseUnits(host.pricePerGflop), { start: fragment, end: fragment + 1, chunkTokens: [tokens] });
  } catch {
    return 0n;
  }
}
