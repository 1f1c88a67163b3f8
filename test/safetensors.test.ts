import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import type { RawTensor } from '../src/io/raw-tensor.js';
import {
  readSafetensors,
  readSafetensorsDir,
  writeSafetensors,
  writeSafetensorsSharded,
} from '../src/io/safetensors.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixturesDir = process.env.HOOKLENS_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-st-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
/** A fresh empty directory per test case. */
function freshDir(): string {
  const d = path.join(tmp, `case-${counter++}`);
  fs.mkdirSync(d);
  return d;
}

/** Build a safetensors file by hand: header given as an object or raw string. */
function buildFile(file: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerLenOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function u16bytes(values: number[]): Uint8Array {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, i * 2));
  return b;
}

function t(shape: number[], fill: (i: number) => number): RawTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Float32Array.from({ length: n }, (_, i) => fill(i)) };
}

function expectHooklensError(fn: () => unknown, ...parts: string[]): HooklensError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a HooklensError').toBeInstanceOf(HooklensError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const p of parts) expect(msg).toContain(p);
  return err as HooklensError;
}

describe('writeSafetensors / readSafetensors', () => {
  it('round-trips float32 tensors and metadata', () => {
    const file = path.join(freshDir(), 'rt.safetensors');
    const tensors = {
      'a.weight': t([3, 4], (i) => i * 0.5 - 1),
      'b.bias': t([5], (i) => Math.sin(i)),
      scalar: t([], () => 42),
      empty: t([0, 3], () => 0),
    };
    writeSafetensors(file, tensors, { format: 'pt', note: 'hi' });
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const { metadata, tensors: back } = readSafetensors(file);
    expect(metadata).toEqual({ format: 'pt', note: 'hi' });
    expect([...back.keys()]).toEqual(Object.keys(tensors));
    for (const [name, src] of Object.entries(tensors)) {
      expect(back.get(name)!.shape).toEqual(src.shape);
      expect(back.get(name)!.data).toEqual(src.data);
    }
    // no temp files left behind
    expect(fs.readdirSync(path.dirname(file))).toEqual(['rt.safetensors']);
  });

  it('accepts a Map, subarray views, and the only filter', () => {
    const file = path.join(freshDir(), 'm.safetensors');
    const big = new Float32Array([9, 9, 1, 2, 3, 9]);
    const m = new Map<string, RawTensor>([
      ['x', { shape: [3], data: big.subarray(2, 5) }],
      ['y', t([2, 2], (i) => -i)],
    ]);
    writeSafetensors(file, m);
    const all = readSafetensors(file);
    expect(all.metadata).toEqual({});
    expect(Array.from(all.tensors.get('x')!.data)).toEqual([1, 2, 3]);
    const onlyY = readSafetensors(file, { only: (name) => name === 'y' });
    expect([...onlyY.tensors.keys()]).toEqual(['y']);
    expect(Array.from(onlyY.tensors.get('y')!.data)).toEqual([-0, -1, -2, -3]);
  });

  it('rejects tensors whose data does not match their shape', () => {
    const file = path.join(freshDir(), 'bad.safetensors');
    expectHooklensError(() => writeSafetensors(file, { w: { shape: [2, 2], data: new Float32Array(3) } }), file, '"w"');
    expect(fs.existsSync(file)).toBe(false);
  });

  it('overwrites an existing file atomically', () => {
    const file = path.join(freshDir(), 'o.safetensors');
    writeSafetensors(file, { a: t([2], () => 1) });
    writeSafetensors(file, { b: t([3], () => 2) });
    expect([...readSafetensors(file).tensors.keys()]).toEqual(['b']);
  });
});

