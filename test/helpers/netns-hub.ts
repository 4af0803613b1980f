/**
 * The process a WAN hub namespace runs (`ip netns exec HUB node --import tsx test/helpers/netns-hub.ts JSON`):
 * one shaped TCP forwarder (netns-link.ts) per entry of its JSON argument, each listening on the hub's side of
 * a node's link and forwarding to that node. Prints `{"ready":true,...}` once all listen; runs until SIGTERM.
 */
import { startForwarder, type ForwarderOptions } from './netns-link.js';

const entries = JSON.parse(process.argv[2] ?? '[]') as ForwarderOptions[];
const forwarders = await Promise.all(entries.map((e) => startForwarder(e)));
process.stdout.write(`${JSON.stringify({ ready: true, ports: forwarders.map((f) => f.port) })}\n`);
const stop = (): void => {
  void Promise.all(forwarders.map((f) => f.close())).then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
