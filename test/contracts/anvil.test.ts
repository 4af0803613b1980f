/** The local anvil: starts on a free loopback port, answers JSON-RPC, and is gone after stop(). */
import { describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { rpc, startAnvil, withAnvil } from '../../contracts/index.js';
import { alive } from '../helpers/process.js';

describe('anvil', () => {
  it('starts two nodes side by side on loopback, with their dev accounts, and stops both for sure', async () => {
    const [a, b] = await Promise.all([startAnvil(), startAnvil({ chainId: 4242, accounts: 3 })]);
    try {
      expect(a.rpcUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(a.port).not.toBe(b.port);
      expect(Number(await rpc<string>(b.rpcUrl, 'eth_chainId', []))).toBe(4242);
      expect(a.accounts).toHaveLength(10);
      expect(b.accounts).toHaveLength(3);
      for (const acct of a.accounts) expect(new Wallet(acct.privateKey).address).toBe(acct.address);
      expect(alive(a.pid) && alive(b.pid)).toBe(true);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    expect(alive(a.pid)).toBe(false);
    expect(alive(b.pid)).toBe(false);
    await a.stop(); // idempotent
    await expect(rpc(a.rpcUrl, 'eth_chainId', [])).rejects.toThrow();
  });

  it('withAnvil stops the node when the work throws', async () => {
    let pid = -1;
    await expect(withAnvil(async (node) => {
      pid = node.pid;
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid)).toBe(false);
  });

  it('reports a binary that cannot run', async () => {
    await expect(startAnvil({ binary: '/nonexistent/anvil' })).rejects.toThrow(/cannot run anvil|exited/);
  });
});