describe('dtype conversion', () => {
  it('decodes F16 against hand-computed values', () => {
    const bits = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x0400, 0x3800, 0x8000, 0x7c00, 0xfc00, 0x7e00];
    const expected = [1, -2, 0.333251953125, 65504, 2 ** -24, 2 ** -14, 0.5, -0, Infinity, -Infinity, NaN];
    const file = buildFile(
      path.join(freshDir(), 'f16.safetensors'),
      { h: { dtype: 'F16', shape: [bits.length], data_offsets: [0, bits.length * 2] } },
      u16bytes(bits),
    );
    const got = Array.from(readSafetensors(file).tensors.get('h')!.data);
    expect(got).toEqual(expected);
    expect(Object.is(got[7], -0)).toBe(true);
  });

  it('decodes BF16 against hand-computed values', () => {
    const bits = [0x3f80, 0xc040, 0x4049, 0x3e80, 0x0000, 0x7f80, 0xff80, 0x0001];
    const expected = [1, -3, 3.140625, 0.25, 0, Infinity, -Infinity, 2 ** -133];
    const file = buildFile(
      path.join(freshDir(), 'bf16.safetensors'),
      { b: { dtype: 'BF16', shape: [2, 4], data_offsets: [0, 16] } },
      u16bytes(bits),
    );
    const tensor = readSafetensors(file).tensors.get('b')!;
    expect(tensor.shape).toEqual([2, 4]);
    expect(Array.from(tensor.data)).toEqual(expected);
  });

  it('decodes F64 and mixed dtypes with unaligned offsets', () => {
    const f64 = Buffer.alloc(24);
    [1.5, -2.25, 1e-3].forEach((v, i) => f64.writeDoubleLE(v, i * 8));
    const f32 = Buffer.alloc(8);
    f32.writeFloatLE(7.25, 0);
    f32.writeFloatLE(-0.125, 4);
    const data = Buffer.concat([u16bytes([0x3c00]), f32, f64]); // F32 starts at byte 2
    const file = buildFile(
      path.join(freshDir(), 'mixed.safetensors'),
      {
        __metadata__: { format: 'pt' },
        h: { dtype: 'F16', shape: [1], data_offsets: [0, 2] },
        f: { dtype: 'F32', shape: [2], data_offsets: [2, 10] },
        d: { dtype: 'F64', shape: [3], data_offsets: [10, 34] },
      },
      data,
    );
    const { tensors } = readSafetensors(file);
    expect(Array.from(tensors.get('h')!.data)).toEqual([1]);
    expect(Array.from(tensors.get('f')!.data)).toEqual([7.25, -0.125]);
    expect(Array.from(tensors.get('d')!.data)).toEqual([1.5, -2.25, Math.fround(1e-3)]);
  });

  it('decodes F16 tensors larger than one conversion chunk', () => {
    const n = (1 << 20) + 37;
    const b = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) b.writeUInt16LE(i % 3 === 0 ? 0x3c00 : 0xc000, i * 2);
    const file = buildFile(path.join(freshDir(), 'big16.safetensors'), { x: { dtype: 'F16', shape: [n], data_offsets: [0, n * 2] } }, b);
    const data = readSafetensors(file).tensors.get('x')!.data;
    expect(data.length).toBe(n);
    expect(data[0]).toBe(1);
    expect(data[n - 1]).toBe((n - 1) % 3 === 0 ? 1 : -2);
    expect(data[1 << 20]).toBe((1 << 20) % 3 === 0 ? 1 : -2);
  });

  it('reads tensors beyond the 2 GiB offset (sparse file)', () => {
    const file = path.join(freshDir(), 'sparse.safetensors');
    const begin = 2 ** 31 + 12;
    // The format needs contiguous tensors: a (sparse, never read) padding tensor fills [0, begin).
    const header = Buffer.from(JSON.stringify({ pad: { dtype: 'F32', shape: [begin / 4], data_offsets: [0, begin] }, far: { dtype: 'F32', shape: [2], data_offsets: [begin, begin + 8] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const payload = Buffer.alloc(8);
    payload.writeFloatLE(3.5, 0);
    payload.writeFloatLE(-1, 4);
    const fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(fd, len, 0, 8, 0);
      fs.writeSync(fd, header, 0, header.length, 8);
      fs.writeSync(fd, payload, 0, 8, 8 + header.length + begin);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.statSync(file).size).toBe(8 + header.length + begin + 8);
    const { tensors } = readSafetensors(file, { only: (n) => n === 'far' });
    expect(Array.from(tensors.get('far')!.data)).toEqual([3.5, -1]);
    fs.rmSync(file);
  });
});

describe('readSafetensors validation errors', () => {
  const okEntry = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  it('file shorter than 8 bytes', () => {
    const file = path.join(freshDir(), 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3, 4]));
    expectHooklensError(() => readSafetensors(file), file, '4 bytes');
  });

  it('missing file', () => {
    const file = path.join(freshDir(), 'nope.safetensors');
    expectHooklensError(() => readSafetensors(file), file, 'ENOENT');
  });

  it('header length beyond the file size', () => {
    const file = buildFile(path.join(freshDir(), 'hl.safetensors'), '{}', new Uint8Array(0), 1000n);
    expectHooklensError(() => readSafetensors(file), file, 'header length 1000');
    const huge = buildFile(path.join(freshDir(), 'hl2.safetensors'), '{}', new Uint8Array(0), 2n ** 63n);
    expectHooklensError(() => readSafetensors(huge), huge, 'past the end');
  });

  it('header not valid JSON', () => {
    const file = buildFile(path.join(freshDir(), 'json.safetensors'), '{"a": {"dtype": ');
    expectHooklensError(() => readSafetensors(file), file, 'not valid JSON');
  });

  it('header not an object', () => {
    for (const h of ['[1, 2]', '42', 'null']) {
      const file = buildFile(path.join(freshDir(), 'arr.safetensors'), h);
      expectHooklensError(() => readSafetensors(file), file, 'not a JSON object');
    }
  });

  it('entry missing dtype / shape / data_offsets', () => {
    for (const key of ['dtype', 'shape', 'data_offsets'] as const) {
      const entry: Record<string, unknown> = { ...okEntry };
      delete entry[key];
      const file = buildFile(path.join(freshDir(), `miss-${key}.safetensors`), { 'layer.w': entry }, new Uint8Array(8));
      expectHooklensError(() => readSafetensors(file), file, '"layer.w"', `missing "${key}"`);
    }
  });

  it('unsupported dtype names the dtype and tensor; only() can skip it', () => {
    const file = buildFile(
      path.join(freshDir(), 'i64.safetensors'),
      {
        'embeddings.position_ids': { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
        w: { dtype: 'F32', shape: [2], data_offsets: [16, 24] },
      },
      new Uint8Array(24),
    );
    expectHooklensError(() => readSafetensors(file), file, '"embeddings.position_ids"', 'unsupported dtype I64');
    const { tensors } = readSafetensors(file, { only: (n) => n === 'w' });
    expect([...tensors.keys()]).toEqual(['w']);
  });

  it('data_offsets end < begin', () => {
    const file = buildFile(
      path.join(freshDir(), 'rev.safetensors'),
      { w: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } },
      new Uint8Array(8),
    );
    expectHooklensError(() => readSafetensors(file), file, '"w"', 'end 0 < begin 8');
  });

  it('data_offsets past the end of the data section', () => {
    const file = buildFile(
      path.join(freshDir(), 'past.safetensors'),
      { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } },
      new Uint8Array(8),
    );
    expectHooklensError(() => readSafetensors(file), file, '"w"', 'past the end of the data section (8 bytes)');
  });

  it('byte length != numel × dtype size', () => {
    const file = buildFile(
      path.join(freshDir(), 'len.safetensors'),
      { w: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } },
      new Uint8Array(8),
    );
    expectHooklensError(() => readSafetensors(file), file, '"w"', 'byte length 8', '6 bytes');
  });

  // The layout rule of the format's reference implementation: ranges tile the data section.
  it('overlapping tensors (aliases of the same bytes) are refused, naming both', () => {
    const file = buildFile(
      path.join(freshDir(), 'alias.safetensors'),
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } },
      new Uint8Array(8),
    );
    expectHooklensError(() => readSafetensors(file), file, '"a"', '"b"', 'overlap');
  });

  it('partially overlapping tensors are refused, even when only() skips one of them', () => {
    const file = buildFile(
      path.join(freshDir(), 'partial.safetensors'),
      { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } },
      new Uint8Array(16),
    );
    expectHooklensError(() => readSafetensors(file), file, '"a" [0, 12)', '"b" [8, 16)', 'overlap');
    expectHooklensError(() => readSafetensors(file, { only: (n) => n === 'b' }), file, 'overlap');
  });

  it('a gap between tensors, or bytes after the last one, are refused', () => {
    const gap = buildFile(
      path.join(freshDir(), 'gap.safetensors'),
      { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } },
      new Uint8Array(12),
    );
    expectHooklensError(() => readSafetensors(gap), gap, 'bytes [4, 8)', '"a"', 'contiguous');
    const start = buildFile(path.join(freshDir(), 'start.safetensors'), { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8));
    expectHooklensError(() => readSafetensors(start), start, 'bytes [0, 4)', 'start of the data section');
    const tail = buildFile(path.join(freshDir(), 'tail.safetensors'), { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(12));
    expectHooklensError(() => readSafetensors(tail), tail, '12 bytes', 'cover only 4');
  });

  it('zero-sized tensors fit anywhere in the tiling', () => {
    const file = buildFile(
      path.join(freshDir(), 'empty.safetensors'),
      { e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } },
      new Uint8Array(8),
    );
    expect([...readSafetensors(file).tensors.keys()].sort()).toEqual(['a', 'b', 'e']);
  });

  it('malformed shape / offsets', () => {
    const a = buildFile(path.join(freshDir(), 's.safetensors'), { w: { ...okEntry, shape: [-1] } }, new Uint8Array(8));
    expectHooklensError(() => readSafetensors(a), a, '"w"', '"shape"');
    const b = buildFile(path.join(freshDir(), 'o.safetensors'), { w: { ...okEntry, data_offsets: [0] } }, new Uint8Array(8));
    expectHooklensError(() => readSafetensors(b), b, '"w"', '"data_offsets"');
  });
});

