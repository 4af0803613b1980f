/**
 * The serving commands' V8 heap tuning (cli/heap-tuning.ts): the default, turning it off, and a bad
 * GRIDPIPE_HEAP_GROWING_PERCENT refused with one line naming the variable (exit 2) before anything starts.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_HEAP_GROWING_PERCENT, tuneHeapForServing } from '../../cli/heap-tuning.js';
import { UsageError } from '../../cli/errors.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('gridpipe-heap-tuning-');

describe('heap tuning of the serving commands', () => {
  it('sets the default growing percent, or none for 0, and refuses what is not a whole percent', () => {
    expect(tuneHeapForServing({})).toBe(DEFAULT_HEAP_GROWING_PERCENT);
    expect(tuneHeapForServing({ GRIDPIPE_HEAP_GROWING_PERCENT: ' 150 ' })).toBe(150);
    expect(tuneHeapForServing({ GRIDPIPE_HEAP_GROWING_PERCENT: '0' })).toBe(0);
    for (const bad of ['fast', '-1', '2.5', '5000']) {
      expect(() => tuneHeapForServing({ GRIDPIPE_HEAP_GROWING_PERCENT: bad })).toThrow(UsageError);
      expect(() => tuneHeapForServing({ GRIDPIPE_HEAP_GROWING_PERCENT: bad })).toThrow(/GRIDPIPE_HEAP_GROWING_PERCENT/);
    }
  });

  for (const command of [['supply', '--data', tmp.dir, '--listen', '/ip4/127.0.0.1/tcp/0'], ['gateway', '--data', tmp.dir, '--port', '0']]) {
    it(`\`gridpipe ${command[0]}\` with a bad GRIDPIPE_HEAP_GROWING_PERCENT exits 2 with one line naming it`, async () => {
      const r = await runCli(command, { env: { GRIDPIPE_HEAP_GROWING_PERCENT: 'lots', GRIDPIPE_LOG_LEVEL: 'error' } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^gridpipe: error: GRIDPIPE_HEAP_GROWING_PERCENT must be a whole number/);
    });
  }
});
