/**
 * The committed message code (proto/generated/) is exactly what `npm run proto:gen` makes from proto/*.proto,
 * so the types and the .proto files cannot drift apart; and the generated classes speak the same bytes as a
 * reflection type read from the .proto text itself (the wire running nodes speak).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { gridRoot, wire } from '../../proto/grid.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const GENERATED = ['grid.js', 'grid.d.ts', 'grid.json'];

describe('generated message code', () => {
  // protobufjs-cli (pbjs, pbts) is a devDependency, so `npm install && npm test` always has the generator.
  it('regenerating from proto/*.proto gives the committed files byte for byte', () => {
    const tmp = tempDir('gridpipe-proto-gen-');
    try {
      execFileSync(process.execPath, [path.join(ROOT, 'proto', 'generate.mjs'), '--out', tmp.dir], { cwd: ROOT, stdio: 'pipe' });
      for (const file of GENERATED) {
        const fresh = readFileSync(path.join(tmp.dir, file));
        const committed = readFileSync(path.join(ROOT, 'proto', 'generated', file));
        expect(fresh.equals(committed), `proto/generated/${file} differs from a fresh \`npm run proto:gen\`: run it and commit`).toBe(true);
      }
    } finally {
      tmp.cleanup();
    }
  }, 120_000);

  it('has every message and field of the .proto files, with the same numbers and types', () => {
    const fromText = new protobuf.Root();
    const dir = path.join(ROOT, 'proto');
    fromText.resolvePath = (_origin, target) => path.join(dir, path.basename(target));
    fromText.loadSync(['grid.proto', 'capacity.proto', 'blob.proto', 'exec.proto'].map((f) => path.join(dir, f)));
    const v1Text = fromText.lookup('gridpipe.v1') as protobuf.Namespace;
    const v1Json = gridRoot.lookup('gridpipe.v1') as protobuf.Namespace;
    const generated = wire as unknown as Record<string, unknown>;
    const names = v1Text.nestedArray.map((n) => n.name).sort();
    expect(v1Json.nestedArray.map((n) => n.name).sort()).toEqual(names);
    expect(Object.keys(generated).sort()).toEqual(names);
    for (const type of v1Text.nestedArray) {
      if (type instanceof protobuf.Enum) {
        expect(generated[type.name], type.name).toEqual(type.values);
        continue;
      }
      const t = type as protobuf.Type;
      const shape = (x: protobuf.Type) => x.fieldsArray.map((f) => `${f.id} ${f.name} ${f.rule ?? ''} ${f.type} ${f.partOf?.name ?? ''}`);
      expect(shape(v1Json.lookupType(t.name)), t.name).toEqual(shape(t));
    }
  });

  it('generated classes and the .proto text encode a full step to the same bytes and decode each other', () => {
    const fromText = new protobuf.Root();
    const dir = path.join(ROOT, 'proto');
    fromText.resolvePath = (_origin, target) => path.join(dir, path.basename(target));
    fromText.loadSync(['grid.proto', 'exec.proto'].map((f) => path.join(dir, f)));
    const Text = fromText.lookupType('gridpipe.v1.ExecRequest');
    const step = {
      step: {
        sessionId: 's-1', stepId: '1099511627779', position: 300, draftTokens: 2, want: ['logits'], chunkTokens: [3, 1], lastRowOnly: ['logits'], topK: 1,
        inputs: [{ name: 'hidden', dtype: 1, dims: [1, 2, 2], data: new Uint8Array(16).map((_, i) => i) }],
        replay: [{ position: 7, inputs: [{ name: 'ids', dtype: 7, dims: [1, 1], data: new Uint8Array(8) }] }],
        forward: [{ peerId: 'p', addrs: ['/ip4/127.0.0.1/tcp/1'], sessionId: 'n' }],
        voucher: { payer: '0xaa', payee: '0xbb', cumulativeAmount: '12345678901234567890', deadline: '1700000000', signature: new Uint8Array(65).fill(7) },
        sample: { temperature: 0.7, topK: 40, topP: 0.9, seed: '-5', position: 12 },
      },
    };
    const generatedBytes = wire.ExecRequest.encode(wire.ExecRequest.fromObject(step)).finish();
    const textBytes = Text.encode(Text.fromObject(step)).finish();
    expect(Buffer.from(generatedBytes).equals(Buffer.from(textBytes))).toBe(true);
    const options = { longs: String, bytes: Array, defaults: false };
    expect(wire.ExecRequest.toObject(wire.ExecRequest.decode(textBytes), options)).toEqual(Text.toObject(Text.decode(generatedBytes), options));
  });
});
