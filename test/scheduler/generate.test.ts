/**
 * generate's prompt checks, before any server runs: ids outside the vocabulary, negative or non-integer ids are
 * refused with the id named; the last id of the vocabulary goes through.
 */
import { describe, expect, it } from 'vitest';
import { generate, type StepRunner } from '../../scheduler/generate.js';

/** A runner that only counts calls: the checks below must refuse before any step runs. */
function countingRunner(): StepRunner & { calls: number } {
  const runner = { calls: 0, step: async () => { runner.calls++; throw new Error('no step should run'); } };
  return runner;
}

async function drain(it: AsyncGenerator<unknown>): Promise<void> {
  for await (const _ of it) { /* consume */ }
}

describe('generate: prompt checks before any server runs', () => {
  const base = { maxTokens: 2, kvCache: true, inputNames: ['input_ids'] };

  it('refuses a token id outside the vocabulary, naming it and the range', async () => {
    const runner = countingRunner();
    await expect(drain(generate(runner, { ...base, promptIds: [1, 2, 50257], vocabSize: 50257 }))).rejects.toThrow(/token id 50257 .*0 to 50256/);
    expect(runner.calls).toBe(0);
  });

  it('refuses negative and non-integer ids even when the vocabulary size is unknown', async () => {
    for (const bad of [-1, 1.5]) {
      const runner = countingRunner();
      await expect(drain(generate(runner, { ...base, promptIds: [3, bad] }))).rejects.toThrow(new RegExp(`token id ${bad} `));
      expect(runner.calls).toBe(0);
    }
  });

  it('lets the last id of the vocabulary through to the runner', async () => {
    const runner = countingRunner();
    await expect(drain(generate(runner, { ...base, promptIds: [50256], vocabSize: 50257 }))).rejects.toThrow('no step should run');
    expect(runner.calls).toBe(1);
  });
});
