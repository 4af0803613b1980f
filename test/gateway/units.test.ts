/** The gateway's pieces that need no grid: stop strings, keys and limits, tokenizers and chat templates, tensor framing. */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ort from 'onnxruntime-node';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { StopMatcher } from '../../gateway/stop.js';
import { RequestBudget } from '../../gateway/budget.js';
import { KeyRing, parseKeys, KeysFileError } from '../../gateway/keys.js';
import { SpendingLedger } from '../../gateway/spending.js';
import { ApiError } from '../../gateway/errors.js';
import { IncrementalDecoder, byteTextTokenizer, hfTextTokenizer } from '../../gateway/tokenizers/index.js';
import { tensorFromJson, tensorToJson, tensorsFromFrames, tensorsToFrames } from '../../gateway/tensors.js';
import { tempDir } from '../helpers/tmp.js';
import { writeTestTokenizer } from './fixtures.js';
import { runCli } from '../helpers/cli.js';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { cidOfFile } from '../../fragments/cid.js';

function statusOf(fn: () => unknown): number | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof ApiError ? err.status : -1;
  }
}

describe('StopMatcher', () => {
  it('finds a stop string split across pieces and never shows it', () => {
    const m = new StopMatcher(['END']);
    const shown = ['abc E', 'N', 'Dxyz'].map((p) => m.push(p)).join('');
    expect(shown).toBe('abc ');
    expect(m.done).toBe(true);
    expect(m.push('more')).toBe('');
  });

  it('releases held text that turned out not to start a stop string', () => {
    const m = new StopMatcher(['END', 'STOP']);
    expect(m.push('xx E')).toBe('xx ');
    expect(m.push('x')).toBe('Ex');
    expect(m.push('ST')).toBe('');
    expect(m.flush()).toBe('ST');
    expect(m.done).toBe(false);
  });

  it('stops at the earliest of several stop strings', () => {
    const m = new StopMatcher(['b', 'a']);
    expect(m.push('xxab')).toBe('xx');
  });
});

