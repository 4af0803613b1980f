/**
 * Where a chain token's time goes in the WAN bench (issue 19): the hub's forwarders log every chunk they
 * carry (test/helpers/netns-hub.ts, GRIDPIPE_LINK_TRACE), and a chain token's critical path is a sequence of
 * those chunks: client → S1 → S2 → … → Sn → client, then the client's next step. Between two consecutive steps
 * the time splits exactly into the links' configured delay, the emulator's own lateness (its timers fire late
 * on a loaded machine), each server's time (from its step's delivery to its forward leaving) and the client's
 * time (from the last reply's delivery to its next step leaving). So the bench can say which of these the gap
 * to the latency bound is, instead of guessing.
 */
import { readFile } from 'node:fs/promises';

/** One line of the hub's trace. */
interface TraceLine {
  link: number;
  from: string;
  direction: 'up' | 'down';
  bytes: number;
  arrivedAt: number;
  dueAt: number;
  deliveredAt: number;
}

/** A chunk with its endpoints named: 'C' (host 0, the client) or 'S<i>' (host i). */
interface Hop { a: string; b: string; bytes: number; arrivedAt: number; dueAt: number; deliveredAt: number }

/** One chain step's critical path, ms. */
export interface ChainStepBreakdown {
  /** From the client's step leaving to its next step leaving. */
  stepMs: number;
  /** The links' configured delay (and rate), summed over the path. */
  linkMs: number;
  /** The emulator's timers firing late, summed over the path. */
  emulatorLateMs: number;
  /** Each server's time from its step's delivery to its output leaving, in route order. */
  serverMs: number[];
  /** The client's time from the last server's reply to its next step. */
  clientMs: number;
}

/** Messages below this are not a step's tensors (yamux window updates, pings, stream opens). */
const STEP_MESSAGE_MIN_BYTES = 150;

/**
 * Reads the hub's trace and splits every chain step of `runs` whose path could be followed. `hosts[0]` is the
 * client's address, `hosts[i]` server Si's, and the hub's link number l belongs to host l + 1.
 */
export async function chainBreakdown(traceFile: string, hosts: string[], stages: number, runs: { from: number; to: number }[]): Promise<ChainStepBreakdown[]> {
  const text = await readFile(traceFile, 'utf8');
  const name = (ip: string): string => (hosts.indexOf(ip) === 0 ? 'C' : `S${hosts.indexOf(ip)}`);
  const hops: Hop[] = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as TraceLine).map((t) => {
    const dialer = name(t.from);
    const listener = `S${t.link + 1}`;
    const [a, b] = t.direction === 'up' ? [dialer, listener] : [listener, dialer];
    return { a, b, bytes: t.bytes, arrivedAt: t.arrivedAt, dueAt: t.dueAt, deliveredAt: t.deliveredAt };
  }).filter((h) => h.bytes >= STEP_MESSAGE_MIN_BYTES).sort((x, y) => x.arrivedAt - y.arrivedAt);
  const path = ['C', ...Array.from({ length: stages }, (_, i) => `S${i + 1}`), 'C'];
  const out: ChainStepBreakdown[] = [];
  for (const run of runs) {
    const starts = hops.filter((h) => h.a === 'C' && h.b === 'S1' && h.arrivedAt >= run.from && h.arrivedAt <= run.to);
    for (let k = 0; k + 1 < starts.length; k++) {
      const seq = [starts[k]];
      for (let p = 1; p + 1 < path.length; p++) {
        const prev = seq[seq.length - 1];
        const next = hops.find((h) => h.a === path[p] && h.b === path[p + 1] && h.arrivedAt >= prev.deliveredAt - 0.5 && h.arrivedAt < starts[k + 1].arrivedAt);
        if (!next) break;
        seq.push(next);
      }
      if (seq.length !== path.length - 1) continue; // a star step (the prefill) or a path the trace cannot follow
      const stepMs = starts[k + 1].arrivedAt - starts[k].arrivedAt;
      const serverMs = seq.slice(1).map((h, i) => h.arrivedAt - seq[i].deliveredAt);
      const clientMs = starts[k + 1].arrivedAt - seq[seq.length - 1].deliveredAt;
      if (clientMs < 0 || serverMs.some((s) => s < 0)) continue;
      out.push({
        stepMs,
        linkMs: seq.reduce((n, h) => n + (h.dueAt - h.arrivedAt), 0),
        emulatorLateMs: seq.reduce((n, h) => n + (h.deliveredAt - h.dueAt), 0),
        serverMs,
        clientMs,
      });
    }
  }
  return out;
}
