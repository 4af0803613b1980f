/**
 * Where a model's tokenizer files come from, for every process that serves text with them (the gateway,
 * `gridpipe generate --prompt`): the model's own folder when it was given as one (a copy is used only when
 * its bytes match the manifest's CID), else the grid, through the fetch it is given (GridClient.fetchTokenizerFile: by CID, first from the
 * model's hosts, then from whoever the DHT says provides it; verified and size-capped).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { cidOfBytes } from '../../fragments/cid.js';
import { TokenizerUnavailableError } from './index.js';
import type { TokenizerFile, TokenizerFileReader } from './text-tokenizer.js';

export interface TokenizerFilesOptions {
  /** The model's fragment folder, when the model was given as one. */
  sourceDir?: string;
  /** Fetches a file from the grid by CID (GridClient.fetchTokenizerFile): used when the folder has no matching copy. */
  fetch(file: TokenizerFile): Promise<Uint8Array>;
}

/** A reader of the model's tokenizer files: its folder first, else the grid; a TokenizerUnavailableError says why neither worked. */
export function tokenizerFileReader(options: TokenizerFilesOptions): TokenizerFileReader {
  return async (f) => {
    let local: string | undefined;
    if (options.sourceDir) {
      try {
        const bytes = await readFile(path.join(options.sourceDir, path.basename(f.file)));
        if (cidOfBytes(bytes) === f.cid) return bytes;
        local = `${f.file} in ${options.sourceDir} does not match its CID in the manifest`;
      } catch (err) {
        local = `${f.file} in ${options.sourceDir}: ${(err as Error).message}`;
      }
    }
    try {
      return await options.fetch(f);
    } catch (err) {
      throw new TokenizerUnavailableError(`${local ? `${local}; ` : ''}${f.file} (${f.cid}) could not be fetched from the grid: ${(err as Error).message}`, { cause: err });
    }
  };
}
