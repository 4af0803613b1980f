/**
 * Staking from the CLI: `gridpipe stake AMOUNT`, `gridpipe unstake [AMOUNT]` (starts the unbonding delay),
 * `gridpipe withdraw` (takes the stake back once unbonded), `gridpipe stake bind` (cli/stake-bind.ts: the
 * staking key signs the peer id it stands behind). Amounts are decimal token units ("12.5").
 */
import { Command } from 'commander';
import { checkTokenAmountText, withChainOptions, AMOUNT_HELP, type ChainCliOptions } from './chain-options.js';
import { UsageError } from './errors.js';
import { stakeBindCommand } from './stake-bind.js';

export function stakeCommand(): Command {
  return withChainOptions(new Command('stake')
    .description('Stake tokens in the StakeRegistry so the grid routes to this supplier (approves the registry first)')
    .argument('<amount>', AMOUNT_HELP), 'keystore of the supplier\'s staking account (passphrase in GRIDPIPE_PASSPHRASE)')
    .addCommand(stakeBindCommand())
    .action(async (amountText: string, o: ChainCliOptions) => {
      checkTokenAmountText(amountText);
      const { withChain, parseTokenAmount, tokenDecimals, formatTokens, printResult, checkBalance, actingAccount } = await import('./chain-args.js'); // ethers loads here
      const { stake } = await import('../contracts/actions.js');
      await withChain(o, true, async (chain) => {
        const decimals = await tokenDecimals(chain);
        const amount = parseTokenAmount(amountText, decimals);
        const { stakeRegistry } = chain.contracts;
        const me = chain.address!;
        await checkBalance(chain, amount, amountText, decimals);
        await stake(actingAccount(chain), { amount });
        const s = await stakeRegistry.stakeOf(me);
        const listed = await stakeRegistry.isListed(me);
        const minimum = await stakeRegistry.minimumStake();
        printResult(o.json, { address: me, staked: s.staked, listed, minimumStake: minimum },
          `${me} now stakes ${formatTokens(s.staked, decimals)} tokens (${listed ? 'listed' : `not listed: the minimum is ${formatTokens(minimum, decimals)}`})`);
      });
    });
}

export function unstakeCommand(): Command {
  return withChainOptions(new Command('unstake')
    .description('Request to unstake (all when AMOUNT is omitted); withdraw it with `gridpipe withdraw` after the unbonding delay')
    .argument('[amount]', AMOUNT_HELP), 'keystore of the supplier\'s staking account (passphrase in GRIDPIPE_PASSPHRASE)')
    .action(async (amountText: string | undefined, o: ChainCliOptions) => {
      if (amountText !== undefined) checkTokenAmountText(amountText);
      const { withChain, parseTokenAmount, tokenDecimals, formatTokens, printResult, actingAccount } = await import('./chain-args.js'); // ethers loads here
      const { unstake } = await import('../contracts/actions.js');
      await withChain(o, true, async (chain) => {
        const decimals = await tokenDecimals(chain);
        const { stakeRegistry } = chain.contracts;
        const me = chain.address!;
        const before = await stakeRegistry.stakeOf(me);
        const amount = amountText === undefined ? before.staked : parseTokenAmount(amountText, decimals);
        if (amount === 0n) throw new UsageError(`${me} has nothing staked to unstake`);
        if (amount > before.staked) throw new UsageError(`${me} stakes ${formatTokens(before.staked, decimals)} tokens, less than ${formatTokens(amount, decimals)}`);
        await unstake(actingAccount(chain), { amount });
        const s = await stakeRegistry.stakeOf(me);
        const readyAt = new Date(Number(s.unbondingReadyAt) * 1000).toISOString();
        printResult(o.json, { address: me, staked: s.staked, unbonding: s.unbonding, unbondingReadyAt: s.unbondingReadyAt },
          `${formatTokens(s.unbonding, decimals)} tokens unbonding until ${readyAt}; ${formatTokens(s.staked, decimals)} still staked`);
      });
    });
}

export function withdrawCommand(): Command {
  return withChainOptions(new Command('withdraw')
    .description('Withdraw unbonded stake (after `gridpipe unstake` and the unbonding delay)'), 'keystore of the supplier\'s staking account (passphrase in GRIDPIPE_PASSPHRASE)')
    .action(async (o: ChainCliOptions) => {
      const { withChain, tokenDecimals, formatTokens, printResult, actingAccount } = await import('./chain-args.js'); // ethers loads here
      const { withdrawStake } = await import('../contracts/actions.js');
      await withChain(o, true, async (chain) => {
        const decimals = await tokenDecimals(chain);
        const { stakeRegistry, token } = chain.contracts;
        const me = chain.address!;
        const s = await stakeRegistry.stakeOf(me);
        if (s.unbonding === 0n) throw new UsageError(`${me} has nothing unbonding: run \`gridpipe unstake\` first`);
        const before = await token.balanceOf(me);
        await withdrawStake(actingAccount(chain));
        const got = (await token.balanceOf(me)) - before;
        printResult(o.json, { address: me, withdrawn: got }, `withdrew ${formatTokens(got, decimals)} tokens to ${me}`);
      });
    });
}
