/**
 * Receipts per voucher window (node/payments/receipts.ts, issue 15): a session's running hashes equal the
 * digest of all its steps' tensors in the order they travelled, so a receipt signed after n steps commits to
 * each of them (and for one step to exactly that step's digest, as per-step receipts did).
 */
import { describe, expect, it } from 'vitest';
import { RunningDigest, tensorsDigest } from '../../node/payments/receipts.js';
import type { WireTensor } from '../../proto/wire.js';

const tensor = (name: string, values: number[]): WireTensor => ({ name, dtype: 1, dims: [1, values.length], data: new Uint8Array(new Float32Array(values).buffer) });

describe('RunningDigest', () => {
  it('hashes a session\'s steps as one sequence, and goes on after a receipt', () => {
    const steps = [0, 1, 2].map((i) => ({ inputs: [tensor('h', [i, i + 1])], outputs: [tensor('y', [i * 2]), tensor('z', [i * 3])] }));
    const running = new RunningDigest();
    running.add(steps[0].inputs, steps[0].outputs);
    expect(running.current()).toEqual({ inputHash: tensorsDigest(steps[0].inputs), outputHash: tensorsDigest(steps[0].outputs) });
    running.add(steps[1].inputs, steps[1].outputs);
    running.add(steps[2].inputs, steps[2].outputs);
    expect(running.steps).toBe(3);
    expect(running.current()).toEqual({ inputHash: tensorsDigest(steps.flatMap((s) => s.inputs)), outputHash: tensorsDigest(steps.flatMap((s) => s.outputs)) });
    // Another output in any step gives another hash: the receipt commits to every step it covers.
    const forged = new RunningDigest();
    forged.add(steps[0].inputs, [tensor('y', [9]), steps[0].outputs[1]]);
    forged.add(steps[1].inputs, steps[1].outputs);
    forged.add(steps[2].inputs, steps[2].outputs);
    expect(forged.current().outputHash).not.toBe(running.current().outputHash);
    expect(forged.current().inputHash).toBe(running.current().inputHash);
  });
});
