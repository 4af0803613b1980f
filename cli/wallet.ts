/** `gridpipe wallet new --out FILE`: a new account as an encrypted JSON keystore (passphrase from GRIDPIPE_PASSPHRASE). */
import { Command } from 'commander';
import path from 'node:path';

export function walletCommand(): Command {
  const wallet = new Command('wallet').description('Encrypted keystore wallets (the passphrase comes from GRIDPIPE_PASSPHRASE)');
  wallet.command('new')
    .description('Create a new account and save it as an encrypted keystore (mode 0600, never overwritten)')
    .requiredOption('--out <file>', 'where to write the keystore')
    .option('--json', 'print the result as one JSON line', false)
    .action(async (o: { out: string; json: boolean }) => {
      const { createKeystore } = await import('../contracts/wallet.js'); // ethers loads here, not with the command tree
      const { printResult } = await import('./chain-args.js');
      const { address, file } = await createKeystore(o.out);
      printResult(o.json, { address, file: path.resolve(file) }, `created ${address}\n  keystore: ${path.resolve(file)}`);
    });
  wallet.command('address')
    .description('Print the address a keystore holds (no passphrase needed)')
    .requiredOption('--wallet <keystore>', 'the keystore')
    .option('--json', 'print the result as one JSON line', false)
    .action(async (o: { wallet: string; json: boolean }) => {
      const { keystoreAddress } = await import('../contracts/wallet.js');
      const { printResult } = await import('./chain-args.js');
      const address = keystoreAddress(o.wallet);
      printResult(o.json, { address }, address);
    });
  return wallet;
}
