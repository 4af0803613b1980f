/**
 * Receipts per voucher window (node/payments/receipts.ts, issue 15): a session's running hashes equal the
 * digest of all its steps' tensors in the order they travelled, so a receipt signed after n steps commits to
 * each of them (and for one step to exactly that step's digest, as per-step receipts did).
 */
import { describe, expect, it } from 'vitest';
import { outputsCommitment, RunningDigest, tensorsDigest, wireOutputDigest } from '../../node/payments/receipts.js';
import type { WireTensor } from '../../proto/wire.js';

const tensor = (name: string, values: number[]): WireTensor => ({ name, dtype: 1, dims: [1, values.length], data: new Uint8Array(new Float32Array(values).buffer) });

describe('RunningDigest', () => {
  it('hashes a session\'s steps as one sequence, and goes on after a receipt', () => {
    const steps = [0, 1, 2].map((i) => ({ inputs: [tensor('h', [i, i + 1])], outputs: [tensor('y', [i * 2]), tensor('z', [i * 3])] }));
    const running = new RunningDigest();
    running.add(steps[0].inputs, steps[0].outputs);
    expect(running.current()).toEqual({ inputHash: tensorsDigest(steps[0].inputs), outputHash: outputsCommitment(steps[0].outputs) });
    running.add(steps[1].inputs, steps[1].outputs);
    running.add(steps[2].inputs, steps[2].outputs);
    expect(running.steps).toBe(3);
    expect(running.current()).toEqual({ inputHash: tensorsDigest(steps.flatMap((s) => s.inputs)), outputHash: outputsCommitment(steps.flatMap((s) => s.outputs)) });
    // Another output in any step gives another hash: the receipt commits to every step it covers.
    const forged = new RunningDigest();
    forged.add(steps[0].inputs, [tensor('y', [9]), steps[0].outputs[1]]);
    forged.add(steps[1].inputs, steps[1].outputs);
    forged.add(steps[2].inputs, steps[2].outputs);
    expect(forged.current().outputHash).not.toBe(running.current().outputHash);
    expect(forged.current().inputHash).toBe(running.current().inputHash);
  });

  it('commits outputs through their compact digest (issue 21): the top-8 entries of each position, not every byte', () => {
    const row = Array.from({ length: 32 }, (_, i) => (i % 5 === 0 ? 10 + i : 0.01 * i));
    // top 8: the seven multiples of 5 and index 31 (0.31); only entries outside them differ
    const same = row.map((v, i) => (i % 5 === 0 || i === 31 ? v : v + 0.001));
    const moved = row.map((v, i) => (i === 5 ? v + 0.5 : v)); // a top entry differs
    expect(outputsCommitment([tensor('h', same)])).toBe(outputsCommitment([tensor('h', row)]));
    expect(outputsCommitment([tensor('h', moved)])).not.toBe(outputsCommitment([tensor('h', row)]));
    const [d] = wireOutputDigest([tensor('h', row)]);
    expect(d).toMatchObject({ name: 'h', kind: 'top', rows: 1, k: 8 });
    expect([...d.indices].sort((a, b) => a - b)).toEqual([0, 5, 10, 15, 20, 25, 30, 31]);
    // integer outputs are committed whole
    const ids = (v: bigint[]): WireTensor => ({ name: 'ids', dtype: 7, dims: [1, v.length], data: new Uint8Array(BigInt64Array.from(v).buffer) });
    expect(outputsCommitment([ids([1n, 2n])])).not.toBe(outputsCommitment([ids([1n, 3n])]));
  });
});
