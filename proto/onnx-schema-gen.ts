/**
 * Writes proto/onnx-schema.ts: the ONNX schema (ONNX 1.20, IR version 13, from the descriptor the `onnx-buf`
 * package ships) as protobufjs JSON. Loading that JSON at run time needs protobufjs alone, where converting
 * the descriptor needs @bufbuild's runtime and protobufjs's descriptor extension: about 140 ms of every
 * `gridpipe model ...` start. Run `node --import tsx proto/onnx-schema-gen.ts` after updating onnx-buf;
 * test/proto/onnx-schema.test.ts fails while the committed file differs from what this writes.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import descriptorExt from 'protobufjs/ext/descriptor/index.js';
import { toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { file_onnx } from 'onnx-buf';

/** The ONNX schema as protobufjs builds it from onnx-buf's descriptor. */
export function onnxRootFromDescriptor(): protobuf.Root {
  const descriptorBytes = toBinary(FileDescriptorProtoSchema, file_onnx.proto);
  const ext = descriptorExt as unknown as { FileDescriptorProto: protobuf.Type };
  const fileDescriptor = ext.FileDescriptorProto.decode(descriptorBytes);
  return (protobuf.Root as unknown as { fromDescriptor(d: unknown): protobuf.Root }).fromDescriptor({ file: [fileDescriptor] });
}

/** The text of proto/onnx-schema.ts. */
export function onnxSchemaModule(): string {
  return [
    '/**',
    ' * The ONNX schema (ONNX 1.20, IR version 13) as protobufjs JSON, generated from the descriptor the `onnx-buf`',
    ' * package ships by proto/onnx-schema-gen.ts (`node --import tsx proto/onnx-schema-gen.ts`). Do not edit.',
    ' */',
    '',
    `export const ONNX_SCHEMA = ${JSON.stringify(onnxRootFromDescriptor().toJSON(), null, 2)};`,
    '',
  ].join('\n');
}

/** Where the generated module lives (in the source tree, also when run from dist/). */
export function onnxSchemaPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, '..', '..') : path.resolve(here, '..');
  return path.join(root, 'proto', 'onnx-schema.ts');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(onnxSchemaPath(), onnxSchemaModule());
  process.stdout.write(`wrote ${onnxSchemaPath()}\n`);
}
