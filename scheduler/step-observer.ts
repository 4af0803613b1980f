/**
 * What a pipeline session shows of each hop to whoever checks its suppliers (issue 21: the gateway's verifier,
 * gateway/verify/): the span, the host, the tensors sent and received and the output reductions asked for, so
 * another host of the same span can be made to run exactly the same chunks. The session calls the observer
 * after a hop succeeded and once when it closes; an observer must not block (it runs on the request's path).
 */
import type { StepChunkInit, TensorMap } from '../net/exec/client.js';
import type { WireSampling } from '../net/exec/codec.js';
import type { HostedSpan } from './discovery.js';

/** One successful call of a span within a step. */
export interface HopRecord {
  /** Index of the session's step (0 = the first). */
  step: number;
  peerId: string;
  hosted: HostedSpan;
  start: number;
  end: number;
  /** KV length before the step's own inputs. */
  position: number;
  /** New positions of each chunk (the replay chunks, then the step). */
  chunkTokens: number[];
  /** Replay chunks sent first (a fresh host brought to the session's state), with what they returned. */
  replay: { chunk: StepChunkInit; outputs: TensorMap }[];
  inputs: TensorMap;
  outputs: TensorMap;
  want: string[];
  reduction: { lastRowOnly?: string[]; topK?: number; sample?: WireSampling };
  /** The call's wall time as this client measured it. */
  wallMs: number;
  /** The server's signed receipt of the session so far (an encoded SignedReceipt), when its reply carried one. */
  receipt?: Uint8Array;
}

export interface StepObserver {
  onHop(record: HopRecord): void;
  onClose(): void;
}
