/** Errors of the fragments toolkit: each names what was wrong, and the CLI turns them into exit code 2. */

export type FragmentErrorCode =
  | 'NOT_ONNX'
  | 'TRUNCATED'
  | 'MISSING_EXTERNAL_DATA'
  | 'UNSUPPORTED'
  | 'TOO_MANY_PARTS'
  | 'BAD_ARGUMENT'
  | 'BAD_MANIFEST'
  | 'VERIFY_FAILED';

export class FragmentError extends Error {
  readonly code: FragmentErrorCode;
  constructor(code: FragmentErrorCode, message: string) {
    super(message);
    this.name = 'FragmentError';
    this.code = code;
  }
}