describe('directories and shards', () => {
  const tensors = new Map<string, RawTensor>([
    ['emb.weight', t([10, 8], (i) => i / 7)],
    ['h.0.w', t([8, 8], (i) => -i)],
    ['h.0.b', t([8], (i) => i * i)],
    ['h.1.w', t([8, 8], (i) => Math.cos(i))],
    ['h.1.b', t([8], () => 0.25)],
    ['norm', t([8], () => 1)],
  ]);

  it('sharded round trip', () => {
    const dir = path.join(freshDir(), 'sharded');
    const shards = writeSafetensorsSharded(dir, tensors, 300);
    expect(shards.length).toBeGreaterThan(1);
    const n = String(shards.length).padStart(5, '0');
    shards.forEach((s, i) => expect(s).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${n}.safetensors`));
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(Object.keys(index.weight_map)).toEqual([...tensors.keys()]);
    expect(index.metadata.total_size).toBe([...tensors.values()].reduce((a, x) => a + x.data.length * 4, 0));
    expect(fs.readdirSync(dir).sort()).toEqual([...shards, 'model.safetensors.index.json'].sort());
    const back = readSafetensorsDir(dir);
    expect([...back.keys()].sort()).toEqual([...tensors.keys()].sort());
    for (const [name, src] of tensors) {
      expect(back.get(name)!.shape).toEqual(src.shape);
      expect(back.get(name)!.data).toEqual(src.data);
    }
    // a single tensor larger than the limit gets its own shard
    const one = writeSafetensorsSharded(path.join(freshDir(), 'tiny'), tensors, 1);
    expect(one.length).toBe(tensors.size);
  });

  it('model.safetensors and a lone *.safetensors', () => {
    const a = freshDir();
    writeSafetensors(path.join(a, 'model.safetensors'), tensors);
    writeSafetensors(path.join(a, 'other.safetensors'), { x: t([1], () => 1) });
    expect(readSafetensorsDir(a).size).toBe(tensors.size);
    const b = freshDir();
    writeSafetensors(path.join(b, 'weights.safetensors'), tensors);
    expect(readSafetensorsDir(b).get('h.1.b')!.data[0]).toBe(0.25);
  });

  it('errors: no weights, several without index, missing dir', () => {
    const empty = freshDir();
    fs.writeFileSync(path.join(empty, 'config.json'), '{}');
    expectHooklensError(() => readSafetensorsDir(empty), empty, 'no safetensors weights');
    const many = freshDir();
    writeSafetensors(path.join(many, 'a.safetensors'), { x: t([1], () => 1) });
    writeSafetensors(path.join(many, 'b.safetensors'), { y: t([1], () => 1) });
    expectHooklensError(() => readSafetensorsDir(many), many, 'model.safetensors.index.json');
    const missing = path.join(tmp, 'does-not-exist');
    expectHooklensError(() => readSafetensorsDir(missing), missing, 'does not exist');
  });

  it('errors: missing shard file, tensor missing from its shard, bad index', () => {
    const dir = path.join(freshDir(), 'broken');
    const shards = writeSafetensorsSharded(dir, tensors, 300);
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));

    index.weight_map['ghost.weight'] = shards[0];
    fs.writeFileSync(indexFile, JSON.stringify(index));
    expectHooklensError(() => readSafetensorsDir(dir), shards[0]!, '"ghost.weight"', 'missing from this shard');
    delete index.weight_map['ghost.weight'];
    fs.writeFileSync(indexFile, JSON.stringify(index));

    fs.rmSync(path.join(dir, shards[1]!));
    expectHooklensError(() => readSafetensorsDir(dir), indexFile, shards[1]!, 'missing');

    fs.writeFileSync(indexFile, '{"weight_map": ');
    expectHooklensError(() => readSafetensorsDir(dir), indexFile);
    fs.writeFileSync(indexFile, '{"metadata": {}}');
    expectHooklensError(() => readSafetensorsDir(dir), indexFile, 'weight_map');
  });
});

describe('real fixtures', () => {
  function fixture(name: string): string {
    const file = path.join(fixturesDir, name, 'model.safetensors');
    if (!fs.existsSync(file)) {
      throw new Error(`fixture ${file} is missing; set HOOKLENS_FIXTURES to the shared fixtures directory`);
    }
    return file;
  }

  it('reads tiny-gpt2 (Conv1D weights are [in, out], tied embeddings)', () => {
    const { metadata, tensors } = readSafetensors(fixture('tiny-gpt2'));
    expect(metadata.format).toBe('pt');
    expect(tensors.get('transformer.wte.weight')!.shape).toEqual([211, 48]);
    expect(tensors.get('transformer.wpe.weight')!.shape).toEqual([64, 48]);
    expect(tensors.get('transformer.h.0.attn.c_attn.weight')!.shape).toEqual([48, 144]);
    expect(tensors.get('transformer.h.0.attn.c_attn.bias')!.shape).toEqual([144]);
    expect(tensors.get('transformer.h.2.mlp.c_fc.weight')!.shape).toEqual([48, 192]);
    expect(tensors.get('transformer.h.2.mlp.c_proj.weight')!.shape).toEqual([192, 48]);
    expect(tensors.get('transformer.ln_f.weight')!.shape).toEqual([48]);
    expect(tensors.has('lm_head.weight')).toBe(false);
    expect(tensors.size).toBe(4 + 12 * 3);
    for (const x of tensors.values()) expect(x.data.every(Number.isFinite)).toBe(true);
    // readSafetensorsDir gives the same tensors
    const viaDir = readSafetensorsDir(path.join(fixturesDir, 'tiny-gpt2'));
    expect(viaDir.get('transformer.wte.weight')!.data).toEqual(tensors.get('transformer.wte.weight')!.data);
  });

  it('reads tiny-llama (untied lm_head, GQA k/v)', () => {
    const { tensors } = readSafetensors(fixture('tiny-llama'));
    expect(tensors.get('model.embed_tokens.weight')!.shape).toEqual([211, 64]);
    expect(tensors.get('lm_head.weight')!.shape).toEqual([211, 64]);
    expect(tensors.get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([64, 64]);
    expect(tensors.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([32, 64]);
    expect(tensors.get('model.layers.2.mlp.gate_proj.weight')!.shape).toEqual([96, 64]);
    expect(tensors.get('model.layers.2.mlp.down_proj.weight')!.shape).toEqual([64, 96]);
    expect(tensors.get('model.norm.weight')!.shape).toEqual([64]);
    expect(tensors.size).toBe(3 + 9 * 3);
  });

  it('reads tiny-qwen2 (q/k/v biases, tied embeddings)', () => {
    const { tensors } = readSafetensors(fixture('tiny-qwen2'));
    expect(tensors.get('model.layers.0.self_attn.q_proj.bias')!.shape).toEqual([64]);
    expect(tensors.get('model.layers.0.self_attn.k_proj.bias')!.shape).toEqual([32]);
    expect(tensors.get('model.layers.0.self_attn.v_proj.bias')!.shape).toEqual([32]);
    expect(tensors.has('lm_head.weight')).toBe(false);
    expect(tensors.size).toBe(2 + 12 * 3);
  });

  it('round-trips a real checkpoint through write + sharded write', () => {
    const { tensors } = readSafetensors(fixture('tiny-gpt2'));
    const d = freshDir();
    writeSafetensors(path.join(d, 'model.safetensors'), tensors, { format: 'pt' });
    const again = readSafetensors(path.join(d, 'model.safetensors')).tensors;
    const sdir = path.join(d, 'sharded');
    writeSafetensorsSharded(sdir, tensors, 64 * 1024);
    const sharded = readSafetensorsDir(sdir);
    for (const [name, x] of tensors) {
      expect(again.get(name)!.data).toEqual(x.data);
      expect(sharded.get(name)!.data).toEqual(x.data);
    }
  });
});
