/**
 * The baseline router: from the first fragment, pick a server uniformly at random among those whose span
 * holds the current fragment, ride it to its span's end, repeat. No estimates of any kind.
 */
import { NoRouteError, type Route, type RouteCall, type ServerEstimate } from '../routing.js';
import type { Rng } from './random.js';

export function randomRoute(servers: readonly ServerEstimate[], from: number, to: number, rng: Rng, exclude?: ReadonlySet<string>): Route {
  const calls: RouteCall[] = [];
  const candidates: ServerEstimate[] = [];
  for (let j = from; j < to;) {
    candidates.length = 0;
    for (const s of servers) if (s.start <= j && j < s.end && !exclude?.has(s.peerId)) candidates.push(s);
    if (candidates.length === 0) throw new NoRouteError(j);
    const s = candidates[Math.floor(rng() * candidates.length)];
    const end = Math.min(s.end, to);
    calls.push({ peerId: s.peerId, start: j, end });
    j = end;
  }
  return { stages: calls.map((c) => ({ calls: [c] })), estimatedMs: Number.NaN };
}
