/**
 * `gridpipe generate`: run a model across the grid and print tokens as they come, with the route taken. Text in
 * and out goes through the model's own tokenizer, loaded as the gateway loads it (gateway/tokenizers: byte, or
 * the Hugging Face tokenizer.json the manifest names, from the model's folder or fetched from its hosts by CID).
 */
import { existsSync, statSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { GridClient, OpenModel } from '../scheduler/client.js';
import type { TextTokenizer } from '../gateway/tokenizers/index.js';
import { collect, nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { UsageError } from './errors.js';
import { GridpipeError } from '../errors/base.js';

/** --manifest is a folder or a manifest CID: said before joining the grid (which can take --wait seconds). */
async function checkModelSource(source: string): Promise<void> {
  if (existsSync(source) && statSync(source).isDirectory()) return;
  const { parseBlobCid } = await import('../net/store/fragment-store.js');
  try {
    parseBlobCid(source);
  } catch {
    throw new UsageError(`--manifest ${source}: neither a fragment folder nor a manifest CID`);
  }
}

/** The generate command. */
export function generateCommand(): Command {
  return new Command('generate')
    .description('Generate tokens with a model served by the grid; prints tokens as they come and the route')
    .requiredOption('--manifest <dir-or-cid>', 'fragment folder or manifest CID of the model')
    .option('--prompt-ids <ids>', 'prompt as token ids, e.g. 1,2,3')
    .option('--prompt <text>', 'prompt as text, through the model\'s tokenizer (byte or Hugging Face)')
    .option('--max-tokens <n>', 'tokens to generate', positiveInt, 16)
    .option('--temperature <t>', '0 = greedy', (v: string) => Number(v), 0)
    .option('--top-p <p>', 'nucleus sampling', positiveNumber)
    .option('--top-k <k>', 'top-k sampling', positiveInt)
    .option('--seed <n>', 'sampling seed', nonNegativeInt, 0)
    .option('--bootstrap <multiaddr>', 'peer to join through (repeatable)', collect, [])
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--listen <multiaddr>', 'libp2p address to listen on (repeatable; a reachable one lets suppliers behind NAT connect back directly)', collect, [])
    .option('--wait <seconds>', 'how long to wait to join the grid, and for hosts of every fragment', positiveNumber, 30)
    .option('--strict-experts', 'mixture-of-experts models: fail, naming the expert, when a token\'s chosen expert has no live server (default: its next-ranked expert stands in)', false)
    .addOption(new Option('--route-mode <mode>', 'star: the client relays every tensor; chain: each supplier forwards to the next, the last answers; auto: chain where measured round trips say it saves time').choices(['star', 'chain', 'auto']).default('star'))
    .addOption(new Option('--wire-encoding <encoding>', 'how activations travel: exact (the model\'s dtype), fp16, int8 (blocks), or auto (compress where the measured link makes transfer dominate)').choices(['exact', 'fp16', 'int8', 'auto']).default('exact'))
    .option('--json', 'one JSON line per token, then a summary', false)
    .action(async (o: {
      manifest: string; promptIds?: string; prompt?: string; maxTokens: number; temperature: number; topP?: number; topK?: number;
      seed: number; bootstrap: string[]; network: string; listen: string[]; wait: number; json: boolean; strictExperts: boolean; routeMode: 'star' | 'chain' | 'auto'; wireEncoding: 'exact' | 'fp16' | 'int8' | 'auto';
    }) => {
      // The grid client (libp2p, onnxruntime) loads here, not with the command tree.
      const { vocabSize } = await import('../fragments/manifest.js');
      const { GridClient } = await import('../scheduler/client.js');
      const { generate } = await import('../scheduler/generate.js');
      const { IncrementalDecoder } = await import('../gateway/tokenizers/index.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      if (!o.bootstrap.length) throw new UsageError('give at least one --bootstrap address to join the grid through');
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      checkMultiaddrs('--listen', o.listen);
      if ((o.promptIds === undefined) === (o.prompt === undefined)) throw new UsageError('give exactly one of --prompt-ids or --prompt');
      if (!(o.temperature >= 0)) throw new UsageError(`--temperature must be >= 0, got ${o.temperature}`);
      await checkModelSource(o.manifest);
      const waitMs = o.wait * 1000;
      const client = await GridClient.connect({ bootstrap: o.bootstrap, network: chooseNetwork(o.network, o.bootstrap), joinTimeoutMs: waitMs, listen: o.listen });
      try {
        if (client.host.routingTableSize() === 0) throw new GridpipeError('NO_PEERS', `no peer answered at ${o.bootstrap.join(', ')} within ${o.wait} s`);
        const model = await client.openModel(o.manifest, waitMs);
        const tokenizer = await modelTokenizer(client, model, o.manifest, o.prompt !== undefined);
        let promptIds: number[];
        if (o.promptIds !== undefined) {
          promptIds = o.promptIds.split(',').map((x) => {
            const n = Number(x.trim());
            if (!Number.isInteger(n) || n < 0) throw new UsageError(`--prompt-ids takes whole numbers like 1,2,3, got "${o.promptIds}"`);
            return n;
          });
        } else {
          if (!tokenizer) throw new UsageError(`this model's tokenizer (${model.manifest.tokenizer.kind}) is not available here; use --prompt-ids`);
          promptIds = tokenizer.encode(o.prompt!);
        }
        const kvCache = model.manifest.statefulPairs.length > 0;
        const session = client.session(model, promptIds.length + o.maxTokens, { strictExperts: o.strictExperts, routeMode: o.routeMode, wireEncoding: o.wireEncoding });
        // Mixture-of-experts models: expert calls and fallbacks, summed over the steps.
        const experts = { calls: 0, fallbacks: 0 };
        const counted = { step: async (...a: Parameters<typeof session.step>) => {
          const r = await session.step(...a);
          experts.calls += r.experts?.hops.length ?? 0;
          experts.fallbacks += r.experts?.fallbacks.reduce((n, f) => n + f.tokens, 0) ?? 0;
          return r;
        } };
        const ids: number[] = [];
        // Text as the gateway streams it: a character split over tokens is held back until it is whole.
        const decoder = tokenizer && new IncrementalDecoder(tokenizer);
        try {
          for await (const token of generate(counted, {
            promptIds, maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, topK: o.topK, seed: o.seed, kvCache, vocabSize: vocabSize(model.manifest),
            inputNames: model.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
            stopTokens: [...(tokenizer?.stopIds ?? []), ...(model.manifest.generation?.eosTokenIds ?? [])],
          })) {
            ids.push(token.id);
            if (o.json) process.stdout.write(`${JSON.stringify({ token: token.id, position: token.position, text: tokenizer?.decode([token.id]) })}\n`);
            else process.stdout.write(decoder ? decoder.push(token.id) : `${token.id} `);
          }
          if (decoder && !o.json) process.stdout.write(decoder.flush());
        } finally {
          await session.close();
        }
        const route = session.route.map((r) => ({ peerId: r.peerId, fragments: [r.start, r.end - 1], connection: client.connectionKind(r.peerId), wireEncoding: r.wireEncoding }));
        const moe = model.manifest.fragments.some((f) => f.moe) ? { experts } : {};
        if (o.json) process.stdout.write(`${JSON.stringify({ done: true, tokens: ids, route, failovers: session.failovers, chainedSteps: session.chainedSteps, synthetic: model.manifest.model.synthetic, ...moe })}\n`);
        else {
          process.stdout.write('\n');
          process.stderr.write(`route: ${route.map((r) => `${r.peerId.slice(-8)}[${r.fragments[0]}..${r.fragments[1]}]${r.connection === 'relayed' ? ' (relayed)' : ''}`).join(' → ')}${session.failovers ? ` (${session.failovers} failover${session.failovers > 1 ? 's' : ''})` : ''}\n`);
          if (moe.experts) process.stderr.write(`experts: ${experts.calls} router and expert calls, ${experts.fallbacks} token(s) fell back to a next-ranked expert\n`);
          if (model.manifest.model.synthetic) process.stderr.write('note: a synthetic model with seeded weights: its output is noise, not language.\n');
        }
      } finally {
        await client.close();
      }
    });
}

/**
 * The model's tokenizer (undefined when its manifest names none). With `required` (a text prompt) a tokenizer
 * that cannot be loaded is an error; otherwise the tokens are printed as ids, with a note on stderr.
 */
async function modelTokenizer(client: GridClient, model: OpenModel, source: string, required: boolean): Promise<TextTokenizer | undefined> {
  const { kind } = model.manifest.tokenizer;
  if (kind !== 'byte' && kind !== 'hf') {
    if (required) throw new UsageError(`this model's tokenizer (${kind}) is not available here; use --prompt-ids`);
    return undefined;
  }
  const { loadTokenizer } = await import('../gateway/tokenizers/index.js');
  const { tokenizerFileReader } = await import('../gateway/tokenizers/files.js');
  const read = tokenizerFileReader({
    sourceDir: existsSync(source) && statSync(source).isDirectory() ? source : undefined,
    fetch: (f) => client.fetchTokenizerFile(f, model.discovery.current),
  });
  try {
    return await loadTokenizer(model.manifest, read);
  } catch (err) {
    // An expected failure (files missing or corrupt everywhere): one line, exit 1.
    if (required) throw new GridpipeError('TOKENIZER_UNAVAILABLE', `cannot encode --prompt: ${(err as Error).message}`, { cause: err });
    process.stderr.write(`gridpipe: note: the model's tokenizer could not be loaded (${(err as Error).message}); printing token ids\n`);
    return undefined;
  }
}
