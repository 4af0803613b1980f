/**
 * `npm run bench -- settlement`: what paying suppliers costs on chain. Starts a real anvil, deploys the
 * contracts, and measures gas (receipts' gasUsed):
 *  - batched: N requests (default 1000) paid by one cumulative voucher and one redemption;
 *  - naive baseline, same run: one ERC-20 transfer per request (a sample of 100, averaged);
 *  - the single operations: stake, deposit, redeem, redeemBatch of 10 vouchers (per voucher).
 * Goal: ratio = gas_per_request_batched / gas_per_request_naive ≤ 0.01.
 */
import { MaxUint256, Wallet, parseUnits, type ContractTransactionResponse, type TransactionReceipt } from 'ethers';
import {
  actingAs, approveIfShort, createProvider, deployGrid, deposit, redeem, redeemBatch, signVoucher, stake, startAnvil, verifyVoucher,
  type SignedVoucher, type Voucher,
} from '../contracts/index.js';
import { reportResult } from './report.js';
import { positiveIntFlag } from './flags.js';

async function gasOf(tx: Promise<ContractTransactionResponse>): Promise<bigint> {
  const receipt: TransactionReceipt | null = await (await tx).wait();
  if (!receipt || receipt.status !== 1) throw new Error('benchmark transaction failed');
  return receipt.gasUsed;
}

