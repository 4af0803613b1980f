/**
 * Errors of the fragments toolkit: each names what was wrong with a model, a manifest or an argument. They
 * are the caller's bad input (the CLI exits 2), so they extend GridpipeError with `badInput` set.
 */
import { GridpipeError } from '../../errors/base.js';

export type FragmentErrorCode =
  | 'NOT_ONNX'
  | 'TRUNCATED'
  | 'MISSING_EXTERNAL_DATA'
  | 'UNSUPPORTED'
  | 'TOO_MANY_PARTS'
  | 'BAD_ARGUMENT'
  | 'BAD_MANIFEST'
  /** A file shipped with the model (tokenizer.json, tokenizer_config.json, generation_config.json) is unusable. */
  | 'BAD_MODEL_FILE'
  | 'VERIFY_FAILED'
  /** The model does not run on the sample inputs made for it (their default dims do not fit its graph). */
  | 'SAMPLE_INPUTS_DO_NOT_FIT';

export class FragmentError extends GridpipeError<FragmentErrorCode> {
  constructor(code: FragmentErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { cause: options.cause, badInput: true });
    this.name = 'FragmentError';
  }
}
