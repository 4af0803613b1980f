/** What the devnet tells its user once it is up: a check request through the gateway, then how to call it (also in devnet.json). */
import { GridpipeError } from '../../errors/base.js';

export interface DevnetInfo {
  /** The OpenAI-compatible base URL (ends in /v1). */
  gatewayUrl: string;
  /** The network explorer's page (served by the gateway). */
  explorerUrl?: string;
  apiKey: string;
  model: string;
  /** What the model is, in words (trained on the KJV, synthetic, or the user's own). */
  modelLabel: string;
  rpcUrl: string;
  chainConfig: string;
  /** The environment setting that unlocks the devnet's keystores. */
  passphraseEnv: string;
  developer: { address: string; wallet: string };
  bootstrap: string;
  manifestCid: string;
  fragmentDir: string;
  pid: number;
  gatewayPid?: number;
  anvilPid: number;
  suppliers: {
    peerId: string; address: string; fragments: number[]; pid?: number; admin?: string;
    stakingAddress: string; wallet: string; data: string;
  }[];
}

const CHECK_TIMEOUT_MS = 60_000;

/** The check request's prompt: the opening of a verse (the trained model continues it; any tokenizer takes it). */
export const CHECK_PROMPT = 'And God said,';

/**
 * Sends one completion through the gateway (seeded, with the model's default sampling: generation_config.json
 * for the trained model), retrying while the model is not servable yet; returns a line with its text.
 */
export async function checkRequest(gatewayUrl: string, apiKey: string, model: string): Promise<string> {
  const deadline = Date.now() + CHECK_TIMEOUT_MS;
  for (;;) {
    const res = await fetch(`${gatewayUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({ model, prompt: CHECK_PROMPT, max_tokens: 16, seed: 1 }),
    });
    const body = await res.json() as {
      choices?: { text: string }[]; usage?: { completion_tokens: number };
      gridpipe?: { route?: { peerId: string; fragments: [number, number] }[]; cost?: string }; error?: { message: string };
    };
    if (res.ok) {
      const route = (body.gridpipe?.route ?? []).map((h) => `${h.peerId.slice(-6)}[${h.fragments[0]}..${h.fragments[1]}]`).join(' → ');
      const text = JSON.stringify(`${CHECK_PROMPT}${body.choices?.[0]?.text ?? ''}`);
      return `generated ${body.usage?.completion_tokens ?? '?'} tokens through ${route}${body.gridpipe?.cost ? `, cost ${body.gridpipe.cost} base units` : ''}: ${text}`;
    }
    const last = `${res.status} ${body.error?.message ?? ''}`;
    // 404/503: the gateway has not seen every fragment's host yet; anything else is a real failure.
    if ((res.status !== 404 && res.status !== 503) || Date.now() > deadline) throw new GridpipeError('DEVNET_CHECK_FAILED', `the check request through the gateway failed: ${last}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Shell-quotes a string with single quotes. */
const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The ready-to-paste requests: curl, the openai client, the CLI. */
export function usageCommands(info: DevnetInfo): { curl: string; openai: string; call: string; earnings: string } {
  const body = JSON.stringify({ model: info.model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 16 });
  const curl = `curl -s ${info.gatewayUrl}/chat/completions -H ${quote(`Authorization: Bearer ${info.apiKey}`)} -H 'Content-Type: application/json' -d ${quote(body)}`;
  const script = [
    `import OpenAI from "openai";`,
    `const client = new OpenAI({ baseURL: "${info.gatewayUrl}", apiKey: "${info.apiKey}" });`,
    `const stream = await client.chat.completions.create({ model: "${info.model}", messages: [{ role: "user", content: "Hello" }], max_tokens: 16, stream: true });`,
    `for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");`,
  ].join(' ');
  const openai = `node --input-type=module -e ${quote(script)}`;
  const call = `npx gridpipe call --url ${info.gatewayUrl} --key ${info.apiKey} --model ${info.model} "Hello"`;
  const s = info.suppliers[0];
  const earnings = `npx gridpipe earnings --admin ${s?.admin ?? 'URL'} --data ${s?.data ?? 'DIR'} --chain-config ${info.chainConfig}`;
  return { curl, openai, call, earnings };
}

/** Prints the URLs, the key and the ready-to-paste requests. */
export function printUsage(info: DevnetInfo, infoFile: string, say: (line: string) => void): void {
  const c = usageCommands(info);
  say('');
  say(`gateway (OpenAI-compatible): ${info.gatewayUrl}`);
  if (info.explorerUrl) say(`explorer (open in a browser): ${info.explorerUrl}`);
  say(`API key:                     ${info.apiKey}`);
  say(`model:                       ${info.model} (${info.modelLabel})`);
  say(`metrics / live feed:         ${info.gatewayUrl.replace(/\/v1$/, '')}/metrics  ${info.gatewayUrl}/feed`);
  say(`chain:                       ${info.rpcUrl} (contracts in ${info.chainConfig}; wallets need ${info.passphraseEnv})`);
  say('');
  say('with curl:');
  say(`  ${c.curl}`);
  say('with the openai client (from this folder):');
  say(`  ${c.openai}`);
  say('with the gridpipe CLI:');
  say(`  ${c.call}`);
  say('a supplier\'s earnings:');
  say(`  ${c.earnings}`);
  say(`details for scripts: ${infoFile}`);
}
