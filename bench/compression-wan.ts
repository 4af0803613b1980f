/**
 * The `compression` benchmark's link figures (issue 18): decode tokens/s of the demo model cut in two, over an
 * emulated link of 100 Mbit/s and 20 ms round trip (10 ms one way, the user-space forwarder of bench/wan-net.ts:
 * this kernel has no netem), with activations on the wire as the model's dtype, fp16 and int8. Two supplier
 * processes and the client (`gridpipe generate --wire-encoding`) each sit in their own network namespace. Needs
 * root and iproute2; elsewhere it returns no figures and says so.
 */
import path from 'node:path';
import { createWanTopology, generateInside, type TimedGeneration } from './wan-net.js';

const ONE_WAY_MS = 10;
const RATE_BITS_PER_S = 100e6;
const TOKENS = 24;
const ROUNDS = 2;
const PORT = 4101;
export const WAN_ENCODINGS = ['exact', 'fp16', 'int8'] as const;

/** Decode tokens per second of a timed generation (the prefill's token excluded). */
function decodeTps(run: TimedGeneration): number {
  return (run.at.length - 1) / ((run.at[run.at.length - 1] - run.at[0]) / 1000);
}

/** Runs the link measurement on a two-fragment folder; `prompt` token ids; figures keyed wan_*. */
export async function wireWanFigures(fragDir: string, work: string, prompt: number[]): Promise<Record<string, number>> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('compression: the link figures need root and iproute2 (network namespaces); not measured\n');
    return {};
  }
  const topology = createWanTopology(3); // host 0: the client; hosts 1, 2: the suppliers
  const stops: (() => void)[] = [];
  try {
    const shape = { delayMs: ONE_WAY_MS, rateBitsPerS: RATE_BITS_PER_S };
    const hub = await topology.startLinks([1, 2].map((host) => ({ host, port: PORT })), shape);
    stops.push(() => hub.child.kill('SIGKILL'));
    const supplier = (s: number, extra: string[]): ReturnType<typeof topology.gridpipe> => {
      const host = s + 1;
      const proc = topology.gridpipe(host, ['supply', '--data', path.join(work, `wan-s${s}`), '--listen', `/ip4/${topology.hostIp(host)}/tcp/${PORT}`,
        '--announce', `/ip4/${topology.linkIp(host)}/tcp/${PORT}`, '--host', fragDir, '--fragments', String(s), '--network', 'local', '--json', ...extra]);
      stops.push(() => proc.child.kill('SIGKILL'));
      return proc;
    };
    const first = (await supplier(0, []).ready) as { peerId: string };
    const bootstrap = `/ip4/${topology.linkIp(1)}/tcp/${PORT}/p2p/${first.peerId}`;
    await supplier(1, ['--bootstrap', bootstrap]).ready;

    const args = (encoding: string): string[] => ['--manifest', fragDir, '--prompt-ids', prompt.join(','), '--max-tokens', String(TOKENS), '--temperature', '0',
      '--bootstrap', bootstrap, '--network', 'local', '--wait', '60', '--wire-encoding', encoding];
    const runs: Record<string, TimedGeneration[]> = Object.fromEntries(WAN_ENCODINGS.map((e) => [e, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const encoding of WAN_ENCODINGS) {
        const run = await generateInside(topology.hosts[0], args(encoding));
        if (run.code !== 0) throw new Error(`generate --wire-encoding ${encoding} exited ${run.code}: ${run.stderr.slice(-2000)}`);
        runs[encoding].push(run);
      }
    }
    const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
    const out: Record<string, number> = {};
    const reference = runs.exact[0].tokens;
    for (const encoding of WAN_ENCODINGS) {
      out[`wan_${encoding}_decode_tokens_per_s`] = mean(runs[encoding].map(decodeTps));
      const used = runs[encoding].flatMap((r) => (r.summary?.route ?? []) as { wireEncoding?: string }[]).map((r) => r.wireEncoding);
      out[`wan_${encoding}_links_as_asked`] = Number(used.length > 0 && used.every((u) => u === encoding));
      const same = runs[encoding].map((r) => r.tokens.filter((t, i) => t === reference[i]).length / reference.length);
      out[`wan_${encoding}_token_agreement`] = mean(same);
    }
    out.wan_one_way_ms = ONE_WAY_MS;
    out.wan_rate_mbit_s = RATE_BITS_PER_S / 1e6;
    return out;
  } finally {
    for (const stop of stops) stop();
    topology.destroy();
  }
}
