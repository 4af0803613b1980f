/**
 * Payments for the gateway (`--chain-config`, `--rpc`, `--wallet`): a VoucherPayer (gateway/payer) per paying
 * wallet. Keys pay through the gateway's --wallet unless their `payer` names a keystore file of their own; a
 * key whose `payer` is an address must be that of a wallet the gateway holds (it cannot sign for others). Keys
 * naming one wallet share one payer, so one ledger counts everything signed against that wallet's escrow.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { VoucherPayer } from './payer/index.js';
import type { StepPayer } from '../scheduler/payment.js';
import { isEvmAddress } from '../contracts/address.js';
import type { ApiKey, ApiKeyConfig } from './keys.js';

export interface PaymentOptions {
  chainConfig: string;
  rpcUrl?: string;
  /** The gateway's own keystore (passphrase in GRIDPIPE_PASSPHRASE). */
  wallet?: string;
  /** Where payer ledgers live. */
  dataDir: string;
  logger?: Logger;
}

export interface Payers {
  payerFor(key: ApiKey): StepPayer | undefined;
  /** The gateway's own payer (--wallet), which also pays the verifier's checks (issue 21); undefined without one. */
  gatewayPayer?: StepPayer;
  close(): Promise<void>;
}

/** Opens the payers the keys need; throws naming a key whose payer cannot be used. */
export async function openPayers(options: PaymentOptions, keys: Map<string, ApiKeyConfig> | undefined): Promise<Payers> {
  const open = async (wallet: string, label: string): Promise<VoucherPayer> => VoucherPayer.open({
    chain: { chainConfig: options.chainConfig, rpcUrl: options.rpcUrl, wallet }, dataDir: path.join(options.dataDir, label), logger: options.logger,
  });
  const opened: VoucherPayer[] = [];
  try {
    const fallback = options.wallet ? await open(options.wallet, 'gateway') : undefined;
    if (fallback) opened.push(fallback);
    const byKeyName = new Map<string, VoucherPayer>();
    const byKeystore = new Map<string, VoucherPayer>();
    for (const config of keys?.values() ?? []) {
      if (!config.payer) continue;
      if (isEvmAddress(config.payer)) {
        const holder = opened.find((p) => p.payer.toLowerCase() === config.payer!.toLowerCase());
        if (!holder) throw new Error(`key "${config.name}": payer ${config.payer} is not the address of a wallet this gateway holds (give its keystore path instead, or --wallet)`);
        byKeyName.set(config.name, holder);
      } else {
        if (!existsSync(config.payer)) throw new Error(`key "${config.name}": payer ${config.payer} is neither an address nor a keystore file`);
        // One payer (one ledger) per wallet: two ledgers for one address would each count the whole escrow as theirs.
        const file = path.resolve(config.payer);
        let payer = byKeystore.get(file);
        if (!payer) {
          const fresh = await open(config.payer, `key-${config.name.replace(/[^\w.-]/g, '_')}`);
          payer = opened.find((p) => p.payer === fresh.payer);
          if (payer) await fresh.close();
          else opened.push((payer = fresh));
          byKeystore.set(file, payer);
        }
        byKeyName.set(config.name, payer);
      }
    }
    if (opened.length === 0) throw new Error('no paying wallet: give --wallet KEYSTORE, or keys whose "payer" is a keystore file');
    options.logger?.info({ payers: opened.map((p) => p.payer) }, 'payments on: suppliers that charge are paid with signed vouchers');
    return {
      payerFor: (key) => byKeyName.get(key.name) ?? fallback,
      gatewayPayer: fallback,
      close: async () => { await Promise.all(opened.map((p) => p.close())); },
    };
  } catch (err) {
    await Promise.all(opened.map((p) => p.close().catch(() => undefined)));
    throw err;
  }
}
