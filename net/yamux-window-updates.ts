/**
 * Yamux window updates once half a stream's receive window is used, not after every data frame.
 *
 * Why: @chainsafe/libp2p-yamux 8 answers every data frame it receives with a window update (a 12-byte frame,
 * 30 bytes once Noise has framed and sealed it). A pipeline step is one small frame each way, so every hop's
 * message made the receiver encrypt and write a second one and woke the sender to decrypt it: twice the
 * messages, system calls and wake-ups per token, on the critical path of the receiver (the update is written
 * before the step is read). Measured in the WAN bench's link trace: one 30-byte frame for every data frame, on
 * every junction of a chain. Go's and Rust's yamux (and the spec's reference, hashicorp/yamux) send an update
 * only when the unannounced window reaches half the window; the sender still holds at least half a window, so
 * nothing waits for it. Updates that carry flags (SYN/ACK), the window's growth and pausing stay as they were.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

/** The fields of a yamux stream this rule reads (private in its typings). */
interface WindowState {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

let installed = false;

/** Makes every yamux stream of this process announce its receive window at half-window steps (idempotent). */
export function announceWindowAtHalf(): void {
  if (installed) return;
  installed = true;
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(this: WindowState): void };
  const afterEveryFrame = proto.sendWindowUpdate;
  proto.sendWindowUpdate = function sendWindowUpdateAtHalf(this: WindowState): void {
    // Only an established stream skips: the other states owe the remote a flag (ACK) or a resumed window.
    if (this.state === StreamState.Established && this.recvWindow - this.recvWindowCapacity < this.recvWindow / 2) return;
    afterEveryFrame.call(this);
  };
}
