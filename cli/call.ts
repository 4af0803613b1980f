/** `gridpipe call`: send a prompt to a gateway and stream the completion to stdout (route and cost on stderr). */
import { Command } from 'commander';
import { collect, nonNegativeInt, positiveInt } from './args.js';
import { UsageError } from './errors.js';
import { GridpipeError } from '../errors/base.js';

/** The call command. */
export function callCommand(): Command {
  return new Command('call')
    .description('Stream a completion from a gridpipe gateway (or any OpenAI-compatible endpoint) to stdout')
    .argument('<prompt>', 'the prompt')
    .requiredOption('--model <id>', 'model id or manifest CID (see GET /v1/models)')
    .option('--url <url>', 'the gateway', process.env.GRIDPIPE_URL ?? 'http://127.0.0.1:8080')
    .option('--key <key>', 'API key (default: $GRIDPIPE_API_KEY)', process.env.GRIDPIPE_API_KEY)
    .option('--max-tokens <n>', 'tokens to generate', positiveInt, 64)
    .option('--temperature <t>', '0 = greedy', (v: string) => Number(v), 1)
    .option('--top-p <p>', 'nucleus sampling', (v: string) => Number(v))
    .option('--seed <n>', 'sampling seed', nonNegativeInt)
    .option('--stop <text>', 'stop at this text (repeatable)', collect, [])
    .option('--json', 'print one JSON object with the text, usage and route instead of streaming', false)
    .action(async (prompt: string, o: { model: string; url: string; key?: string; maxTokens: number; temperature: number; topP?: number; seed?: number; stop: string[]; json: boolean }) => {
      // The SDK (and the protobuf schemas it reads) loads here, not with the command tree.
      const { GridpipeClient, GridpipeApiError } = await import('../gateway/client.js');
      if (!(o.temperature >= 0 && o.temperature <= 2)) throw new UsageError(`--temperature must be in [0, 2], got ${o.temperature}`);
      const client = new GridpipeClient({ baseUrl: o.url, apiKey: o.key });
      const request = { model: o.model, prompt, max_tokens: o.maxTokens, temperature: o.temperature, top_p: o.topP, seed: o.seed, stop: o.stop.length ? o.stop : undefined };
      try {
        if (o.json) {
          process.stdout.write(`${JSON.stringify(await client.complete(request))}\n`);
          return;
        }
        for await (const chunk of client.stream(request)) {
          if (chunk.text) process.stdout.write(chunk.text);
          if (chunk.gridpipe) {
            const g = chunk.gridpipe;
            process.stdout.write('\n');
            process.stderr.write(`route: ${g.route.map((r) => `${r.peerId.slice(-8)}[${r.fragments[0]}..${r.fragments[1]}]`).join(' → ')}`
              + `${g.failovers ? ` (${g.failovers} failover${g.failovers > 1 ? 's' : ''})` : ''}; ${chunk.usage?.completion_tokens ?? '?'} tokens, cost ${g.cost}, ${Math.round(g.latencyMs)} ms\n`);
            if (g.synthetic) process.stderr.write('note: a synthetic model with seeded weights: its output is noise, not language.\n');
          }
        }
      } catch (err) {
        if (err instanceof GridpipeApiError) {
          process.stderr.write(`gridpipe: error: ${err.status} ${err.message}\n`);
          process.exitCode = err.status >= 500 ? 1 : 2;
          return;
        }
        // fetch's own failure (connection refused, a bad port or host name): no gateway answers at the URL, a
        // run-time failure like an unreachable peer or RPC (exit 1).
        if (err instanceof TypeError && err.message === 'fetch failed') {
          const cause = (err as { cause?: { code?: string; message?: string } }).cause;
          const why = cause?.code === 'ECONNREFUSED' ? '' : cause?.message ? ` (${cause.message})` : '';
          throw new GridpipeError('GATEWAY_UNREACHABLE', `no gateway answers at ${o.url}${why} (start one with "gridpipe gateway")`, { cause: err });
        }
        throw err;
      }
    });
}