describe('KeyRing', () => {
  const spendTmp = tempDir();
  afterAll(() => spendTmp.cleanup());
  const keys = parseKeys({ keys: {
    'key-alpha-123': { name: 'alpha', requestsPerMinute: 2 },
    'key-beta-4567': { name: 'beta', budget: '10', tokensPerMinute: 5 },
  } });

  it('authenticates bearer keys and refuses missing or unknown ones with 401', () => {
    const ring = new KeyRing(keys);
    expect(ring.authenticate('Bearer key-alpha-123').name).toBe('alpha');
    expect(statusOf(() => ring.authenticate(undefined))).toBe(401);
    expect(statusOf(() => ring.authenticate('Bearer key-alpha-124'))).toBe(401);
    expect(statusOf(() => ring.authenticate('Basic key-alpha-123'))).toBe(401);
  });

  it('answers 429 with Retry-After past the request rate, and admits again after the minute', () => {
    let now = 1_000_000;
    const ring = new KeyRing(keys, () => now);
    const alpha = ring.authenticate('Bearer key-alpha-123');
    ring.admit(alpha);
    now += 10_000;
    ring.admit(alpha);
    let caught: ApiError | undefined;
    try { ring.admit(alpha); } catch (err) { caught = err as ApiError; }
    expect(caught?.status).toBe(429);
    expect(Number(caught?.headers['retry-after'])).toBe(50);
    now += 50_001;
    expect(() => ring.admit(alpha)).not.toThrow();
  });

  it('answers 429 past the token rate and 402 once the budget is spent', () => {
    let now = 0;
    const ring = new KeyRing(keys, () => now);
    const beta = ring.authenticate('Bearer key-beta-4567');
    ring.admit(beta);
    ring.charge(beta, 5, 4n);
    expect(statusOf(() => ring.admit(beta))).toBe(429);
    now += 61_000;
    ring.admit(beta);
    ring.charge(beta, 1, 6n);
    expect(beta.spent).toBe(10n);
    now += 61_000;
    expect(statusOf(() => ring.admit(beta))).toBe(402);
  });

  it('reserves budget for requests in flight: holds never pass the budget, and a request settles what it signed', () => {
    const ring = new KeyRing(keys);
    const beta = ring.authenticate('Bearer key-beta-4567');
    const first = new RequestBudget(ring, beta, 8n);
    const second = new RequestBudget(ring, beta, 8n);
    first.admit('the first request');
    second.admit('the second request');
    expect(ring.hold(beta, 6n)).toBe(true);
    expect(ring.remaining(beta)).toBe(4n);
    expect(ring.hold(beta, 5n)).toBe(false);
    expect(beta.held).toBe(6n);
    ring.release(beta, 6n);
    expect(ring.remaining(beta)).toBe(10n);
    // Settling turns what was signed into spending and gives the rest of the reservation back.
    expect(first.settle(3, 7n)).toBe(7n);
    expect(beta.spent).toBe(7n);
    expect(beta.held).toBe(0n);
    expect(statusOf(() => new RequestBudget(ring, beta, 4n).admit('a request'))).toBe(402);
    expect(() => new RequestBudget(ring, beta, 3n).admit('a request')).not.toThrow();
  });

  it('a failover\'s replay raises a request\'s ceiling by what it costs, at most one ceiling more in all', async () => {
    const ring = new KeyRing(parseKeys({ keys: { 'key-rich-0000000001': { name: 'rich' } } }));
    const key = ring.authenticate('Bearer key-rich-0000000001');
    const budget = new RequestBudget(ring, key, 10n);
    const payer = budget.wrap({ voucherFor: async () => ({}) as never })!;
    const payee = { peerId: 'P', stakingAddress: '0x0000000000000000000000000000000000000001', pricePerGflop: '1' };
    await payer.voucherFor(payee, 8n);
    await expect(payer.voucherFor(payee, 4n)).rejects.toMatchObject({ code: 'REQUEST_CEILING' }); // 12 > 10, no replay
    await payer.voucherFor(payee, 7n, { replay: 6n }); // 15 <= 10 + 6
    await expect(payer.voucherFor(payee, 6n, { replay: 6n })).rejects.toMatchObject({ code: 'REQUEST_CEILING' }); // replays capped at 10: 21 > 20
    await payer.voucherFor(payee, 5n, { replay: 5n }); // 20 <= 10 + 10
    expect(budget.signed).toBe(20n);
  });

  it('keeps what each key spent across a restart (a budget spent stays spent), stored by hash, never the secret', async () => {
    const dir = path.join(spendTmp.dir, 'spending');
    const first = await SpendingLedger.open(dir);
    const ring = new KeyRing(keys, () => 0);
    await ring.persistTo(first);
    const beta = ring.authenticate('Bearer key-beta-4567');
    ring.charge(beta, 1, 7n);
    ring.charge(beta, 1, 3n);
    await first.close();
    const stored = readdirSync(dir).map((f) => readFileSync(path.join(dir, f))).map((b) => b.toString('latin1')).join('');
    expect(stored).not.toContain('key-beta-4567');

    const second = await SpendingLedger.open(dir);
    const again = new KeyRing(keys, () => 0);
    await again.persistTo(second);
    const betaAgain = again.authenticate('Bearer key-beta-4567');
    expect(betaAgain.spent).toBe(10n);
    expect(statusOf(() => again.admit(betaAgain))).toBe(402);
    expect(again.authenticate('Bearer key-alpha-123').spent).toBe(0n);
    await expect(SpendingLedger.open(dir)).rejects.toMatchObject({ code: 'LOCKED' });
    await second.close();
  });

  it('open access when no keys are given', () => {
    const ring = new KeyRing();
    expect(ring.open).toBe(true);
    expect(ring.authenticate(undefined).name).toBe('open');
  });

  it('rejects a keys file with bad entries, naming them', () => {
    expect(() => parseKeys({ keys: { 'key-x-000000': { name: 'x', budget: '-5' } } })).toThrow(/x: budget/);
    expect(() => parseKeys({ keys: { short: { name: 'y' } } })).toThrow(KeysFileError);
    expect(() => parseKeys({ keys: { 'key-z-000000': { name: 'z', requestsPerMinute: 0 } } })).toThrow(/requestsPerMinute/);
    expect(() => parseKeys([])).toThrow(KeysFileError);
  });
});

