/**
 * The ONNX schema that proto/onnx.ts loads (protobufjs JSON, generated ahead of time into
 * proto/onnx-schema.ts) is the one onnx-buf's descriptor gives: the committed file is what the generator
 * writes, and real exported models (PaddleOCR, Silero VAD with its If subgraphs) and a synthetic llama with
 * KV cache decode to the same messages and re-encode to the same bytes under both, so fragment CIDs
 * cannot change.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onnxRoot } from '../../proto/onnx.js';
import { onnxRootFromDescriptor, onnxSchemaModule, onnxSchemaPath } from '../../proto/onnx-schema-gen.js';
import { buildModel } from '../../fragments/builder/index.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { REPO_ROOT } from '../helpers/cli.js';

const REAL = ['ch_PP-OCRv4_det_infer.onnx', 'ch_ppocr_mobile_v2.0_cls_infer.onnx', 'silero_vad_legacy.onnx'];

const fromDescriptor = onnxRootFromDescriptor();

/** A decoded message as plain JSON (int64s as decimal strings, bytes as base64). */
const plain = (type: import('protobufjs').Type, message: import('protobufjs').Message): string =>
  JSON.stringify(type.toObject(message, { longs: String, bytes: String, defaults: false }));

function sameUnderBoth(bytes: Uint8Array): void {
  const generated = onnxRoot.lookupType('onnx.ModelProto');
  const reference = fromDescriptor.lookupType('onnx.ModelProto');
  const a = generated.decode(bytes);
  const b = reference.decode(bytes);
  expect(plain(generated, a)).toBe(plain(reference, b));
  expect(Buffer.from(generated.encode(a).finish()).equals(Buffer.from(reference.encode(b).finish()))).toBe(true);
}

describe('ONNX schema', () => {
  it('proto/onnx-schema.ts is what proto/onnx-schema-gen.ts writes from onnx-buf (regenerate after updating onnx-buf)', () => {
    expect(readFileSync(onnxSchemaPath(), 'utf8')).toBe(onnxSchemaModule());
  });

  it.each(REAL)('%s decodes and re-encodes the same under the generated schema and the descriptor', (file) => {
    sameUnderBoth(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'real', file)));
  });

  it('a synthetic llama with KV cache decodes and re-encodes the same under both', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'gridpipe-onnx-schema-'));
    try {
      const file = path.join(dir, 'llama.onnx');
      await writeModel(buildModel({ arch: 'llama', layers: 2, dModel: 32, heads: 4, kvHeads: 2, vocab: 64, kvCache: true, seed: 3 }), file);
      sameUnderBoth(await readFile(file));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
