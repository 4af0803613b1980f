/**
 * A supplier's money from the CLI: `gridpipe earnings` (accrued, redeemed, pending: from the supplier's
 * voucher book in --data and from the chain) and `gridpipe redeem` (redeem the stored vouchers now).
 * A running supplier holds its voucher book open; then pass --admin URL (its admin endpoint) instead, with
 * --data naming its data folder, where the admin token is.
 */
import { Command } from 'commander';
import os from 'node:os';
import path from 'node:path';
import type { EarningsSummary } from '../node/payments/supplier-payments.js';
import type { VoucherBook } from '../node/payments/voucher-book.js';
import { withChainOptions, type ChainCliOptions } from './chain-options.js';
import { UsageError } from './errors.js';

// The voucher book (LevelDB) and the chain (ethers) load in the actions and the helpers they call, not with the command tree.

interface MoneyOptions extends ChainCliOptions { data: string; admin?: string }

const DEFAULT_DATA = path.join(os.homedir(), '.gridpipe', 'supplier');

function withMoneyOptions(cmd: Command, walletHelp: string): Command {
  return withChainOptions(cmd
    .option('--data <dir>', 'the supplier\'s data folder (its voucher book)', DEFAULT_DATA)
    .option('--admin <url>', 'admin endpoint of the running supplier (its voucher book is locked while it runs; its token is read from --data)'), walletHelp);
}

/** Opens the voucher book, or explains that the supplier is running. */
async function openBook(dir: string): Promise<VoucherBook> {
  const { VoucherBook, voucherBookDir, VoucherBookError } = await import('../node/payments/voucher-book.js');
  const { ChainCommandError } = await import('./chain-args.js');
  try {
    return await VoucherBook.open(voucherBookDir(dir));
  } catch (err) {
    if (err instanceof VoucherBookError && err.code === 'LOCKED') {
      throw new ChainCommandError('LOCKED', `the supplier using ${dir} is running and holds its voucher book: pass --admin URL (its admin endpoint) or stop it first`);
    }
    throw err;
  }
}

