/**
 * Star or chain, per route, from measured round trips. In a star the client relays every tensor: each server
 * costs one round trip client↔server. In a chain (direct return) each server hands its outputs to the next
 * one and the last answers the client: the first one-way trip, one trip per junction and the last one-way trip
 * back. The client does not measure server↔server delays; it takes each junction as long as half the smaller
 * of its two servers' round trips to the client (servers of one route are usually no farther from each other
 * than from the client; by the triangle inequality a junction is at most the sum of both halves, where a
 * chain costs exactly what the star does). The chain wins when that estimate saves more than what forwarding
 * costs the servers (encoding one more frame: `minSavingMs`).
 */

/** `star`: the client relays; `chain`: direct return wherever the servers allow; `auto`: chosen per route. */
export type RouteMode = 'star' | 'chain' | 'auto';

export const ROUTE_MODES: readonly RouteMode[] = ['star', 'chain', 'auto'];

/** What forwarding costs a server per junction, ms: below this saving `auto` keeps the star (default 0.1). */
export const DEFAULT_MIN_CHAIN_SAVING_MS = 0.1;

/** Transit time of a route's step as a star: the sum of the servers' round trips to the client. */
export function starTransitMs(rttsMs: readonly number[]): number {
  return rttsMs.reduce((a, r) => a + r, 0);
}

/** Estimated transit time of a route's step as a chain (see the module comment). */
export function chainTransitMs(rttsMs: readonly number[]): number {
  if (!rttsMs.length) return 0;
  let ms = rttsMs[0] / 2 + rttsMs[rttsMs.length - 1] / 2;
  for (let n = 1; n < rttsMs.length; n++) ms += Math.min(rttsMs[n - 1], rttsMs[n]) / 2;
  return ms;
}

/** Whether a route whose servers are `rttsMs` away from the client (in order) runs as a chain under `mode`. */
export function prefersChain(mode: RouteMode, rttsMs: readonly number[], minSavingMs = DEFAULT_MIN_CHAIN_SAVING_MS): boolean {
  if (mode === 'star' || rttsMs.length < 2) return false;
  if (mode === 'chain') return true;
  return starTransitMs(rttsMs) - chainTransitMs(rttsMs) >= minSavingMs;
}
