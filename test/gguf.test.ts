import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { ggufTensorTypeName, parseGguf, readGguf, type GgufFile } from '../src/io/gguf.js';
import {
  f32Bytes,
  GgufBuilder,
  q8_0Bytes,
  stories260KPaths,
  u16Bytes,
  VT,
} from './helpers/gguf-builder.js';

const { model: MODEL, reference: REFERENCE } = stories260KPaths();

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-gguf-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
function writeTmp(buf: Uint8Array, name = `case-${counter++}.gguf`): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, buf);
  return f;
}

/** Expect a one-line HooklensError naming the file; returns the message. */
function expectGgufError(file: string, pattern?: RegExp): string {
  let err: unknown;
  try {
    readGguf(file);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${file} to be rejected`).toBeInstanceOf(HooklensError);
  const msg = (err as Error).message;
  expect(msg).toContain(file);
  expect(msg).not.toContain('\n');
  if (pattern) expect(msg).toMatch(pattern);
  return msg;
}

describe('stories260K.gguf', () => {
  let g: GgufFile;
  beforeAll(() => {
    g = readGguf(MODEL);
  });

  it('reads the header and metadata', () => {
    expect(g.version).toBe(3);
    expect(g.path).toBe(MODEL);
    expect(g.alignment).toBe(32);
    expect(g.dataOffset % 32).toBe(0);
    const m = g.metadata;
    expect(m['general.architecture']).toBe('llama');
    expect(m['llama.block_count']).toBe(5);
    expect(m['llama.embedding_length']).toBe(64);
    expect(m['llama.attention.head_count']).toBe(8);
    expect(m['llama.attention.head_count_kv']).toBe(4);
    expect(m['llama.feed_forward_length']).toBe(172);
    expect(m['llama.context_length']).toBe(2048);
    expect(m['llama.rope.dimension_count']).toBe(8);
    expect(m['llama.attention.layer_norm_rms_epsilon']).toBeCloseTo(1e-5, 10);
    expect(m['tokenizer.ggml.model']).toBe('llama');
    expect(m['tokenizer.ggml.bos_token_id']).toBe(1);
    expect(m['tokenizer.ggml.eos_token_id']).toBe(2);
    expect(m['tokenizer.ggml.unknown_token_id']).toBe(0);
    const tokens = m['tokenizer.ggml.tokens'] as string[];
    expect(tokens).toHaveLength(512);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(tokens[259]).toBe('▁t');
    expect(m['tokenizer.ggml.scores']).toHaveLength(512);
    expect((m['tokenizer.ggml.token_type'] as number[]).slice(0, 4)).toEqual([2, 3, 3, 6]);
  });

  it('has the expected tensors in row-major shape', () => {
    expect(g.tensorInfos).toHaveLength(3 + 5 * 9);
    expect(g.tensors.size).toBe(3 + 5 * 9);
    const shape = (n: string): number[] | undefined => g.tensors.get(n)?.shape;
    expect(shape('token_embd.weight')).toEqual([512, 64]);
    expect(shape('output.weight')).toEqual([512, 64]);
    expect(shape('output_norm.weight')).toEqual([64]);
    for (let l = 0; l < 5; l++) {
      expect(shape(`blk.${l}.attn_q.weight`)).toEqual([64, 64]);
      expect(shape(`blk.${l}.attn_k.weight`)).toEqual([32, 64]);
      expect(shape(`blk.${l}.attn_v.weight`)).toEqual([32, 64]);
      expect(shape(`blk.${l}.attn_output.weight`)).toEqual([64, 64]);
      expect(shape(`blk.${l}.ffn_gate.weight`)).toEqual([172, 64]);
      expect(shape(`blk.${l}.ffn_up.weight`)).toEqual([172, 64]);
      expect(shape(`blk.${l}.ffn_down.weight`)).toEqual([64, 172]);
      expect(shape(`blk.${l}.attn_norm.weight`)).toEqual([64]);
      expect(shape(`blk.${l}.ffn_norm.weight`)).toEqual([64]);
    }
    const q = g.tensorInfos.find((t) => t.name === 'blk.0.attn_k.weight')!;
    expect(q.dims).toEqual([64, 32]);
    expect(q.type).toBe(0);
    expect(q.typeName).toBe('F32');
    for (const info of g.tensorInfos) {
      expect(info.type).toBe(0);
      expect(g.tensors.get(info.name)!.data.length).toBe(info.shape.reduce((a, b) => a * b, 1));
      expect(info.fileOffset + info.nbytes).toBeLessThanOrEqual(fs.statSync(MODEL).size);
    }
  });

  it('decodes sane values (embedding row = reference hook_embed)', () => {
    for (const [name, t] of g.tensors) {
      expect(t.data.every(Number.isFinite), name).toBe(true);
    }
    // RMSNorm gains are positive-ish and O(1); weights are not all zero.
    const norm = g.tensors.get('blk.0.attn_norm.weight')!.data;
    expect(Math.max(...norm)).toBeGreaterThan(0.1);
    const ref = JSON.parse(fs.readFileSync(REFERENCE, 'utf8')) as {
      tokens: number[];
      activations: { hook_embed: { shape: number[]; values: number[] } };
    };
    const emb = g.tensors.get('token_embd.weight')!;
    const d = 64;
    for (let p = 0; p < ref.tokens.length; p++) {
      const id = ref.tokens[p]!;
      for (let j = 0; j < d; j++) {
        expect(Math.abs(emb.data[id * d + j]! - ref.activations.hook_embed.values[p * d + j]!)).toBeLessThan(1e-5);
      }
    }
  });

  it('rejects truncated copies with a clear error', () => {
    const full = fs.readFileSync(MODEL);
    const g0 = readGguf(MODEL);
    // Inside the fixed header, inside the metadata, inside tensor infos, inside the data.
    const cuts = [10, 100, 5000, g0.dataOffset - 40, full.length - 100, full.length - 1];
    for (const cut of cuts) {
      const f = writeTmp(full.subarray(0, cut), `stories260K-trunc-${cut}.gguf`);
      const msg = expectGgufError(f);
      if (cut >= g0.dataOffset) expect(msg).toMatch(/lies beyond the end of the file/);
      else if (cut >= 24) expect(msg).toMatch(/truncated header/);
      else expect(msg).toMatch(/too short/);
    }
  });

  it('never fails with anything but HooklensError on truncated or corrupted headers', () => {
    const full = fs.readFileSync(MODEL);
    const headerLen = readGguf(MODEL).dataOffset;
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 150; i++) {
      const buf = Buffer.from(full.subarray(0, i % 3 === 0 ? rand(headerLen) : full.length));
      if (i % 3 !== 0) {
        for (let k = 0; k < 1 + rand(4); k++) buf[4 + rand(headerLen - 4)] = rand(256);
      }
      try {
        parseGguf(buf, 'fuzz.gguf');
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(HooklensError);
        expect((e as Error).message.startsWith('fuzz.gguf: ')).toBe(true);
        expect((e as Error).message).not.toContain('\n');
      }
    }
  });
});

describe('hand-built GGUF files', () => {
  it('reads every metadata value type', () => {
    const b = new GgufBuilder()
      .kv('u8', VT.UINT8, 200)
      .kv('i8', VT.INT8, -100)
      .kv('u16', VT.UINT16, 60000)
      .kv('i16', VT.INT16, -30000)
      .kv('u32', VT.UINT32, 4000000000)
      .kv('i32', VT.INT32, -2000000000)
      .kv('f32', VT.FLOAT32, 0.1)
      .kv('f64', VT.FLOAT64, 0.1)
      .kv('t', VT.BOOL, true)
      .kv('f', VT.BOOL, false)
      .kv('s', VT.STRING, 'héllo ▁ wörld')
      .kv('empty', VT.STRING, '')
      .kv('u64', VT.UINT64, 123456789012n)
      .kv('u64big', VT.UINT64, 2n ** 63n + 5n)
      .kv('i64', VT.INT64, -5n)
      .kv('i64big', VT.INT64, -(2n ** 60n))
      .array('arr.i32', VT.INT32, [1, -2, 3])
      .array('arr.str', VT.STRING, ['a', '', '<0x0A>'])
      .array('arr.empty', VT.FLOAT32, [])
      .kv('arr.nested', VT.ARRAY, {
        elemType: VT.ARRAY,
        values: [
          { elemType: VT.UINT8, values: [1, 2] },
          { elemType: VT.STRING, values: ['x'] },
        ],
      });
    const g = readGguf(writeTmp(b.build({ version: 2 })));
    expect(g.version).toBe(2);
    expect(g.tensors.size).toBe(0);
    expect({ ...g.metadata }).toEqual({
      u8: 200,
      i8: -100,
      u16: 60000,
      i16: -30000,
      u32: 4000000000,
      i32: -2000000000,
      f32: Math.fround(0.1),
      f64: 0.1,
      t: true,
      f: false,
      s: 'héllo ▁ wörld',
      empty: '',
      u64: 123456789012,
      u64big: 2n ** 63n + 5n,
      i64: -5,
      i64big: -(2n ** 60n),
      'arr.i32': [1, -2, 3],
      'arr.str': ['a', '', '<0x0A>'],
      'arr.empty': [],
      'arr.nested': [[1, 2], ['x']],
    });
  });

  it('decodes F32 / F16 / BF16 / Q8_0 with reversed (row-major) shapes', () => {
    const half = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x0400];
    const halfExpected = [1, -2, 0.333251953125, 65504, 2 ** -24, -0, Infinity, -Infinity, NaN, 2 ** -14];
    const bf = [0x3f80, 0xc040, 0x4049, 0x0001, 0x7f80, 0xbf00];
    const bfExpected = [1, -3, 3.140625, 2 ** -133, Infinity, -0.5];
    const qs0 = Array.from({ length: 32 }, (_, i) => i - 16);
    const qs1 = Array.from({ length: 32 }, (_, i) => (i % 2 ? 127 : -128));
    const b = new GgufBuilder()
      .string('general.architecture', 'test')
      .tensor({ name: 'f32', dims: [3, 2], type: 0, data: f32Bytes([1, 2, 3, 4, 5, 6]) })
      .tensor({ name: 'f16', dims: [5, 2], type: 1, data: u16Bytes(half) })
      .tensor({ name: 'bf16', dims: [6], type: 30, data: u16Bytes(bf) })
      .tensor({
        name: 'q8_0',
        dims: [32, 2],
        type: 8,
        data: q8_0Bytes([
          { d: 0x3800, qs: qs0 }, // d = 0.5
          { d: 0xbc00, qs: qs1 }, // d = -1
        ]),
      });
    const g = readGguf(writeTmp(b.build()));
    const f32 = g.tensors.get('f32')!;
    expect(f32.shape).toEqual([2, 3]);
    expect(Array.from(f32.data)).toEqual([1, 2, 3, 4, 5, 6]);
    const f16 = g.tensors.get('f16')!;
    expect(f16.shape).toEqual([2, 5]);
    expect(Array.from(f16.data)).toEqual(halfExpected);
    expect(Object.is(f16.data[5], -0)).toBe(true);
    const b16 = g.tensors.get('bf16')!;
    expect(b16.shape).toEqual([6]);
    expect(Array.from(b16.data)).toEqual(bfExpected);
    const q = g.tensors.get('q8_0')!;
    expect(q.shape).toEqual([2, 32]);
    expect(Array.from(q.data.subarray(0, 32))).toEqual(qs0.map((x) => 0.5 * x));
    expect(Array.from(q.data.subarray(32))).toEqual(qs1.map((x) => -x + 0));
    const info = g.tensorInfos.find((t) => t.name === 'q8_0')!;
    expect(info.nbytes).toBe(68);
    expect(info.typeName).toBe('Q8_0');
  });

  it('honours general.alignment and decodes misaligned tensor data', () => {
    const b = new GgufBuilder()
      .u32('general.alignment', 1)
      .tensor({ name: 'odd_f32', dims: [3], type: 0, data: f32Bytes([1.5, -2.25, 1e-3]), offset: 1 })
      .tensor({ name: 'odd_f16', dims: [2], type: 1, data: u16Bytes([0x3c00, 0xc400]), offset: 13 })
      .tensor({ name: 'odd_bf16', dims: [1], type: 30, data: u16Bytes([0x4000]), offset: 17 });
    const buf = b.build({ alignment: 1 });
    const g = readGguf(writeTmp(buf));
    expect(g.alignment).toBe(1);
    expect(Array.from(g.tensors.get('odd_f32')!.data)).toEqual([1.5, -2.25, Math.fround(1e-3)]);
    expect(Array.from(g.tensors.get('odd_f16')!.data)).toEqual([1, -4]);
    expect(Array.from(g.tensors.get('odd_bf16')!.data)).toEqual([2]);
    // Also from a Buffer at an odd byteOffset inside a larger ArrayBuffer.
    const big = Buffer.alloc(buf.length + 3);
    buf.copy(big, 3);
    const g2 = parseGguf(big.subarray(3), 'shifted.gguf');
    expect(Array.from(g2.tensors.get('odd_f32')!.data)).toEqual([1.5, -2.25, Math.fround(1e-3)]);
    expect(Array.from(g2.tensors.get('odd_f16')!.data)).toEqual([1, -4]);
    expect(Array.from(g2.tensors.get('odd_bf16')!.data)).toEqual([2]);

    const b64 = new GgufBuilder()
      .u32('general.alignment', 64)
      .tensor({ name: 'a', dims: [1], type: 0, data: f32Bytes([7]) })
      .tensor({ name: 'b', dims: [1], type: 0, data: f32Bytes([8]) });
    const g64 = readGguf(writeTmp(b64.build({ alignment: 64 })));
    expect(g64.dataOffset % 64).toBe(0);
    expect(g64.tensorInfos.map((t) => t.offset)).toEqual([0, 64]);
    expect(g64.tensors.get('b')!.data[0]).toBe(8);
  });

  it('reads headers larger than the initial read window (multi-MB vocabularies)', () => {
    const vocab = Array.from({ length: 200_000 }, (_, i) => `tok${i}`);
    const b = new GgufBuilder()
      .array('tokenizer.ggml.tokens', VT.STRING, vocab)
      .tensor({ name: 'w', dims: [2], type: 0, data: f32Bytes([3, 4]) });
    const buf = b.build();
    expect(buf.length).toBeGreaterThan(2 << 20);
    const g = readGguf(writeTmp(buf));
    expect(g.metadata['tokenizer.ggml.tokens']).toEqual(vocab);
    expect(Array.from(g.tensors.get('w')!.data)).toEqual([3, 4]);
    expect(parseGguf(buf, 'mem.gguf').dataOffset).toBe(g.dataOffset);
  });

  it('names tensor types', () => {
    expect(ggufTensorTypeName(0)).toBe('F32');
    expect(ggufTensorTypeName(1)).toBe('F16');
    expect(ggufTensorTypeName(8)).toBe('Q8_0');
    expect(ggufTensorTypeName(12)).toBe('Q4_K');
    expect(ggufTensorTypeName(30)).toBe('BF16');
    expect(ggufTensorTypeName(999)).toBe('unknown type 999');
  });
});

describe('GGUF validation errors', () => {
  const ok = (): GgufBuilder =>
    new GgufBuilder().string('general.architecture', 'llama').tensor({ name: 'w', dims: [2, 2], type: 0, data: f32Bytes([1, 2, 3, 4]) });

  it('missing file', () => {
    expectGgufError(path.join(tmp, 'does-not-exist.gguf'), /cannot read GGUF file: ENOENT/);
    expectGgufError(tmp, /not a regular file/);
  });

  it('file too short', () => {
    expectGgufError(writeTmp(Buffer.from('GGUF\x03\0\0\0')), /too short/);
    expectGgufError(writeTmp(Buffer.alloc(0)), /too short/);
  });

  it('bad magic', () => {
    expectGgufError(writeTmp(ok().build({ magic: 'GGML' })), /bad magic "GGML".*expected "GGUF"/);
    expectGgufError(writeTmp(Buffer.alloc(100)), /not a GGUF file/);
  });

  it('unsupported versions', () => {
    expectGgufError(writeTmp(ok().build({ version: 1 })), /unsupported GGUF version 1 \(supported: 2 and 3\)/);
    expectGgufError(writeTmp(ok().build({ version: 4 })), /unsupported GGUF version 4/);
    expectGgufError(writeTmp(ok().build({ version: 0x03000000 })), /big-endian/);
  });

  it('header running past the end of the file', () => {
    // A key whose declared length exceeds the file.
    const buf = new GgufBuilder().string('general.name', 'abc').build();
    buf.writeBigUInt64LE(10_000n, 24); // key length field of the first kv
    expectGgufError(writeTmp(buf), /truncated header: key of metadata entry 0 at offset 24 has length 10000/);
    // A string value whose length exceeds the file.
    const buf2 = new GgufBuilder().string('k', 'abc').build();
    buf2.writeBigUInt64LE(1n << 40n, 24 + 8 + 1 + 4);
    expectGgufError(writeTmp(buf2), /metadata 'k'.*has length 1099511627776/);
    // Counts larger than the file can hold.
    expectGgufError(writeTmp(ok().build({ kvCount: 1000n })), /truncated header: metadata count 1000/);
    expectGgufError(writeTmp(ok().build({ tensorCount: 2n ** 62n })), /implausibly large|truncated header/);
    expectGgufError(writeTmp(ok().build({ tensorCount: 5n })), /truncated header|n_dims 0/);
    // Array with a huge element count.
    const buf3 = new GgufBuilder().array('a', VT.UINT32, [1, 2]).build();
    buf3.writeBigUInt64LE(1n << 30n, 24 + 8 + 1 + 4 + 4);
    expectGgufError(writeTmp(buf3), /metadata 'a'.*declares 1073741824 UINT32 elements/);
    // Cut in the middle of the tensor infos.
    const full = ok().build();
    expectGgufError(writeTmp(full.subarray(0, 100)), /truncated header: (dims|dim 1|type|data offset)/);
  });

  it('unknown metadata value types', () => {
    expectGgufError(writeTmp(new GgufBuilder().kv('weird', 13, 0).build()), /metadata 'weird'.*unknown value type 13/);
    expectGgufError(
      writeTmp(new GgufBuilder().kv('weird', VT.ARRAY, { elemType: 42, values: [] }).build()),
      /metadata 'weird'.*unknown array element type 42/,
    );
    const buf = new GgufBuilder().kv('b', VT.BOOL, true).build();
    buf[buf.length - 1] = 7;
    expectGgufError(writeTmp(buf), /BOOL with invalid byte 7/);
  });

  it('bad tensor dimensions', () => {
    const five = new GgufBuilder().tensor({ name: 'w5', dims: [1, 1, 1, 1, 2], type: 0, data: f32Bytes([1, 2]) });
    expectGgufError(writeTmp(five.build()), /tensor 'w5' has n_dims 5 \(must be 1\.\.4\)/);
    const zeroDims = new GgufBuilder().tensor({ name: 'w0', dims: [], type: 0, data: f32Bytes([1]) });
    expectGgufError(writeTmp(zeroDims.build()), /tensor 'w0' has n_dims 0/);
    const zeroSize = new GgufBuilder().tensor({ name: 'wz', dims: [4, 0], type: 0, data: f32Bytes([]) });
    expectGgufError(writeTmp(zeroSize.build()), /tensor 'wz' has a zero-sized dimension \(ne\[1\] = 0/);
    const q8 = new GgufBuilder().tensor({ name: 'q', dims: [16, 2], type: 8, data: new Uint8Array(34) });
    expectGgufError(writeTmp(q8.build()), /tensor 'q' of type Q8_0 has innermost dimension 16, not a multiple of the block size 32/);
  });

  it('unsupported tensor types', () => {
    const b = new GgufBuilder().tensor({ name: 'blk.0.attn_q.weight', dims: [32], type: 2, data: new Uint8Array(18) });
    expectGgufError(writeTmp(b.build()), /tensor 'blk\.0\.attn_q\.weight' has ggml type 2 \(Q4_0\)/);
    const b2 = new GgufBuilder().tensor({ name: 'x', dims: [1], type: 77, data: new Uint8Array(4) });
    expectGgufError(writeTmp(b2.build()), /tensor 'x' has ggml type 77 \(unknown type 77\)/);
  });

  it('tensor data out of range or misaligned', () => {
    const full = ok().build();
    const f = writeTmp(full.subarray(0, full.length - 4), 'model.gguf');
    const msg = expectGgufError(f, /tensor 'w' data \[offset \d+, \d+\) lies beyond the end of the file \(\d+ bytes\)/);
    expect(msg.startsWith(`${f}: tensor 'w' data [offset `)).toBe(true);
    const far = new GgufBuilder().tensor({ name: 'w', dims: [1], type: 0, data: f32Bytes([1]), offset: 1 << 20 });
    expectGgufError(writeTmp(far.build().subarray(0, 200)), /lies beyond the end of the file/);
    const mis = new GgufBuilder().tensor({ name: 'w', dims: [1], type: 0, data: f32Bytes([1]), offset: 4 });
    expectGgufError(writeTmp(mis.build()), /tensor 'w' data offset 4 is not a multiple of the alignment 32/);
  });

  it('overlapping tensor data ranges are refused (padding gaps are fine)', () => {
    const alias = new GgufBuilder()
      .tensor({ name: 'a', dims: [2], type: 0, data: f32Bytes([1, 2]), offset: 0 })
      .tensor({ name: 'b', dims: [2], type: 0, data: f32Bytes([1, 2]), offset: 0 });
    expectGgufError(writeTmp(alias.build()), /tensors 'a' \[data offset 0, 8\) and 'b' \[0, 8\) overlap/);
    const partial = new GgufBuilder()
      .tensor({ name: 'big', dims: [16], type: 0, data: f32Bytes(Array.from({ length: 16 }, (_, i) => i)), offset: 0 })
      .tensor({ name: 'late', dims: [4], type: 0, data: f32Bytes([1, 2, 3, 4]), offset: 32 });
    expectGgufError(writeTmp(partial.build()), /tensors 'big' \[data offset 0, 64\) and 'late' \[32, 48\) overlap/);
    const padded = new GgufBuilder()
      .tensor({ name: 'a', dims: [1], type: 0, data: f32Bytes([1]), offset: 0 })
      .tensor({ name: 'b', dims: [1], type: 0, data: f32Bytes([2]), offset: 64 });
    expect([...readGguf(writeTmp(padded.build())).tensors.keys()]).toEqual(['a', 'b']);
  });

  it('bad alignment, duplicate keys and tensors', () => {
    expectGgufError(writeTmp(ok().u32('general.alignment', 3).build()), /general\.alignment must be a positive power of two, got 3/);
    expectGgufError(writeTmp(ok().u32('general.alignment', 0).build()), /general\.alignment/);
    expectGgufError(writeTmp(ok().string('general.architecture', 'x').build()), /duplicate metadata key 'general\.architecture'/);
    const dup = ok().tensor({ name: 'w', dims: [1], type: 0, data: f32Bytes([1]) });
    expectGgufError(writeTmp(dup.build()), /duplicate tensor name 'w'/);
  });
});
