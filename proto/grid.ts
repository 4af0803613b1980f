/** The gridpipe wire schema (grid.proto), loaded with protobufjs, and tensor conversion helpers. */
import protobuf from 'protobufjs';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Finds grid.proto beside this module in the source tree, or in the package root from dist/. */
function protoPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.join(here, 'grid.proto'), path.join(here, '..', '..', 'proto', 'grid.proto')]) {
    try {
      readFileSync(candidate);
      return candidate;
    } catch {
      // try the next place
    }
  }
  throw new Error('grid.proto not found beside proto/grid.ts');
}

/** The protobufjs root holding package `gridpipe.v1`. */
export const gridRoot = protobuf.loadSync(protoPath());

/** A wire tensor as decoded: raw bytes plus name, ONNX dtype code and dims. */
export interface WireTensor { name: string; dtype: number; dims: number[]; data: Uint8Array }

const TensorType = gridRoot.lookupType('gridpipe.v1.Tensor');

/** Encodes one tensor message. */
export function encodeTensor(t: WireTensor): Uint8Array {
  return TensorType.encode(TensorType.fromObject(t)).finish();
}

/** Decodes one tensor message; dims come back as numbers. */
export function decodeTensor(bytes: Uint8Array): WireTensor {
  const m = TensorType.decode(bytes) as unknown as { name: string; dtype: number; dims: (number | { toNumber(): number })[]; data: Uint8Array };
  return { name: m.name, dtype: m.dtype, dims: m.dims.map((d) => (typeof d === 'number' ? d : d.toNumber())), data: m.data };
}

/** Protocol ids of the grid, versioned. */
export const PROTOCOLS = {
  exec: '/gridpipe/exec/1.0.0',
  blob: '/gridpipe/blob/1.0.0',
  dhtPrefix: '/gridpipe',
} as const;
