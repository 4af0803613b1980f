/**
 * grid.proto through the generated code: tensors travel as raw bytes, and steps carry the fields the pipeline modes
 * use.
 */
import { describe, expect, it } from 'vitest';
import { decodeTensor, encodeTensor, gridRoot } from '../../proto/grid.js';

describe('grid.proto', () => {
  it('round-trips a tensor as raw bytes', () => {
    const values = Float32Array.from([1.5, -2, 3.25, 0]);
    const bytes = encodeTensor({ name: 'hidden', dtype: 1, dims: [1, 2, 2], data: new Uint8Array(values.buffer) });
    // Raw bytes, not text: 16 data bytes plus a small header.
    expect(bytes.length).toBeLessThan(40);
    const back = decodeTensor(bytes);
    expect(back.name).toBe('hidden');
    expect(back.dims).toEqual([1, 2, 2]);
    expect(Array.from(new Float32Array(Uint8Array.from(back.data).buffer))).toEqual(Array.from(values));
  });

  it('carries the step fields the later pipeline modes need', () => {
    const Step = gridRoot.lookupType('gridpipe.v1.Step');
    for (const field of ['stepId', 'position', 'replay', 'draftTokens', 'forward', 'want']) expect(Step.fields[field], field).toBeDefined();
    const Request = gridRoot.lookupType('gridpipe.v1.ExecRequest');
    const msg = Request.decode(Request.encode(Request.fromObject({ step: { sessionId: 's', stepId: 7, position: 12, draftTokens: 3 } })).finish()) as unknown as { step: { position: number; draftTokens: number } };
    expect(msg.step.position).toBe(12);
    expect(msg.step.draftTokens).toBe(3);
  });
});
