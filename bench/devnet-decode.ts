/**
 * Decode speed of a running devnet: paid decode through its gateway (the developer's path: API key, budget,
 * vouchers to the staked suppliers) against one onnxruntime session of the same demo model in this process,
 * alternated in rounds. Decode time is the difference between a request for 1 + DECODE tokens and one for 1
 * token with the same prompt, so the prefill cancels out on both sides.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { DEMO_MODELS } from '../cli/devnet/demo-model.js';
import { readManifest } from '../fragments/manifest-file.js';
import { generate } from '../scheduler/generate.js';
import { LocalModelRunner } from '../scheduler/local-runner.js';
import { median } from './stats.js';

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + ((i * 7) % 200));
const DECODE = 32;

export interface DevnetDecode { paidTokensPerS: number; monoTokensPerS: number; rounds: number }

interface DevnetInfo { gatewayUrl: string; apiKey: string; model: string }

/** Seconds for one non-streamed completion of up to `maxTokens`, and the tokens it produced. */
async function completion(info: DevnetInfo, maxTokens: number): Promise<{ s: number; tokens: number }> {
  const started = performance.now();
  const res = await fetch(`${info.gatewayUrl}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${info.apiKey}` },
    body: JSON.stringify({ model: info.model, prompt: PROMPT, max_tokens: maxTokens, temperature: 0 }),
  });
  const body = (await res.json()) as { usage?: { completion_tokens: number }; error?: { message: string } };
  if (!res.ok || !body.usage) throw new Error(`devnet completion failed (${res.status}): ${body.error?.message ?? JSON.stringify(body)}`);
  return { s: (performance.now() - started) / 1000, tokens: body.usage.completion_tokens };
}

/** Decode tokens/s of the devnet in `dataDir` (paid, through its gateway) and of its model run whole here; `suppliers` names its fragment folder. */
export async function devnetDecode(dataDir: string, model: string, suppliers: number, rounds = 3): Promise<DevnetDecode> {
  const info = JSON.parse(await readFile(path.join(dataDir, 'devnet.json'), 'utf8')) as DevnetInfo;
  const spec = DEMO_MODELS[model];
  if (!spec) throw new Error(`the devnet decode bench needs a demo model (tiny, small, moe), not ${model}`);
  const { manifest } = await readManifest(path.join(dataDir, 'models', `${spec.name}-${suppliers}`));
  const mono = await LocalModelRunner.open(path.join(dataDir, `${spec.name}.onnx`), manifest.statefulPairs);
  const inputNames = manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
  const monoDecodeS = async (): Promise<number> => {
    let last = 0;
    const gaps: number[] = [];
    for await (const _ of generate(mono, { promptIds: PROMPT, maxTokens: DECODE + 1, kvCache: true, inputNames })) {
      const now = performance.now();
      if (last) gaps.push(now - last);
      last = now;
    }
    return gaps.reduce((a, b) => a + b, 0) / 1000;
  };
  try {
    await completion(info, 2); // warm-up: sessions opened, first vouchers signed
    await monoDecodeS();
    const paid: number[] = [];
    const whole: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const one = await completion(info, 1);
      const many = await completion(info, DECODE + 1);
      paid.push((many.tokens - one.tokens) / (many.s - one.s));
      whole.push(DECODE / (await monoDecodeS()));
    }
    return { paidTokensPerS: median(paid), monoTokensPerS: median(whole), rounds };
  } finally {
    await mono.close();
  }
}
