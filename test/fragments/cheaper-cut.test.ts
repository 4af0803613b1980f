/**
 * The cut planner on a real graph: it cuts where few bytes cross (a bottleneck) and, without one, for balance.
 */
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { GraphBuilder, makeModel } from '../../fragments/builder/graph-builder.js';
import { DataType } from '../../fragments/onnx/dtype.js';
import { writeModel } from '../../fragments/onnx/write.js';
import { fragmentModel } from '../../fragments/fragment.js';
import { verifyFragments } from '../../fragments/verify.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/**
 * An hourglass MLP: 512 → 512 → 8 → 512 → 512 wide, symmetric in FLOPs and weights. Between the two
 * halves only the 8-wide bottleneck crosses (32 bytes a row); everywhere else a 512-wide tensor does.
 */
async function hourglass(file: string, bottleneckFirst: boolean): Promise<void> {
  const g = new GraphBuilder('hourglass', 11);
  const init = { kind: 'uniform' as const, limit: 0.05 };
  g.input('x', DataType.FLOAT, ['batch', 512]);
  const w = (name: string, rows: number, cols: number): string => g.generated(name, [rows, cols], init);
  let h = g.op('MatMul', ['x', w('w1', 512, 512)], { name: '/l1/MatMul' });
  h = g.op('Relu', [h], { name: '/l1/Relu' });
  h = g.op('MatMul', [h, w('w2', 512, bottleneckFirst ? 8 : 512)], { name: '/l2/MatMul' });
  h = g.op('Relu', [h], { name: '/l2/Relu' });
  h = g.op('MatMul', [h, w('w3', bottleneckFirst ? 8 : 512, 512)], { name: '/l3/MatMul' });
  h = g.op('Relu', [h], { name: '/l3/Relu' });
  g.op('MatMul', [h, w('w4', 512, 512)], { name: '/l4/MatMul', output: 'y' });
  g.output('y', DataType.FLOAT, ['batch', 512]);
  await writeModel(makeModel(g.build()), file);
}

describe('the cut planner on a real graph', () => {
  it('cuts through the bottleneck, where 32 bytes cross instead of 2 KiB', async () => {
    const file = path.join(tmp.dir, 'hourglass.onnx');
    await hourglass(file, true);
    const out = path.join(tmp.dir, 'hourglass-2');
    const { manifest } = await fragmentModel(file, out, { parts: 2, dims: { batch: 1 } });
    expect(manifest.plan.crossBytes).toEqual([32]);
    expect(manifest.fragments[1].inputs.map((i) => i.name)).toEqual([expect.stringMatching(/^\/l2\/(MatMul|Relu)_output_0$/)]);
    expect((await verifyFragments(out, { tolerance: 1e-5 })).ok).toBe(true);
  });

  it('without the bottleneck, every cut costs the same and the middle one wins on balance', async () => {
    const file = path.join(tmp.dir, 'flat.onnx');
    await hourglass(file, false);
    const { manifest } = await fragmentModel(file, path.join(tmp.dir, 'flat-2'), { parts: 2, dims: { batch: 1 } });
    expect(manifest.plan.crossBytes).toEqual([2048]);
    expect(manifest.fragments[0].weightBytes).toBe(manifest.fragments[1].weightBytes);
  });
});
