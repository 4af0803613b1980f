/** The `/gridpipe/exec/1.0.0` wire: codec, frame reader, client, error codes, tensor conversion. */
export {
  ExecClient, RemoteSession, type ExecClientInit, type OpenSessionOptions, type StepOptions, type StepResult, type StepChunkInit,
  type TensorMap, type FragmentRefInit,
} from './client.js';
export { ExecError, ErrorCode, errorCodeName, type ExecErrorCode, type WireErrorCode } from './errors.js';
export { wireToOrt, ortToWire, emptyTensor, tensorBytes, tensorCopyStats } from './tensors.js';
export { FrameReader, writeFrame, encodeStepRequestFrame, encodeStepReplyFrame, encodeVoucher, fromDecodedVoucher, type FrameEvent, type WireVoucher } from './codec.js';
