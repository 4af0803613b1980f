/**
 * Issue 21, "a peer that floods or sends garbage repeatedly is disconnected": a real `gridpipe supply` process
 * (limits lowered by its CLI options) against rogue libp2p hosts built from project code. A peer that sends
 * malformed exec frames, malformed blob requests, or opens exec streams past the rate is hung up on (its
 * connection closed), refused when it comes back within the back-off (new connections closed, streams
 * aborted), while an honest client's steps, run in parallel, complete; the penalty is a pino warn line and
 * counted in the supplier's /metrics.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiaddr } from '@multiformats/multiaddr';
import { PROTOCOLS } from '../../proto/grid.js';
import type { GridHost } from '../../net/host.js';
import { ExecClient, FrameReader, writeFrame } from '../../net/exec/index.js';
import { ExecResponseType, type DecodedResponse } from '../../net/exec/codec.js';
import { BLOB_PROTOCOL } from '../../net/store/blob-codec.js';
import type { RunningProcess } from '../helpers/process.js';
import { gptInputs } from '../helpers/decoder-inputs.js';
import { waitFor } from '../helpers/swarm.js';
import { tempDir } from '../helpers/tmp.js';
import { startWireTarget, TARGET_GPT, type WireTarget } from '../helpers/wire-target.js';

const tmp = tempDir('gridpipe-guard-');
const GPT = TARGET_GPT;
const GARBAGE_LIMIT = 5;
const STREAM_LIMIT = 40;
/** Pause between honest steps: the honest client opens a stream per session, well under the stream limit. */
const HONEST_PAUSE_MS = 400;
let supplier: RunningProcess;
let supplierAddr: string;
let supplierPeer: string;
let admin: string;
let manifestCid: string;
let fragmentCid: string;
let target: WireTarget;

const clientHost = (): Promise<GridHost> => target.clientHost();

/** A length-prefixed frame of `payload`. */
function lengthPrefixed(payload: number[]): Uint8Array {
  return Uint8Array.from([payload.length, ...payload]);
}

/** Field 0 (key byte 0x02, a length of 0): garbage the supplier answers with BAD_REQUEST. */
const GARBAGE = lengthPrefixed([0x02, 0x00]);

/** One honest prefill step through the real exec client; its logits' dims. */
async function honestStep(host: GridHost): Promise<number[]> {
  const session = await new ExecClient().openSession(host.node, multiaddr(supplierAddr), { fragments: [{ cid: fragmentCid, manifestCid, index: 0 }], maxLength: 16 });
  const r = await session.step(gptInputs([3, 1, 4], 0), { position: 0 });
  await session.close();
  return r.outputs.logits.dims as number[];
}

/** Honest steps one after another until `until` settles; how many completed (each must succeed). */
async function honestTraffic(host: GridHost, until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => { done = true; });
  let steps = 0;
  while (!done || steps === 0) {
    expect(await honestStep(host)).toEqual([1, 3, GPT.vocab]);
    steps++;
    await new Promise((r) => setTimeout(r, HONEST_PAUSE_MS));
  }
  return steps;
}

/**
 * libp2p admits at most 5 new inbound connections per address per second (its connection manager's
 * inboundConnectionThreshold), and every host here is 127.0.0.1: the previous test's last dials must age out
 * before this test's hosts connect, or the supplier resets them.
 */
const newConnectionWindow = (): Promise<void> => new Promise((r) => setTimeout(r, 1_100));

const connected = (h: GridHost): boolean => h.node.getConnections().some((c) => c.remotePeer.toString() === supplierPeer && c.status === 'open');

