/**
 * The whole model in one local onnxruntime session, as a StepRunner: the monolithic baseline that
 * pipelines are compared against (tests, benchmarks). Keeps the KV cache itself (present → past).
 */
import ort from 'onnxruntime-node';
import type { StepRunner } from './generate.js';
import type { TensorMap } from '../net/exec/client.js';

export class LocalModelRunner implements StepRunner {
  private past: TensorMap = {};

  private constructor(private readonly session: ort.InferenceSession, private readonly pairs: { input: string; output: string }[], private readonly emptyPast: TensorMap) {}

  /** Opens the model; `pairs` are its KV-cache pairs (manifest.statefulPairs). */
  static async open(modelPath: string, pairs: { input: string; output: string }[], options: ort.InferenceSession.SessionOptions = {}): Promise<LocalModelRunner> {
    const session = await ort.InferenceSession.create(modelPath, options);
    const emptyPast: TensorMap = {};
    const meta = session.inputMetadata as unknown as { name: string; isTensor: boolean; type?: string; shape?: (number | string)[] }[];
    for (const p of pairs) {
      const m = meta.find((x) => x.name === p.input);
      const shape = (m?.shape ?? []).map((d) => (typeof d === 'number' ? d : /past/i.test(d) ? 0 : 1));
      emptyPast[p.input] = new ort.Tensor('float32', new Float32Array(0), shape);
    }
    return new LocalModelRunner(session, pairs, emptyPast);
  }

  async step(inputs: TensorMap, position: number): Promise<{ outputs: TensorMap }> {
    if (position === 0) this.past = { ...this.emptyPast };
    const outputs = await this.session.run({ ...inputs, ...this.past });
    for (const p of this.pairs) this.past[p.input] = outputs[p.output];
    return { outputs };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
