/**
 * Asymmetric blocks (a zero point per block) and per-role precision, run by onnxruntime-node itself: a small graph
 * (token table Gather → LM head MatMul to `logits`) quantized with zero points on both, then checked against
 * the same computation on the weights dequantized in JS, so the zero points' byte layout is the one the ops read.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { GraphBuilder, makeModel } from '../../fragments/builder/graph-builder.js';
import { DataType } from '../../fragments/onnx/dtype.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { dequantizeRows, quantizeRows, transpose } from '../../fragments/quantize/blockwise.js';
import { quantizeFragmentDoc } from '../../fragments/quantize/rewrite.js';
import { INT4_DEFAULT, precisionFor, resolveScheme } from '../../fragments/quantize/scheme.js';
import { seededRandom } from '../../fragments/seeded-random.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-zero-points-');
afterAll(() => tmp.cleanup());

const VOCAB = 40;
const D = 64;
const OUT = 48;

/** Skewed seeded values (mostly positive), where a zero point pays: a symmetric block wastes half its levels. */
function skewed(count: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: count }, () => random() * 0.2 - 0.03);
}

describe('int4 default: per-role precision with zero points', () => {
  it('resolves int4 without a block to the per-role default, and a given block to one precision for all', () => {
    const q = resolveScheme('int4');
    expect(q).toEqual(INT4_DEFAULT);
    expect(precisionFor(q, 'head')).toEqual({ bits: 4, block: 32, asymmetric: true });
    expect(precisionFor(q, 'positions')).toEqual({ bits: 8, block: 128 });
    expect(precisionFor(q, 'tokens')).toEqual({ bits: 4, block: 64 });
    expect(precisionFor(q, 'layer')).toEqual({ bits: 4, block: 64 });
    expect(resolveScheme('int4', 64)).toEqual({ scheme: 'int4', bits: 4, block: 64 });
    expect(precisionFor(resolveScheme('int4', 64), 'tokens')).toEqual({ bits: 4, block: 64 });
  });

  it('onnxruntime computes GatherBlockQuantized and MatMulNBits with zero points as the dequantized weights say', async () => {
    const table = skewed(VOCAB * D, 1);
    const head = skewed(D * OUT, 2); // [K = D, N = OUT], as a MatMul weight
    const g = new GraphBuilder('zero-points');
    g.input('input_ids', DataType.INT64, [1, 'seq']);
    g.initializer('table', [VOCAB, D], table);
    g.initializer('head', [D, OUT], head);
    const hidden = g.op('Gather', ['table', 'input_ids'], { attrs: { axis: 0 } });
    g.op('MatMul', [hidden, 'head'], { output: 'logits' });
    g.output('logits', DataType.FLOAT, [1, 'seq', OUT]);
    // int4's default gives the head zero points; the token table gets them here too, so both ops' layouts are checked.
    const scheme = { ...resolveScheme('int4'), roles: { ...INT4_DEFAULT.roles, tokens: { bits: 4, block: 16, asymmetric: true } } } as const;
    const { doc, report } = quantizeFragmentDoc(makeModel(g.build()), scheme);
    expect(report.replaced).toEqual({ Gather: 1, MatMul: 1 });
    const names = doc.graph.initializer.map((w) => w.header.name);
    expect(names).toEqual(expect.arrayContaining(['table.q4b16a', 'table.q4b16a.zero_points', 'head.T.q4b32a', 'head.T.q4b32a.zero_points']));
    const file = path.join(tmp.dir, 'zero-points.onnx');
    await writeModel(doc, file);

    const ids = [0, 7, 39, 12, 12, 25];
    const session = await ort.InferenceSession.create(file, { logSeverityLevel: 4 });
    const logits = (await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) })).logits.data as Float32Array;
    await session.release();

    // The same in JS: rows quantized as the rewrite quantizes them, dequantized, gathered and multiplied.
    const tableQ = quantizeRows(table, VOCAB, D, 4, 16, true);
    expect(tableQ.zeroPoints!.length).toBe(VOCAB * 2); // 4 blocks of 4-bit zero points per row: 2 bytes
    const tableBack = dequantizeRows(tableQ, VOCAB, D, 4, 16);
    const headRows = transpose(head, D, OUT); // [N, K]: rows along the reduced axis
    const headBack = dequantizeRows(quantizeRows(headRows, OUT, D, 4, 32, true), OUT, D, 4, 32);
    let worst = 0;
    let largest = 0;
    for (const [t, id] of ids.entries()) {
      for (let n = 0; n < OUT; n++) {
        let s = 0;
        for (let k = 0; k < D; k++) s += tableBack[id * D + k] * headBack[n * D + k];
        worst = Math.max(worst, Math.abs(logits[t * OUT + n] - s));
        largest = Math.max(largest, Math.abs(s));
      }
    }
    expect(largest).toBeGreaterThan(0.1);
    expect(worst / largest).toBeLessThan(1e-5);
  });
});
