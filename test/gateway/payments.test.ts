/**
 * Opening the gateway's payers against a real anvil: keys that name one wallet (by the same keystore, another
 * path to it, or the gateway's own --wallet) share one payer and one ledger, so two ledgers never each count the
 * whole escrow as theirs.
 */
import '../../net/polyfill.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { openPayers } from '../../gateway/payments.js';
import { parseKeys } from '../../gateway/keys.js';
import { tempDir } from '../helpers/tmp.js';
import { keystoreOf, PASSPHRASE, startPaymentChain, type PaymentChain } from '../payments/helpers.js';

const tmp = tempDir('gridpipe-gateway-payers-');
let chain: PaymentChain;

beforeAll(async () => {
  chain = await startPaymentChain(tmp.dir);
}, 60_000);

afterAll(async () => {
  await chain?.close();
  tmp.cleanup();
});

describe('openPayers', () => {
  it('gives keys that name one wallet one payer', async () => {
    process.env.GRIDPIPE_PASSPHRASE = PASSPHRASE;
    const shared = await keystoreOf(chain.wallets[4], path.join(tmp.dir, 'shared.json'));
    const copy = path.join(tmp.dir, 'copy-of-shared.json');
    copyFileSync(shared, copy);
    const own = await keystoreOf(chain.wallets[5], path.join(tmp.dir, 'own.json'));
    const gatewayWallet = await keystoreOf(chain.wallets[6], path.join(tmp.dir, 'gateway.json'));
    const keys = parseKeys({ keys: {
      'gp-key-a-0000': { name: 'a', payer: shared }, 'gp-key-b-0000': { name: 'b', payer: path.join(tmp.dir, '.', 'shared.json') },
      'gp-key-c-0000': { name: 'c', payer: copy }, 'gp-key-d-0000': { name: 'd', payer: own },
      'gp-key-e-0000': { name: 'e', payer: gatewayWallet }, 'gp-key-f-0000': { name: 'f', payer: chain.wallets[6].address },
    } });
    const payers = await openPayers({ chainConfig: chain.configPath, wallet: gatewayWallet, dataDir: path.join(tmp.dir, 'data') }, keys);
    try {
      const of = (name: string): unknown => payers.payerFor({ id: name, name, spent: 0n, held: 0n });
      expect(of('b')).toBe(of('a'));
      expect(of('c')).toBe(of('a'));
      expect(of('d')).not.toBe(of('a'));
      expect(of('e')).toBe(of('f'));
      expect(of('e')).toBe(of('no-payer-named'));
    } finally {
      await payers.close();
    }
  });
});
