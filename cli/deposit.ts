/** `gridpipe deposit AMOUNT`: fund the payer's escrow (contracts/actions.ts deposit: approve when short, then deposit). AMOUNT in decimal token units. */
import { Command } from 'commander';
import { checkTokenAmountText, withChainOptions, AMOUNT_HELP, type ChainCliOptions } from './chain-options.js';

export function depositCommand(): Command {
  return withChainOptions(new Command('deposit')
    .description('Deposit tokens into the payment escrow that the gateway\'s vouchers draw on (approves the escrow first)')
    .argument('<amount>', AMOUNT_HELP), 'keystore of the paying account (the gateway\'s; passphrase in GRIDPIPE_PASSPHRASE)')
    .action(async (amountText: string, o: ChainCliOptions) => {
      checkTokenAmountText(amountText);
      const { withChain, parseTokenAmount, tokenDecimals, formatTokens, printResult, checkBalance, actingAccount } = await import('./chain-args.js'); // ethers loads here
      const { deposit } = await import('../contracts/actions.js');
      await withChain(o, true, async (chain) => {
        const decimals = await tokenDecimals(chain);
        const amount = parseTokenAmount(amountText, decimals);
        const { paymentEscrow } = chain.contracts;
        const me = chain.address!;
        await checkBalance(chain, amount, amountText, decimals);
        await deposit(actingAccount(chain), { amount });
        const balance = await paymentEscrow.balanceOf(me);
        printResult(o.json, { address: me, deposited: amount, escrowBalance: balance }, `deposited ${amountText} tokens; ${me} has ${formatTokens(balance, decimals)} in escrow`);
      });
    });
}
