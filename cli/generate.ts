/** `gridpipe generate`: run a model across the grid and print tokens as they come, with the route taken. */
import { Command, Option } from 'commander';
import { collect, nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { UsageError } from './errors.js';

/** The generate command. */
export function generateCommand(): Command {
  return new Command('generate')
    .description('Generate tokens with a model served by the grid; prints tokens as they come and the route')
    .requiredOption('--manifest <dir-or-cid>', 'fragment folder or manifest CID of the model')
    .option('--prompt-ids <ids>', 'prompt as token ids, e.g. 1,2,3')
    .option('--prompt <text>', 'prompt as text (models with a tokenizer the client knows)')
    .option('--max-tokens <n>', 'tokens to generate', positiveInt, 16)
    .option('--temperature <t>', '0 = greedy', (v: string) => Number(v), 0)
    .option('--top-p <p>', 'nucleus sampling', positiveNumber)
    .option('--top-k <k>', 'top-k sampling', positiveInt)
    .option('--seed <n>', 'sampling seed', nonNegativeInt, 0)
    .option('--bootstrap <multiaddr>', 'peer to join through (repeatable)', collect, [])
    .addOption(new Option('--network <kind>', 'DHT flavour').choices(['auto', 'local', 'public']).default('auto'))
    .option('--json', 'one JSON line per token, then a summary', false)
    .action(async (o: {
      manifest: string; promptIds?: string; prompt?: string; maxTokens: number; temperature: number; topP?: number; topK?: number;
      seed: number; bootstrap: string[]; network: string; json: boolean;
    }) => {
      // The grid client (libp2p, onnxruntime) loads here, not with the command tree.
      const { vocabSize } = await import('../fragments/manifest.js');
      const { GridClient } = await import('../scheduler/client.js');
      const { generate } = await import('../scheduler/generate.js');
      const { tokenizerFor } = await import('../gateway/tokenizers/byte.js');
      const { checkMultiaddrs, chooseNetwork } = await import('./network.js');
      if (!o.bootstrap.length) throw new UsageError('give at least one --bootstrap address to join the grid through');
      checkMultiaddrs('--bootstrap', o.bootstrap, true);
      if ((o.promptIds === undefined) === (o.prompt === undefined)) throw new UsageError('give exactly one of --prompt-ids or --prompt');
      if (!(o.temperature >= 0)) throw new UsageError(`--temperature must be >= 0, got ${o.temperature}`);
      const client = await GridClient.connect({ bootstrap: o.bootstrap, network: chooseNetwork(o.network, o.bootstrap) });
      try {
        const model = await client.openModel(o.manifest);
        const tokenizer = tokenizerFor(model.manifest.tokenizer.kind);
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
        const session = client.session(model, promptIds.length + o.maxTokens);
        const ids: number[] = [];
        try {
          for await (const token of generate(session, {
            promptIds, maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, topK: o.topK, seed: o.seed, kvCache, vocabSize: vocabSize(model.manifest),
            inputNames: model.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values')),
          })) {
            ids.push(token.id);
            if (o.json) process.stdout.write(`${JSON.stringify({ token: token.id, position: token.position, text: tokenizer?.decode([token.id]) })}\n`);
            else process.stdout.write(tokenizer ? tokenizer.decode([token.id]) : `${token.id} `);
          }
        } finally {
          await session.close();
        }
        const route = session.route.map((r) => ({ peerId: r.peerId, fragments: [r.start, r.end - 1] }));
        if (o.json) process.stdout.write(`${JSON.stringify({ done: true, tokens: ids, route, failovers: session.failovers, synthetic: model.manifest.model.synthetic })}\n`);
        else {
          process.stdout.write('\n');
          process.stderr.write(`route: ${route.map((r) => `${r.peerId.slice(-8)}[${r.fragments[0]}..${r.fragments[1]}]`).join(' → ')}${session.failovers ? ` (${session.failovers} failover${session.failovers > 1 ? 's' : ''})` : ''}\n`);
          if (model.manifest.model.synthetic) process.stderr.write('note: a synthetic model with seeded weights: its output is noise, not language.\n');
        }
      } finally {
        await client.close();
      }
    });
}