/** A call on the running supplier's admin endpoint, with the token it wrote to `<data>/admin-token`. */
async function adminCall(url: string, dataDir: string, method: 'GET' | 'POST', route: string): Promise<Record<string, unknown>> {
  const { adminTokenPath, readAdminToken } = await import('../node/admin-guard.js');
  const { ChainCommandError } = await import('./chain-args.js');
  const token = readAdminToken(dataDir);
  if (!token) throw new ChainCommandError('ADMIN_ERROR', `no admin token at ${adminTokenPath(dataDir)}: pass --data, the running supplier's data folder`);
  let res: Response;
  try {
    res = await fetch(new URL(route, url), { method, headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new ChainCommandError('ADMIN_UNREACHABLE', `cannot reach the supplier's admin endpoint ${url}: ${(err as Error).message}`, { cause: err });
  }
  const body = await res.json() as Record<string, unknown>;
  if (!res.ok) throw new ChainCommandError('ADMIN_ERROR', `${method} ${route}: ${String(body.error ?? res.status)}`);
  return body;
}

export function earningsCommand(): Command {
  return withMoneyOptions(new Command('earnings')
    .description('What this supplier has earned: work accrued, vouchers held, redeemed on chain, pending (amounts in tokens)'),
  'keystore of the supplier (only its address is read; no passphrase needed)')
    .action(async (o: MoneyOptions) => {
      const { keystoreAddress } = await import('../contracts/wallet.js');
      const { summarize } = await import('../node/payments/supplier-payments.js');
      const { withChain, tokenDecimals, formatTokens, printResult } = await import('./chain-args.js');
      let local: EarningsSummary;
      if (o.admin) {
        const body = await adminCall(o.admin, o.data, 'GET', '/payments');
        local = {
          payee: String(body.payee), accrued: BigInt(String(body.accrued)), vouchered: BigInt(String(body.vouchered)),
          redeemed: BigInt(String(body.redeemed)), pending: BigInt(String(body.pending)),
          payers: (body.payers as { payer: string; charged: string; redeemed: string; best?: { cumulativeAmount: string } }[]).map((p) => ({
            payer: p.payer, charged: BigInt(p.charged), redeemed: BigInt(p.redeemed),
            best: p.best ? { payer: p.payer, payee: String(body.payee), cumulativeAmount: BigInt(p.best.cumulativeAmount), deadline: 0n, signature: '' } : undefined,
          })),
        };
      } else {
        const book = await openBook(o.data);
        try {
          const payees = new Set(book.all().map((a) => a.best?.payee).filter((p): p is string => !!p));
          const payee = o.wallet ? keystoreAddress(o.wallet) : [...payees][0];
          if (!payee) throw new UsageError('the voucher book holds no vouchers yet; pass --wallet to name the supplier\'s address');
          local = summarize(payee, book.all());
        } finally {
          await book.close();
        }
      }
      // read-only: the wallet option names the payee, it is not decrypted
      await withChain({ ...o, wallet: undefined }, false, async (chain) => {
        const decimals = await tokenDecimals(chain);
        const escrow = chain.contracts.paymentEscrow;
        let redeemedOnChain = 0n;
        for (const p of local.payers) redeemedOnChain += await escrow.redeemed(p.payer, local.payee);
        const pending = local.vouchered > redeemedOnChain ? local.vouchered - redeemedOnChain : 0n;
        const balance = await chain.contracts.token.balanceOf(local.payee);
        const t = (x: bigint): string => formatTokens(x, decimals);
        printResult(o.json, {
          payee: local.payee, accrued: local.accrued, vouchered: local.vouchered, redeemed: redeemedOnChain, pending,
          tokenBalance: balance, payers: local.payers.length, decimals,
        }, [
          `earnings of ${local.payee} (tokens)`,
          `  accrued    ${t(local.accrued)}   work delivered`,
          `  vouchered  ${t(local.vouchered)}   signed by payers`,
          `  redeemed   ${t(redeemedOnChain)}   paid out on chain`,
          `  pending    ${t(pending)}   held in vouchers, not redeemed yet (gridpipe redeem)`,
          `  balance    ${t(balance)}   token balance of the address`,
        ].join('\n'));
      });
    });
}

export function redeemCommand(): Command {
  return withMoneyOptions(new Command('redeem')
    .description('Redeem the supplier\'s stored vouchers on chain now (one batch transaction)'),
  'keystore of the account that sends the transaction (pays gas; the money goes to the vouchers\' payee)')
    .action(async (o: MoneyOptions) => {
      const { Redeemer } = await import('../node/payments/redeemer.js');
      const { withChain, tokenDecimals, formatTokens, printResult } = await import('./chain-args.js');
      if (o.admin) {
        const r = await adminCall(o.admin, o.data, 'POST', '/redeem');
        printResult(o.json, r, `redeemed ${String(r.redeemed)} base units in ${String(r.transactions)} transaction(s)`);
        return;
      }
      await withChain(o, true, async (chain) => {
        const book = await openBook(o.data);
        try {
          const payees = new Set(book.all().map((a) => a.best?.payee).filter((p): p is string => !!p));
          if (payees.size === 0) {
            printResult(o.json, { redeemed: 0n, vouchers: 0, transactions: 0, skipped: [] }, 'no vouchers to redeem');
            return;
          }
          if (payees.size > 1) throw new UsageError(`the voucher book names several payees (${[...payees].join(', ')}); it should hold one supplier's vouchers`);
          const payee = [...payees][0];
          const decimals = await tokenDecimals(chain);
          const redeemer = new Redeemer({
            book, escrow: chain.contracts.paymentEscrow, payee, threshold: 0n,
            chainTime: async () => BigInt((await chain.provider.getBlock('latest'))!.timestamp),
          });
          const r = await redeemer.redeemAll();
          const skipped = r.skipped.map((s) => `  skipped ${s.payer}: ${s.reason}`).join('\n');
          printResult(o.json, { payee, ...r }, `redeemed ${formatTokens(r.redeemed, decimals)} tokens to ${payee} (${r.vouchers} voucher(s), ${r.transactions} transaction(s))${skipped ? `\n${skipped}` : ''}`);
        } finally {
          await book.close();
        }
      });
    });
}
