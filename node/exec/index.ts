/**
 * Running fragments for clients: the executor (onnxruntime sessions per fragment), KV-cache sessions, the
 * `/gridpipe/exec/1.0.0` protocol handler and its client.
 */
export {
  ExecServer, startExecServer, DEFAULT_MAX_STEP_FRAME_BYTES, DEFAULT_MAX_CONTROL_FRAME_BYTES, type ExecServerInit,
  type StepPaymentHook, type PaidStepInfo, type PaidStepTicket,
} from './protocol.js';
export {
  ExecClient, RemoteSession, type ExecClientInit, type OpenSessionOptions, type StepOptions, type StepResult, type StepChunkInit,
  type TensorMap, type FragmentRefInit,
} from './client.js';
export { ExecError, ErrorCode, errorCodeName, type ExecErrorCode, type WireErrorCode } from './errors.js';
export {
  FragmentExecutor, ExecutorPool, providerCandidates, type ExecutorOptions, type ExecutionProviderName, type ProviderChoice,
  type FragmentResolver, type IoSpec, type RunResult,
} from './executor.js';
export { SessionManager, ExecSession, type SessionManagerOptions, type StepRequestIn, type StepOutcome, type StepChunkIn } from './sessions.js';
export { SpanProgram, ManifestCache, loadSpan, type KvSlot, type SpanMember, type FragmentRefIn } from './span.js';
export { ExecMetrics } from './metrics.js';
export { wireToOrt, ortToWire, truncateAxis, emptyTensor, tensorBytes, tensorCopyStats } from './tensors.js';
export { FrameReader, writeFrame, encodeStepRequestFrame, encodeStepReplyFrame, encodeVoucher, fromDecodedVoucher, type FrameEvent, type WireVoucher } from './codec.js';
