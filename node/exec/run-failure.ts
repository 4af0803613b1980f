/**
 * What an onnxruntime run failure means for the peer that asked for it. A fragment is content-addressed and
 * the same on every host, so a failure that onnxruntime blames on an input's values or shape (a token id past
 * the vocabulary, dims that do not fit the graph) would happen on any host: it is the caller's bad request,
 * not this supplier's fault. Reported as EXECUTION_FAILED, it made the client ban every honest supplier of
 * the span in turn and fail over up to its repair limit for one bad /v1/infer body, then answer 502 (found
 * by test/fuzz/gateway-routes.test.ts). Anything else (memory, a dead worker) stays EXECUTION_FAILED.
 */
import { ExecError } from '../../net/exec/errors.js';

/** onnxruntime messages that name an input's values or shape as the cause. */
const INPUT_FAULTS: readonly RegExp[] = [
  /indices element out of data bounds/i,
  /Got invalid dimensions for input/i,
  /Invalid rank for input/i,
  /Unexpected input data type/i,
  /input tensor cannot be reshaped to the requested shape/i,
  /Attempting to broadcast an axis by a dimension other than 1/i,
];

/** The ExecError for a failed run: BAD_REQUEST when onnxruntime blames the inputs, EXECUTION_FAILED otherwise. */
export function runFailure(err: unknown): ExecError {
  const message = err instanceof Error ? err.message : String(err);
  if (INPUT_FAULTS.some((p) => p.test(message))) return new ExecError('BAD_REQUEST', `onnxruntime refused the inputs: ${message}`, { cause: err });
  return new ExecError('EXECUTION_FAILED', `onnxruntime failed: ${message}`, { cause: err });
}
