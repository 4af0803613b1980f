/**
 * Running fragments for clients: the executor (onnxruntime sessions per fragment), KV-cache sessions, the
 * `/gridpipe/exec/1.0.0` protocol handler and its reply shaping.
 */
export {
  ExecServer, startExecServer, DEFAULT_MAX_STEP_FRAME_BYTES, DEFAULT_MAX_CONTROL_FRAME_BYTES, type ExecServerInit,
  type StepPaymentHook, type PaidStepInfo, type PaidStepTicket,
} from './protocol.js';
export {
  FragmentExecutor, ExecutorPool, providerCandidates, type ExecutorOptions, type ExecutionProviderName, type ProviderChoice,
  type FragmentResolver, type IoSpec, type RunResult,
} from './executor.js';
export { SessionManager, ExecSession, type SessionManagerOptions, type StepRequestIn, type StepOutcome, type StepChunkIn } from './sessions.js';
export { SpanProgram, ManifestCache, loadSpan, type KvSlot, type SpanMember, type FragmentRefIn } from './span.js';
export { ExecMetrics } from './metrics.js';
export { truncateAxis } from './reply.js';

