/**
 * Decoding an exec frame as a whole: the pre-scan (scan.ts) bounds what decoding may allocate, then
 * protobufjs builds the message. The scan treats small sub-messages (a voucher, a sampler's settings) as
 * opaque bytes, so protobufjs can still refuse them (text that is not UTF-8, a wire type it does not know);
 * this turns such a failure into an ExecError BAD_REQUEST that says which message was malformed, instead of
 * letting a TypeError from the decoder travel on (found by test/fuzz/decoders.test.ts).
 */
import { ExecRequestType, ExecResponseType, type DecodedRequest, type DecodedResponse } from './codec.js';
import { ExecError } from './errors.js';
import { DEFAULT_SCAN_LIMITS, scanRequest, type ScanLimits } from './scan.js';

/** protobufjs's decode, any failure an ExecError BAD_REQUEST naming `what`. */
function decodeOrRefuse<M>(decode: () => M, what: string): M {
  try {
    return decode();
  } catch (err) {
    throw new ExecError('BAD_REQUEST', `malformed frame: ${what} does not decode (${(err as Error).message})`, { cause: err });
  }
}

/** An ExecRequest frame checked against `limits` and decoded; ExecError TOO_LARGE / BAD_REQUEST otherwise. */
export function decodeRequestFrame(frame: Uint8Array, limits: ScanLimits = DEFAULT_SCAN_LIMITS): DecodedRequest {
  scanRequest(frame, limits);
  return decodeOrRefuse(() => ExecRequestType.decode(frame), 'the request');
}

/** An ExecResponse frame already scanned (scanResponse) decoded; ExecError BAD_REQUEST when it does not. */
export function decodeScannedResponse(frame: Uint8Array): DecodedResponse {
  return decodeOrRefuse(() => ExecResponseType.decode(frame), 'the reply');
}
