/**
 * Where a chain token's time goes on loopback (issue 19; `npm run bench -- pipeline --decode-only --trace`).
 * With GRIDPIPE_STEP_TRACE set, every exec server and the client write a line per step (net/step-trace.ts);
 * a chain step's servers are the server lines received between the client's send and its last reply, in the
 * order they were received. Consecutive marks split the token's time exactly (the sum of a step's segments is
 * its time from the client's send to the last reply), so the bench can say which part is the wire and which
 * the servers' own code, instead of guessing.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChainStepTrace, ServerStepTrace, StepTraceLine } from '../net/step-trace.js';
import { median } from './stats.js';

/** One chain step, split (ms). Per-server figures are in route order. */
export interface ChainTokenSplit {
  /** Client send → first server's frame decoded: the client's encoding, the wire, the server's decoding. */
  firstSendMs: number;
  /** Each server's time outside its runs: frame decoded → step done, less the runs (sessions, batcher, executor). */
  serverOutsideRunMs: number[];
  /** Each server's runs (onnxruntime's calls, worker hand-off included). */
  computeMs: number[];
  /** Each forwarding server's step done → forward handed to the stream (encoding the step frame). */
  forwardMs: number[];
  /** Forward handed to the stream → next server's frame decoded (the rest of the sender's tick, the kernel, the receiver's decoding). */
  transitMs: number[];
  /** Last server's step done → the client has its reply (encoding, the wire, decoding). */
  lastReplyMs: number;
  /** Client send → last reply. */
  totalMs: number;
}

/** Reads every trace file in `folder`. */
export async function readStepTraces(folder: string): Promise<StepTraceLine[]> {
  const lines: StepTraceLine[] = [];
  for (const file of await readdir(folder)) {
    if (!file.endsWith('.jsonl')) continue;
    const text = await readFile(path.join(folder, file), 'utf8');
    for (const line of text.split('\n')) if (line) lines.push(JSON.parse(line) as StepTraceLine);
  }
  return lines;
}

/** Splits every chain step whose servers can all be found (one server line per reply, each one forwarded but the last). */
export function splitChainSteps(lines: readonly StepTraceLine[]): ChainTokenSplit[] {
  const servers = lines.filter((l): l is ServerStepTrace => l.role === 'server').sort((a, b) => a.receivedAt - b.receivedAt);
  const clients = lines.filter((l): l is ChainStepTrace => l.role === 'client');
  const out: ChainTokenSplit[] = [];
  for (const c of clients) {
    const end = c.replyAt[c.replyAt.length - 1];
    const route = servers.filter((s) => s.receivedAt >= c.startedAt && s.receivedAt <= end);
    if (route.length !== c.replyAt.length || route.length === 0) continue;
    if (route.slice(0, -1).some((s) => s.forwardedAt === undefined)) continue;
    const last = route[route.length - 1];
    out.push({
      firstSendMs: route[0].receivedAt - c.startedAt,
      serverOutsideRunMs: route.map((s) => s.steppedAt - s.receivedAt - s.computeMs),
      computeMs: route.map((s) => s.computeMs),
      forwardMs: route.slice(0, -1).map((s) => s.forwardedAt! - s.steppedAt),
      transitMs: route.slice(1).map((s, i) => s.receivedAt - route[i].forwardedAt!),
      lastReplyMs: end - last.steppedAt,
      totalMs: end - c.startedAt,
    });
  }
  return out;
}

const sum = (v: number[]): number => v.reduce((a, b) => a + b, 0);

/** The medians of a run's chain steps as bench metrics (per-server parts summed over the route), prefix `chain_trace_`. */
export function chainTraceMetrics(steps: readonly ChainTokenSplit[]): Record<string, number> {
  const m = (pick: (s: ChainTokenSplit) => number): number => median(steps.map(pick));
  return {
    chain_trace_steps: steps.length,
    chain_trace_total_ms: m((s) => s.totalMs),
    chain_trace_first_send_ms: m((s) => s.firstSendMs),
    chain_trace_server_outside_run_ms: m((s) => sum(s.serverOutsideRunMs)),
    chain_trace_compute_ms: m((s) => sum(s.computeMs)),
    chain_trace_forward_ms: m((s) => sum(s.forwardMs)),
    chain_trace_transit_ms: m((s) => sum(s.transitMs)),
    chain_trace_transit_each_ms: median(steps.flatMap((s) => s.transitMs)),
    chain_trace_last_reply_ms: m((s) => s.lastReplyMs),
  };
}