/** Whether the supplier still serves this host an exec stream it can use: open, send garbage, get an answer. */
async function served(h: GridHost): Promise<boolean> {
  try {
    const stream = await h.node.dialProtocol(multiaddr(supplierAddr), PROTOCOLS.exec, { signal: AbortSignal.timeout(5_000) });
    const reader = new FrameReader(stream, { maxFrameBytes: 1 << 20 });
    await writeFrame(stream, [lengthPrefixed([0x1a, 0x00])]); // a close of no session: valid, and answered by nothing
    await writeFrame(stream, [lengthPrefixed([0x12, 0x02, 0x0a, 0x00])]); // a step of an unknown session: an error reply
    const e = await Promise.race([reader.next(), new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
    await stream.close().catch(() => undefined);
    return !!e && e.kind === 'frame';
  } catch {
    return false;
  }
}

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

beforeAll(async () => {
  target = await startWireTarget(tmp.dir, ['--peer-garbage-limit', String(GARBAGE_LIMIT), '--peer-stream-limit', String(STREAM_LIMIT), '--peer-refuse', '600', '--admin-port', '0']);
  ({ proc: supplier, addr: supplierAddr, peerId: supplierPeer, manifestCid, fragmentCid } = target);
  admin = target.admin!;
}, 120_000);

afterAll(async () => {
  await target?.stop();
  tmp.cleanup();
});

describe('a peer that floods or sends garbage is cut off; honest traffic goes on', () => {
  it('malformed exec frames: answered until the limit, then hung up on and refused, while honest steps complete', async () => {
    const honest = await clientHost();
    expect(await honestStep(honest)).toEqual([1, 3, GPT.vocab]);
    const rogue = await clientHost();
    const attack = (async () => {
      const stream = await rogue.node.dialProtocol(multiaddr(supplierAddr), PROTOCOLS.exec);
      const reader = new FrameReader(stream, { maxFrameBytes: 1 << 20 });
      const answers: DecodedResponse[] = [];
      for (let i = 0; i < GARBAGE_LIMIT - 1; i++) {
        await writeFrame(stream, [GARBAGE]);
        const e = await reader.next();
        if (e?.kind === 'frame') answers.push(ExecResponseType.decode(e.bytes) as unknown as DecodedResponse);
      }
      // the one too many: the connection is closed under it
      await writeFrame(stream, [GARBAGE]).catch(() => undefined);
      await waitFor(() => !connected(rogue), 'the rogue peer hung up on', 20_000);
      return answers;
    })();
    const steps = await honestTraffic(honest, attack);
    const answers = await attack;
    expect(answers).toHaveLength(GARBAGE_LIMIT - 1);
    for (const a of answers) expect(a.error?.message).toBe('malformed frame: field 0 in request');
    expect(steps).toBeGreaterThan(0);
    // coming back within the back-off: the connection is closed as it opens, nothing is served
    expect(await served(rogue)).toBe(false);
    expect(await served(rogue)).toBe(false);
    // the honest peer is served as before, on the same supplier
    expect(await served(honest)).toBe(true);
    expect(await honestStep(honest)).toEqual([1, 3, GPT.vocab]);
    expect(await metric('gridpipe_peer_penalties_total', 'kind="garbage"')).toBe(1);
    expect(await metric('gridpipe_peers_refused', '')).toBeGreaterThanOrEqual(1);
    expect(await metric('gridpipe_peer_refusals_total', 'what="connection"') + await metric('gridpipe_peer_refusals_total', 'what="stream"')).toBeGreaterThanOrEqual(1);
    await waitFor(() => supplier.output().includes(`peer ${rogue.node.peerId.toString()} sent ${GARBAGE_LIMIT} malformed messages`), 'the warn line of the penalty', 10_000);
  }, 180_000);

  it('exec streams past the rate: hung up on and refused, while honest steps complete', async () => {
    await newConnectionWindow();
    const honest = await clientHost();
    const flooder = await clientHost();
    const flood = (async () => {
      let opened = 0;
      for (let i = 0; i < STREAM_LIMIT + 10; i++) {
        try {
          const s = await flooder.node.dialProtocol(multiaddr(supplierAddr), PROTOCOLS.exec, { signal: AbortSignal.timeout(5_000) });
          opened++;
          await s.close().catch(() => undefined);
        } catch {
          break;
        }
        if (!connected(flooder) && opened >= STREAM_LIMIT) break;
      }
      await waitFor(() => !connected(flooder), 'the flooding peer hung up on', 20_000);
      return opened;
    })();
    await honestTraffic(honest, flood);
    expect(await flood).toBeGreaterThanOrEqual(STREAM_LIMIT - 1);
    expect(await served(flooder)).toBe(false);
    expect(await honestStep(honest)).toEqual([1, 3, GPT.vocab]);
    expect(await metric('gridpipe_peer_penalties_total', 'kind="streams"')).toBe(1);
    await waitFor(() => supplier.output().includes(`peer ${flooder.node.peerId.toString()} opened`), 'the warn line of the penalty', 10_000);
  }, 180_000);

  it('malformed blob requests count too, and cut the peer off the exec protocol as well', async () => {
    // connected first: libp2p also limits new inbound connections per address per second, and every test host is 127.0.0.1
    await newConnectionWindow();
    const honest = await clientHost();
    expect(await honestStep(honest)).toEqual([1, 3, GPT.vocab]);
    const rogue = await clientHost();
    for (let i = 0; i < GARBAGE_LIMIT; i++) {
      try {
        const s = await rogue.node.dialProtocol(multiaddr(supplierAddr), BLOB_PROTOCOL, { signal: AbortSignal.timeout(5_000) });
        await writeFrame(s, [lengthPrefixed([0xff, 0xff, 0xff])]);
        const reader = new FrameReader(s, { maxFrameBytes: 1 << 20 });
        await Promise.race([reader.next(), new Promise((r) => setTimeout(r, 5_000))]).catch(() => undefined);
        await s.close().catch(() => undefined);
      } catch {
        break;
      }
    }
    await waitFor(() => !connected(rogue), 'the rogue peer hung up on', 20_000);
    expect(await served(rogue)).toBe(false);
    expect(await metric('gridpipe_peer_penalties_total', 'kind="garbage"')).toBe(2);
    expect(await honestStep(honest)).toEqual([1, 3, GPT.vocab]);
  }, 180_000);
});
