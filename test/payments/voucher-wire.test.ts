/**
 * net/exec/voucher-wire.ts, the one converter between the canonical SignedVoucher (contracts/eip712.ts) and its
 * exec-wire form: a signed voucher survives the trip through a real Step frame and still verifies; malformed
 * addresses and amounts are refused as BAD_REQUEST.
 */
import { describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { signVoucher, verifyVoucher, type SignedVoucher, type Voucher } from '../../contracts/eip712.js';
import { encodeStepRequestFrame, ExecRequestType, fromDecodedVoucher, type DecodedRequest } from '../../net/exec/codec.js';
import { ExecError } from '../../net/exec/errors.js';
import { voucherFromWire, voucherToWire } from '../../net/exec/voucher-wire.js';

const ESCROW = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
const CHAIN = 31337;

async function signed(): Promise<SignedVoucher> {
  const payer = Wallet.createRandom();
  const v: Voucher = { payer: payer.address, payee: Wallet.createRandom().address, cumulativeAmount: 2n ** 200n + 7n, deadline: 1_900_000_000n };
  return { ...v, signature: await signVoucher(payer, ESCROW, CHAIN, v) };
}

describe('voucher wire form', () => {
  it('a signed voucher goes through a Step frame and comes back equal, and still verifies', async () => {
    const v = await signed();
    const frame = Buffer.concat(encodeStepRequestFrame({ sessionId: 's', stepId: 1n, position: 0, inputs: [], voucher: voucherToWire(v), chunkTokens: [1] }));
    let i = 0;
    while (frame[i] & 0x80) i++; // the varint length prefix
    const decoded = ExecRequestType.decode(frame.subarray(i + 1)) as unknown as DecodedRequest;
    const back = voucherFromWire(fromDecodedVoucher(decoded.step!.voucher!));
    expect(back).toEqual(v);
    expect(verifyVoucher(ESCROW, CHAIN, back, back.signature)).toBe(true);
  });

  it('checksums lower-case addresses and refuses malformed ones and non-integer amounts', async () => {
    const wire = voucherToWire(await signed());
    expect(voucherFromWire({ ...wire, payer: wire.payer.toLowerCase() }).payer).toBe(wire.payer);
    for (const bad of [{ payer: '0x1234' }, { payee: 'not an address' }, { cumulativeAmount: '-1' }, { cumulativeAmount: '1.5' }, { cumulativeAmount: '1'.repeat(79) }, { cumulativeAmount: '' }]) {
      let err: unknown;
      try {
        voucherFromWire({ ...wire, ...bad });
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(bad)).toBeInstanceOf(ExecError);
      expect((err as ExecError).code).toBe('BAD_REQUEST');
    }
  });
});
