/**
 * The process a WAN hub namespace runs (`ip netns exec HUB node --import tsx test/helpers/netns-hub.ts JSON`):
 * one shaped TCP forwarder (netns-link.ts) per entry of its JSON argument, each listening on the hub's side of
 * a node's link and forwarding to that node. Prints `{"ready":true,...}` once all listen; runs until SIGTERM.
 * With GRIDPIPE_LINK_TRACE=FILE it writes one JSON line per forwarded chunk there (link, connection, direction,
 * bytes, arrival, due and delivery times in ms of performance.now() + performance.timeOrigin): where a token's
 * time goes, hop by hop (bench/wan.ts --trace reads it).
 */
import { openSync, writeSync } from 'node:fs';
import os from 'node:os';
import { startForwarder, type ForwarderOptions } from './netns-link.js';

const entries = JSON.parse(process.argv[2] ?? '[]') as ForwarderOptions[];
// The hub stands for the network, which does not queue for the machine's cores behind the nodes: as root it
// runs at a higher scheduling priority than they do (it uses little CPU), so its timers fire on time on a
// loaded machine; elsewhere it keeps its priority and its lateness shows in the bench's emulator_late.
try { os.setPriority(-10); } catch { /* not root */ }
const traceFile = process.env.GRIDPIPE_LINK_TRACE;
const traceOut = traceFile ? openSync(traceFile, 'w') : undefined;
const epoch = performance.timeOrigin;
const forwarders = await Promise.all(entries.map((e, link) => startForwarder({
  ...e,
  ...(traceOut !== undefined ? {
    trace: (c, direction, t) => writeSync(traceOut, `${JSON.stringify({ link, connection: c.id, from: c.remoteAddress, direction, bytes: t.bytes, arrivedAt: epoch + t.arrivedAt, dueAt: epoch + t.dueAt, deliveredAt: epoch + t.deliveredAt })}\n`),
  } : {}),
})));
process.stdout.write(`${JSON.stringify({ ready: true, ports: forwarders.map((f) => f.port) })}\n`);
const stop = (): void => {
  void Promise.all(forwarders.map((f) => f.close())).then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