describe('tokenizers', () => {
  it('the byte tokenizer decodes a multi-byte character split over tokens only once whole', async () => {
    const t = byteTextTokenizer();
    const ids = t.encode('añb');
    expect(ids).toEqual([0x61, 0xc3, 0xb1, 0x62]);
    const d = new IncrementalDecoder(t);
    expect(ids.map((id) => d.push(id))).toEqual(['a', '', 'ñ', 'b']);
    expect(await t.chat([{ role: 'user', content: 'hi' }])).toBe('user: hi\nassistant:');
  });

  it('a Hugging Face tokenizer.json with its chat template and EOS', async () => {
    const tmp = tempDir();
    try {
      const { tokenizerFile, eosId } = writeTestTokenizer(tmp.dir);
      const json = JSON.parse(readFileSync(tokenizerFile, 'utf8'));
      const config = JSON.parse(readFileSync(path.join(tmp.dir, 'tokenizer_config.json'), 'utf8'));
      const t = hfTextTokenizer(json, config);
      const ids = t.encode(' the cat', false);
      expect(ids[0]).toBe(261); // "Ġthe": the merges applied
      expect(t.decode(ids)).toBe(' the cat');
      expect(t.stopIds).toEqual([eosId]);
      const prompt = await t.chat([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }]);
      expect(prompt).toBe('<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n');
      const encoded = t.encode(prompt, false);
      expect(encoded[0]).toBe(256); // <|im_start|> as one special token
      expect(encoded.filter((id) => id === eosId)).toHaveLength(2);
    } finally {
      tmp.cleanup();
    }
  });

  it('incremental pieces always add up to the decode of the whole sequence (bytes and a BPE tokenizer)', () => {
    const tmp = tempDir();
    try {
      const { tokenizerFile } = writeTestTokenizer(tmp.dir);
      const hf = hfTextTokenizer(JSON.parse(readFileSync(tokenizerFile, 'utf8')), JSON.parse(readFileSync(path.join(tmp.dir, 'tokenizer_config.json'), 'utf8')));
      const texts = ['', ' the cat sat', 'ñandú 🐈 naïve', 'a\u00a0b  c\n\td'];
      for (const t of [byteTextTokenizer(), hf]) {
        fc.assert(fc.property(fc.constantFrom(...texts), fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 40 }), fc.boolean(), (text, noise, useNoise) => {
          // Real encodings, and arbitrary id sequences (split multi-byte characters, invalid bytes, unknown ids).
          const ids = useNoise ? noise.filter((id) => t === hf || id < 256) : t.encode(text, false);
          const d = new IncrementalDecoder(t);
          const pieces = ids.map((id) => d.push(id)).join('') + d.flush();
          expect(pieces).toBe(t.decode(ids));
        }), { numRuns: 200 });
      }
    } finally {
      tmp.cleanup();
    }
  });
});

describe('tensor encodings', () => {
  it('binary frames round-trip names, dtypes, dims and bytes', () => {
    const tensors = {
      pixel_values: new ort.Tensor('float32', Float32Array.from([1.5, -2, 3.25, 0]), [1, 2, 2]),
      ids: new ort.Tensor('int64', BigInt64Array.from([1n, -7n, 9007199254740993n]), [3]),
    };
    const back = tensorsFromFrames(tensorsToFrames(tensors));
    expect(Object.keys(back)).toEqual(['pixel_values', 'ids']);
    expect(back.pixel_values.dims).toEqual([1, 2, 2]);
    expect(Array.from(back.pixel_values.data as Float32Array)).toEqual([1.5, -2, 3.25, 0]);
    expect(Array.from(back.ids.data as BigInt64Array)).toEqual([1n, -7n, 9007199254740993n]);
    expect(tensorToJson(back.ids).data).toEqual([1, -7, '9007199254740993']);
  });

  it('malformed binary and JSON tensors are 400s', () => {
    const good = tensorsToFrames({ x: new ort.Tensor('float32', new Float32Array(4), [4]) });
    expect(statusOf(() => tensorsFromFrames(good.subarray(0, good.length - 3)))).toBe(400);
    expect(statusOf(() => tensorsFromFrames(Buffer.from([0, 0])))).toBe(400);
    expect(statusOf(() => tensorFromJson('x', { dtype: 'float32', dims: [2], data: [1] }))).toBe(400);
    expect(statusOf(() => tensorFromJson('x', { dtype: 'complex', dims: [1], data: [1] }))).toBe(400);
    expect(statusOf(() => tensorFromJson('x', { dtype: 'int64', dims: [1], data: [1.5] }))).toBe(400);
    expect(tensorFromJson('x', { dtype: 'float', dims: [2], data: [1, 2] }).type).toBe('float32');
  });
});

describe('gridpipe model fragment --tokenizer', () => {
  it('ships tokenizer.json and tokenizer_config.json content addressed, and records the context length', async () => {
    const tmp = tempDir();
    try {
      const { tokenizerFile, vocabSize } = writeTestTokenizer(path.join(tmp.dir, 'tok'));
      const model = path.join(tmp.dir, 'm.onnx');
      await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 16, heads: 2, vocab: vocabSize, maxPositions: 48, seed: 1 }), model);
      const out = path.join(tmp.dir, 'frags');
      const r = await runCli(['model', 'fragment', model, '--parts', '2', '--out', out, '--tokenizer', tokenizerFile, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const { manifest } = JSON.parse(r.stdout);
      expect(manifest.tokenizer).toMatchObject({ kind: 'hf', file: 'tokenizer.json', config: { file: 'tokenizer_config.json' } });
      expect(manifest.tokenizer.cid).toBe(await cidOfFile(path.join(out, 'tokenizer.json')));
      expect(manifest.tokenizer.config.cid).toBe(await cidOfFile(path.join(out, 'tokenizer_config.json')));
      expect(manifest.model.contextLength).toBe(48);
      const missing = await runCli(['model', 'fragment', model, '--parts', '2', '--out', path.join(tmp.dir, 'x'), '--tokenizer', path.join(tmp.dir, 'nope.json')]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/--tokenizer .*no such file/);
    } finally {
      tmp.cleanup();
    }
  });
});
