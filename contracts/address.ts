/** EVM address syntax, shared by everything that takes a staking or payer address (pure: no ethers needed). */

/** Whether `text` is a 0x-prefixed 20-byte EVM address (any letter case). */
export function isEvmAddress(text: string): boolean {
  return /^0x[0-9a-fA-F]{40}$/.test(text);
}
