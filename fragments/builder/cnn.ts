/**
 * A small image classifier: `pixel_values` [batch, 3, H, W] through Conv/BatchNormalization/Relu blocks
 * (MaxPool between blocks while the image is at least 2 wide, channels doubling with each pool),
 * GlobalAveragePool, Flatten and a Gemm to `logits` [batch, classes].
 */
import { DataType } from '../onnx/dtype.js';
import { attr, GraphBuilder } from './graph-builder.js';
import type { ResolvedOptions } from './options.js';

/** Builds a cnn graph. */
export function buildCnn(o: ResolvedOptions): { g: GraphBuilder } {
  const g = new GraphBuilder(o.name, o.seed);
  let x = g.input('pixel_values', DataType.FLOAT, ['batch_size', 3, o.imageSize, o.imageSize]);
  let cin = 3;
  let size = o.imageSize;
  let pools = 0;
  for (let i = 0; i < o.layers; i++) {
    // Channels double with every halving of the image, so deep stacks stay bounded.
    const cout = o.channels * 2 ** pools;
    const node = `/model/features.${i}`;
    const param = `model.features.${i}`;
    const w = g.generated(`${param}.conv.weight`, [cout, cin, 3, 3], { kind: 'normal', std: Math.sqrt(2 / (cin * 9)) });
    x = g.op('Conv', [x, w], { name: `${node}/conv/Conv`, attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] } });
    const scale = g.generated(`${param}.bn.weight`, [cout], { kind: 'normal', mean: 1, std: 0.02 });
    const bias = g.generated(`${param}.bn.bias`, [cout], { kind: 'normal', std: 0.02 });
    const mean = g.generated(`${param}.bn.running_mean`, [cout], { kind: 'normal', std: 0.02 }, { parameter: false });
    const vari = g.generated(`${param}.bn.running_var`, [cout], { kind: 'uniform', mean: 1, limit: 0.1 }, { parameter: false });
    x = g.op('BatchNormalization', [x, scale, bias, mean, vari], { name: `${node}/bn/BatchNormalization`, attrs: { epsilon: attr.float(1e-5) } });
    x = g.op('Relu', [x], { name: `${node}/Relu` });
    if (i < o.layers - 1 && size >= 2) {
      x = g.op('MaxPool', [x], { name: `${node}/MaxPool`, attrs: { kernel_shape: [2, 2], strides: [2, 2] } });
      size = Math.floor(size / 2);
      pools++;
    }
    g.valueInfo(x, DataType.FLOAT, ['batch_size', cout, size, size]);
    cin = cout;
  }
  const pooled = g.op('GlobalAveragePool', [x], { name: '/model/pool/GlobalAveragePool' });
  const flat = g.op('Flatten', [pooled], { name: '/model/Flatten', attrs: { axis: 1 } });
  const w = g.generated('classifier.weight', [o.classes, cin], { kind: 'normal', std: 1 / Math.sqrt(cin) });
  const b = g.generated('classifier.bias', [o.classes], { kind: 'normal', std: 0.02 });
  const logits = g.op('Gemm', [flat, w, b], { name: '/classifier/Gemm', output: 'logits', attrs: { transB: 1 } });
  g.output(logits, DataType.FLOAT, ['batch_size', o.classes]);
  return { g };
}
