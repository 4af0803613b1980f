/**
 * The process a NAT router namespace runs (`ip netns exec NS node --import tsx test/helpers/netns-router.ts
 * JSON`): the user-space NAT and link emulator of netns-link.ts for the ports and shapes in its one JSON
 * argument. Prints `{"ready":true,...}` once it listens (the line spawnGridpipe-style helpers wait for) and
 * runs until SIGTERM.
 */
import { startNatProxy, type NatProxyOptions } from './netns-link.js';

const options = JSON.parse(process.argv[2] ?? '{}') as NatProxyOptions;
const forwarders = await startNatProxy(options);
process.stdout.write(`${JSON.stringify({ ready: true, ports: forwarders.map((f) => f.port) })}\n`);
const stop = (): void => {
  void Promise.all(forwarders.map((f) => f.close())).then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