/** Runs the benchmark. Flags: `--requests=N` (default 1000), `--sample=N` naive transfers (default 100). */
export async function settlementBench(flags: string[]): Promise<void> {
  const requests = positiveIntFlag(flags, 'requests', 1000);
  const sample = positiveIntFlag(flags, 'sample', 100);
  const node = await startAnvil({ accounts: 16 });
  const provider = createProvider(node.rpcUrl, node.chainId);
  try {
    const wallets = node.accounts.map((a) => new Wallet(a.privateKey, provider));
    const [deployer, payer, supplier, payee, naivePayee, batchPayee] = wallets;
    const batchPayers = wallets.slice(6, 16);
    const { config, contracts } = await deployGrid({ rpcUrl: node.rpcUrl, signer: deployer });
    const { token } = contracts;
    const as = (w: Wallet): ReturnType<typeof actingAs> => actingAs(config, w);
    const price = parseUnits('0.001', 18); // per request
    for (const w of [payer, supplier, ...batchPayers]) await gasOf(token.mint(w.address, parseUnits('1000000', 18)));
    // Approved once for all up front, so the measured stake and deposits below send no approval of their own.
    for (const w of [payer, ...batchPayers]) await approveIfShort(await as(w), config.paymentEscrow, MaxUint256);
    await approveIfShort(await as(supplier), config.stakeRegistry, MaxUint256);

    const gasStake = (await stake(await as(supplier), { amount: parseUnits('100', 18) })).receipt.gasUsed;
    const gasDeposit = (await deposit(await as(payer), { amount: price * BigInt(requests) * 2n })).receipt.gasUsed;

    // The gateway signs a cumulative voucher after every request; the supplier keeps the latest. The payee
    // is an address with no tokens yet (a supplier's fresh payout address): the costlier first transfer.
    const deadline = BigInt((await provider.getBlock('latest'))!.timestamp) + 86_400n;
    let latest: SignedVoucher | undefined;
    const signStart = performance.now();
    for (let i = 1; i <= requests; i++) {
      const v: Voucher = { payer: payer.address, payee: payee.address, cumulativeAmount: price * BigInt(i), deadline };
      latest = { ...v, signature: await signVoucher(payer, config.paymentEscrow, config.chainId, v) };
    }
    const signMicros = ((performance.now() - signStart) * 1000) / requests;
    const verifyStart = performance.now();
    for (let i = 0; i < 100; i++) {
      if (!verifyVoucher(config.paymentEscrow, config.chainId, latest!, latest!.signature)) throw new Error('voucher does not verify');
    }
    const verifyMicros = ((performance.now() - verifyStart) * 1000) / 100;

    const payeeAccount = await as(payee);
    const gasRedeem = (await redeem(payeeAccount, { voucher: latest! })).gasUsed;
    if ((await token.balanceOf(payee.address)) !== price * BigInt(requests)) {
      throw new Error('the redemption did not pay the payee exactly');
    }
    // The next redemption of the same pair (its storage already warm in the state sense: non-zero slots).
    const next: Voucher = { payer: latest!.payer, payee: latest!.payee, cumulativeAmount: latest!.cumulativeAmount + price, deadline };
    const gasRedeemRepeat = (await redeem(payeeAccount, { voucher: { ...next, signature: await signVoucher(payer, config.paymentEscrow, config.chainId, next) } })).gasUsed;

    // Naive baseline: the payer transfers the price to a fresh payee once per request.
    let naiveTotal = 0n;
    for (let i = 0; i < sample; i++) naiveTotal += await gasOf(token.connect(payer).transfer(naivePayee.address, price));
    const naivePerRequest = Number(naiveTotal) / sample;

    // Ten payers' vouchers to one (fresh) payee in one redeemBatch.
    const vouchers: SignedVoucher[] = [];
    for (const p of batchPayers) {
      await deposit(await as(p), { amount: price * 100n });
      const v: Voucher = { payer: p.address, payee: batchPayee.address, cumulativeAmount: price * 50n, deadline };
      vouchers.push({ ...v, signature: await signVoucher(p, config.paymentEscrow, config.chainId, v) });
    }
    const gasBatch = (await redeemBatch(await as(batchPayee), { vouchers })).gasUsed;

    const batchedPerRequest = Number(gasRedeem) / requests;
    reportResult('settlement', {
      gas_per_request_batched: batchedPerRequest,
      gas_per_request_naive: naivePerRequest,
      ratio: batchedPerRequest / naivePerRequest,
      gas_per_request_batched_incl_deposit: (Number(gasRedeem) + Number(gasDeposit)) / requests,
      gas_stake: Number(gasStake),
      gas_deposit: Number(gasDeposit),
      gas_redeem: Number(gasRedeem),
      gas_redeem_repeat: Number(gasRedeemRepeat),
      gas_redeem_batch_10: Number(gasBatch) / vouchers.length,
      requests,
      naive_sample: sample,
      voucher_sign_us: signMicros,
      voucher_verify_us: verifyMicros,
    }, [
      `anvil ${node.chainId}, contracts from contracts/artifacts (solc 0.8.37, optimizer 200 runs, evm cancun); gas is each receipt's gasUsed (21000 intrinsic included).`,
      `batched: ${requests} requests paid by one cumulative EIP-712 voucher (the gateway signs one per request, the supplier redeems the last), one redeem tx whose gas is divided by ${requests}; the pair's first redemption, to a payee holding no tokens yet (zero-to-non-zero storage for redeemed[payer][payee] and the payee's balance: the costly case). gas_redeem_repeat: the pair's next redemption (non-zero-to-non-zero).`,
      `naive: a sample of ${sample} ERC-20 transfers, one per request, payer to a fresh payee (the first one zero-to-non-zero), averaged; per-request transfers need no deposit, so gas_per_request_batched_incl_deposit adds the payer's one deposit to the batched side.`,
      `gas_redeem_batch_10: one redeemBatch of 10 first-time vouchers from 10 payers to one payee (one token transfer for all), divided by 10. gas_stake: a first stake (transfer in and new stake slot); gas_deposit: a first deposit. voucher_sign_us / voucher_verify_us: ethers signTypedData / verifyVoucher (pure-JS secp256k1) in this process, off chain, per voucher; wall-clock, machine-dependent.`,
      'Goal: ratio <= 0.01.',
    ].join(' '));
  } finally {
    provider.destroy();
    await node.stop();
  }
}
