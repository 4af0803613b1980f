/**
 * The gridpipe wire as code: the message classes generated from proto/*.proto (proto/generated/, made by
 * `npm run proto:gen`), the tensor message helpers and the protocol ids.
 *
 * Why a module apart from grid.ts: this one runs anywhere. It imports only the generated static code and
 * the protobufjs minimal runtime (no reflection, no `Function` code generation, no fs), so the browser SDK
 * (`gridpipe/client`) and every process share it; grid.ts adds the reflection root for tools and tests.
 */
import { gridpipe } from './generated/grid.js';

export { gridpipe };

/** Package gridpipe.v1: one class per message (encode, decode, fromObject, toObject) and the ErrorCode enum. */
export const wire = gridpipe.v1;

/** A wire tensor as decoded: raw bytes plus name, ONNX dtype code and dims. */
export interface WireTensor {
  name: string; dtype: number; dims: number[]; data: Uint8Array;
  /** Wire compression of a float tensor (net/exec/wire-compression.ts); absent or 0: exact. */
  encoding?: number;
}

/** Encodes one tensor message. */
export function encodeTensor(t: WireTensor): Uint8Array {
  return wire.Tensor.encode(wire.Tensor.fromObject(t)).finish();
}

/** Decodes one tensor message; dims come back as numbers. */
export function decodeTensor(bytes: Uint8Array): WireTensor {
  const m = wire.Tensor.decode(bytes);
  const t: WireTensor = { name: m.name, dtype: m.dtype, dims: m.dims.map((d) => (typeof d === 'number' ? d : d.toNumber())), data: m.data };
  if (m.encoding) t.encoding = m.encoding;
  return t;
}

/** Protocol ids of the grid, versioned. */
export const PROTOCOLS = {
  exec: '/gridpipe/exec/1.0.0',
  blob: '/gridpipe/blob/1.0.0',
  dhtPrefix: '/gridpipe',
} as const;
