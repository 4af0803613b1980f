/**
 * Direct-return chain mode, server side. Across the internet a pipeline's per-token cost is round trips: a
 * star through the client pays two one-way trips per server, a chain that hands each server's outputs straight
 * to the next server's session (and the last one's reply straight to the client) pays one per server plus one.
 *
 * Two jobs live here. Grants: a session opened with `forwarders` (the previous server of the client's route)
 * accepts steps from them as if the opener had sent them (the opener's payer and credit), and its replies go
 * to the opener's stream, never back to the forwarder (who learns nothing it did not send). Forwarding: after a
 * step that names `forward` hops has run, its outputs go, as a Step, to the first hop's session, over one
 * outgoing stream per (session, next session) kept open for the session's life.
 */
import type { Libp2p, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { PROTOCOLS, type WireTensor } from '../../proto/wire.js';
import { encodeStepRequestFrame, FrameReader, writeFrame, type StepRequestOut, type WireHop } from '../../net/exec/codec.js';
import { ExecError } from '../../net/exec/errors.js';

/** Who a session forwarded into belongs to, and where its replies go. */
export interface ForwardGrant {
  owner: string;
  /** The opener's stream: every reply of the session goes there. */
  stream: Stream;
  forwarders: ReadonlySet<string>;
}

/** What the step that ran passes on, besides the hops. */
export type ForwardedStep = Pick<StepRequestOut, 'stepId' | 'position' | 'draftTokens' | 'chunkTokens' | 'lastRowOnly' | 'topK' | 'sample'>;

export interface ChainForwarderInit {
  /** Dials the next server (the node the exec server runs on); without one, forwarding fails and the client takes over. */
  dialer: () => Pick<Libp2p, 'dialProtocol'> | undefined;
  logger?: Logger;
  /** Outgoing forward streams held at once (default 1024); the oldest is closed past it. */
  maxStreams?: number;
  /** Deadline of dialing the next server (default 5 s). */
  dialTimeoutMs?: number;
}

/** Grants of forwarded sessions and the outgoing streams that forward outputs. */
export class ChainForwarder {
  private readonly grants = new Map<string, ForwardGrant>();
  private readonly outgoing = new Map<string, Promise<Stream>>();
  private readonly log?: Logger;
  private readonly maxStreams: number;
  private readonly dialTimeoutMs: number;

  constructor(private readonly init: ChainForwarderInit) {
    this.log = init.logger;
    this.maxStreams = init.maxStreams ?? 1024;
    this.dialTimeoutMs = init.dialTimeoutMs ?? 5000;
  }

  /** Lets `forwarders` step `owner`'s session `sessionId`; refused (false) when another owner holds a grant on that id. */
  grant(owner: string, sessionId: string, stream: Stream, forwarders: readonly string[]): boolean {
    const held = this.grants.get(sessionId);
    if (held && held.owner !== owner) return false;
    this.grants.set(sessionId, { owner, stream, forwarders: new Set(forwarders.filter((f) => f && f !== owner)) });
    return true;
  }

  /** The grant under which `from` may step `sessionId` (undefined: none). */
  grantFor(from: string, sessionId: string): ForwardGrant | undefined {
    const g = this.grants.get(sessionId);
    return g && g.forwarders.has(from) ? g : undefined;
  }

  /** Drops `owner`'s grant on `sessionId` and closes the streams its steps were forwarded on. */
  release(owner: string, sessionId: string): void {
    if (this.grants.get(sessionId)?.owner === owner) this.grants.delete(sessionId);
    const prefix = `${owner}/${sessionId}>`;
    for (const [key, stream] of this.outgoing) {
      if (!key.startsWith(prefix)) continue;
      this.outgoing.delete(key);
      void stream.then((s) => s.close()).catch(() => undefined);
    }
  }

  /** Closes every outgoing stream. */
  stop(): void {
    for (const stream of this.outgoing.values()) void stream.then((s) => s.abort(new Error('exec server stopping'))).catch(() => undefined);
    this.outgoing.clear();
    this.grants.clear();
  }

  /**
   * Hands a step's outputs to the first of `hops` (the rest travel with it). `available` are the step's inputs
   * and outputs; the hop takes its `carry` names from them. Resolves with undefined when the frame was handed to
   * the stream, or the reason it could not be (the client then sends that hop's step itself).
   */
  async forward(owner: string, sessionId: string, hops: readonly WireHop[], step: ForwardedStep, available: ReadonlyMap<string, WireTensor>): Promise<string | undefined> {
    const [next, ...rest] = hops;
    try {
      const inputs = [...next.inputs];
      for (const name of next.carry) {
        const t = available.get(name);
        if (!t) throw new ExecError('BAD_REQUEST', `the next hop wants "${name}", which this step neither got nor returned`);
        inputs.push(t);
      }
      const frame = encodeStepRequestFrame({ ...step, sessionId: next.sessionId, inputs, want: next.want, voucher: next.voucher, forward: rest });
      const key = `${owner}/${sessionId}>${next.peerId}/${next.sessionId}`;
      let stream = this.outgoing.get(key);
      if (!stream) {
        stream = this.open(next);
        this.outgoing.set(key, stream);
        stream.catch(() => this.outgoing.delete(key));
        this.trim();
      }
      await writeFrame(await stream, frame);
      return undefined;
    } catch (err) {
      this.outgoing.delete(`${owner}/${sessionId}>${next.peerId}/${next.sessionId}`);
      const reason = `could not forward to ${next.peerId}: ${(err as Error).message}`;
      this.log?.debug({ session: sessionId, next: next.peerId, err: (err as Error).message }, 'chain forward failed; the client takes over that hop');
      return reason;
    }
  }

  private async open(hop: WireHop): Promise<Stream> {
    const dialer = this.init.dialer();
    if (!dialer) throw new ExecError('CLOSED', 'this server has no node to dial the next hop from');
    const target = hop.addrs.length
      ? hop.addrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${hop.peerId}`))
      : peerIdFromString(hop.peerId);
    const stream = await dialer.dialProtocol(target, PROTOCOLS.exec, { signal: AbortSignal.timeout(this.dialTimeoutMs), negotiateFully: false, runOnLimitedConnection: true });
    // The next server answers the client, not us; what comes back here is only its refusal of a frame. Read it
    // (so the stream never stalls) and log it: the client's wait for that server's reply ends in failover.
    const reader = new FrameReader(stream, { maxFrameBytes: 1024 * 1024 });
    void (async () => {
      try {
        for (let e = await reader.next(); e; e = await reader.next()) this.log?.debug({ next: hop.peerId }, 'the next hop answered a forwarded step on the forwarding stream');
      } catch {
        // the stream ended
      }
    })();
    return stream;
  }

  /** Closes the oldest outgoing streams past maxStreams. */
  private trim(): void {
    for (const [key, stream] of this.outgoing) {
      if (this.outgoing.size <= this.maxStreams) break;
      this.outgoing.delete(key);
      void stream.then((s) => s.close()).catch(() => undefined);
    }
  }
}
