/**
 * The gridpipe wire schema (grid.proto and one .proto per protocol, package gridpipe.v1): the generated
 * message classes and tensor helpers of wire.ts, plus `gridRoot`, a protobufjs reflection root of the same
 * schema for code that looks a type up by name or inspects its fields (tests, tools).
 *
 * The reflection root is built from proto/generated/grid.json (made by `npm run proto:gen` with the static
 * code), so nothing reads .proto files at run time. Code that only encodes and decodes imports wire.ts.
 */
import protobuf from 'protobufjs';
import schema from './generated/grid.json' with { type: 'json' };

export * from './wire.js';

/** The protobufjs reflection root holding package `gridpipe.v1` (every protocol's messages). */
export const gridRoot = protobuf.Root.fromJSON(schema);
