/**
 * Verification verdicts on the gateway's public feed (issue 21): each check's outcome as a `verify.verdict`
 * event (/v1/feed), so the explorer and anyone watching see who was checked, by whom, and who was condemned.
 * Peer ids and spans only: no key, no tensor.
 */
import type { EventFeed, VerifyVerdict } from '../feed.js';
import type { Verdict } from './verifier.js';

/** The feed event of a verdict. */
export function verdictEvent(v: Verdict, at = Date.now()): VerifyVerdict {
  return {
    event: 'verify.verdict', at, key: '', result: v.result, supplier: v.supplier, span: v.span, steps: v.steps,
    ...(v.checker ? { checker: v.checker } : {}), ...(v.referee ? { referee: v.referee } : {}), ...(v.mismatch ? { mismatch: v.mismatch.detail.reason } : {}),
  };
}

/** Publishes every verdict but 'unchecked' (a link nobody could check says nothing about its supplier). */
export function publishVerdict(feed: EventFeed, v: Verdict): void {
  if (v.result !== 'unchecked') feed.publish(verdictEvent(v));
}
