/**
 * A timeline of exec steps, for finding where a pipeline token's time goes (issue 19; the pipeline bench's
 * `--trace`). Off unless GRIDPIPE_STEP_TRACE names a folder: then every step an exec server answers and every
 * chain step a client sends appends one JSON line to `<folder>/<role>-<pid>.jsonl`. Times are ms since the
 * epoch (performance.timeOrigin + performance.now()), so the lines of the processes of one machine line up.
 * A line is written synchronously after the step's reply has gone, so a process killed at any moment keeps
 * what it traced, and the write is not on the token's critical path.
 */
import { appendFileSync } from 'node:fs';
import path from 'node:path';

/** One step an exec server answered. */
export interface ServerStepTrace {
  role: 'server';
  pid: number;
  stepId: string;
  /** The step's frame decoded. */
  receivedAt: number;
  /** Its run (and everything before and after it in the server's session) finished. */
  steppedAt: number;
  /** The server's own measure of its runs (the wall time of onnxruntime's calls, worker hand-off included). */
  computeMs: number;
  /** Chain mode: the outputs handed to the next server's stream. */
  forwardedAt?: number;
  /** The reply handed to its stream. */
  repliedAt: number;
}

/** One chain step of a client: when it left and when each server's reply arrived (in route order). */
export interface ChainStepTrace {
  role: 'client';
  pid: number;
  startedAt: number;
  replyAt: number[];
}

export type StepTraceLine = ServerStepTrace | ChainStepTrace;

/** Now, or a performance.now() reading, as ms since the epoch. */
export function epochMs(now = performance.now()): number {
  return performance.timeOrigin + now;
}

/** A function that appends one line to this process's trace file, or undefined when tracing is off. */
export function stepTraceWriter(role: StepTraceLine['role'], folder = process.env.GRIDPIPE_STEP_TRACE): ((line: StepTraceLine) => void) | undefined {
  if (!folder) return undefined;
  const file = path.join(folder, `${role}-${process.pid}.jsonl`);
  let failed = false;
  return (line) => {
    if (failed) return;
    try {
      appendFileSync(file, `${JSON.stringify(line)}\n`);
    } catch (err) {
      // a diagnostic never fails a step: say so once and stop tracing
      failed = true;
      process.emitWarning(`GRIDPIPE_STEP_TRACE: cannot write ${file} (${(err as Error).message}); step tracing is off`);
    }
  };
}
