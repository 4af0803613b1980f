/**
 * ONNX read/write: a model round-trips through embedded and external data with identical outputs; large Constants
 * become initializers and typed float_data weights read back.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { writeFileSync, statSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { onnx, type ModelProto } from '../../proto/onnx.js';
import { buildModel } from '../../fragments/builder/index.js';
import { readModel } from '../../fragments/onnx/read.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { DataType } from '../../fragments/onnx/dtype.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

async function run(file: string, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(file);
  try { return await session.run(feeds); } finally { await session.release(); }
}

const ids = (n: number): Record<string, ort.Tensor> => ({
  input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 37) % 256)), [1, n]),
  attention_mask: new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => 1n), [1, n]),
  position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(i)), [1, n]),
});

describe('ONNX read/write', () => {
  it('round-trips a model, embedded → external data → embedded, with identical outputs', async () => {
    const a = path.join(tmp.dir, 'a.onnx');
    await writeModel(buildModel({ arch: 'gpt', layers: 2, dModel: 64, heads: 4, kvCache: false, seed: 9 }), a);
    const doc = readModel(a);
    // Large weights stay on disk as byte ranges of the model file.
    const big = doc.graph.initializer.filter((w) => (w.bytes?.kind === 'file'));
    expect(big.length).toBeGreaterThan(0);
    for (const w of big) expect(w.bytes).toMatchObject({ kind: 'file', path: a });

    const b = path.join(tmp.dir, 'b.onnx');
    const written = await writeModel(doc, b, { externalData: 'always' });
    expect(written.data?.bytes).toBeGreaterThan(0);
    expect(statSync(b).size).toBeLessThan(statSync(a).size / 4);
    const docB = readModel(b);
    expect(docB.graph.initializer.some((w) => w.bytes?.kind === 'file' && w.bytes.path === `${b}.data`)).toBe(true);

    const c = path.join(tmp.dir, 'c.onnx');
    await writeModel(docB, c, { externalData: 'never' });
    const [ra, rb, rc] = await Promise.all([run(a, ids(6)), run(b, ids(6)), run(c, ids(6))]);
    expect(Array.from(rb.logits.data as Float32Array)).toEqual(Array.from(ra.logits.data as Float32Array));
    expect(Array.from(rc.logits.data as Float32Array)).toEqual(Array.from(ra.logits.data as Float32Array));
  });

  it('turns a large Constant node into an initializer and reads typed float_data weights', async () => {
    // y = x @ C + B where C (128 x 256 floats, 128 KiB) is a Constant node and B has float_data fields.
    const c = Float32Array.from({ length: 128 * 256 }, (_, i) => Math.sin(i) * 0.1);
    const bias = Array.from({ length: 256 }, (_, i) => i / 256);
    const model: ModelProto = {
      irVersion: 7,
      opsetImport: [{ domain: '', version: 13 }],
      producerName: 'tf2onnx-shaped',
      graph: {
        name: 'constants',
        node: [
          { opType: 'Constant', output: ['C:0'], name: 'const_C', attribute: [{ name: 'value', type: 4, t: { dims: [128, 256], dataType: DataType.FLOAT, rawData: new Uint8Array(c.buffer) } }] },
          { opType: 'MatMul', input: ['x', 'C:0'], output: ['xc'], name: 'mm' },
          { opType: 'Add', input: ['xc', 'B'], output: ['y'], name: 'add' },
        ],
        initializer: [{ name: 'B', dims: [256], dataType: DataType.FLOAT, floatData: bias }],
        input: [{ name: 'x', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: 'n' }, { dimValue: 128 }] } } } }],
        output: [{ name: 'y', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: 'n' }, { dimValue: 256 }] } } } }],
      },
    };
    const original = path.join(tmp.dir, 'constants.onnx');
    writeFileSync(original, onnx.ModelProto.encode(model));
    const doc = readModel(original);
    expect(doc.graph.node.map((n) => n.opType)).toEqual(['MatMul', 'Add']);
    const names = doc.graph.initializer.map((w) => w.header.name);
    expect(names).toEqual(expect.arrayContaining(['B', 'C:0']));
    expect(doc.graph.initializer.find((w) => w.header.name === 'C:0')?.bytes?.kind).toBe('file');
    expect(doc.graph.initializer.find((w) => w.header.name === 'B')?.bytes?.kind).toBe('inline');

    const rewritten = path.join(tmp.dir, 'constants-rewritten.onnx');
    await writeModel(doc, rewritten);
    const x = new ort.Tensor('float32', Float32Array.from({ length: 2 * 128 }, (_, i) => Math.cos(i)), [2, 128]);
    const [r1, r2] = await Promise.all([run(original, { x }), run(rewritten, { x })]);
    expect(Array.from(r2.y.data as Float32Array)).toEqual(Array.from(r1.y.data as Float32Array));
  });
});
