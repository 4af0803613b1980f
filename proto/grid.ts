/** The gridpipe wire schema (grid.proto and one .proto per protocol), loaded with protobufjs. */
import protobuf from 'protobufjs';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The wire schema files, in load order. */
export const PROTO_FILES = ['grid.proto', 'capacity.proto', 'blob.proto', 'exec.proto'] as const;

/** The folder holding the .proto files: beside this module in the source tree, or proto/ from dist/. */
function protoDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [here, path.join(here, '..', '..', 'proto')]) {
    if (existsSync(path.join(candidate, 'grid.proto'))) return candidate;
  }
  throw new Error('grid.proto not found beside proto/grid.ts');
}

/** The protobufjs root holding package `gridpipe.v1` (every protocol's messages). */
export const gridRoot = (() => {
  const dir = protoDir();
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(dir, path.basename(target));
  return root.loadSync(PROTO_FILES.map((f) => path.join(dir, f)));
})();

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
