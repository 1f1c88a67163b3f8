/**
 * Tiny GGUF writer for tests: builds byte buffers by hand, including deliberately broken ones.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { VT } from '../../src/io/gguf.js';

export { VT };

export type KvValue = number | bigint | boolean | string | KvArray;
export interface KvArray {
  elemType: number;
  values: KvValue[];
}

export interface TensorSpec {
  name: string;
  /** ggml order: fastest-varying first. */
  dims: number[];
  type: number;
  data: Uint8Array;
  /** Offset relative to the data section; default: next aligned position. */
  offset?: number;
}

export interface BuildOptions {
  magic?: string;
  version?: number;
  /** Override the header counts (to fake truncation / corruption). */
  tensorCount?: bigint;
  kvCount?: bigint;
  /** Alignment used to lay out the data section (should match any general.alignment kv). */
  alignment?: number;
  /** Override a tensor's n_dims field independently of dims.length. */
  nDimsOverride?: Record<string, number>;
}

class Writer {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u8(v: number): void {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.push(b);
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  value(type: number, v: KvValue): void {
    const b8 = Buffer.alloc(8);
    switch (type) {
      case VT.UINT8:
        return this.u8(v as number);
      case VT.INT8:
        b8.writeInt8(v as number);
        return this.push(b8.subarray(0, 1));
      case VT.UINT16:
        b8.writeUInt16LE(v as number);
        return this.push(b8.subarray(0, 2));
      case VT.INT16:
        b8.writeInt16LE(v as number);
        return this.push(b8.subarray(0, 2));
      case VT.UINT32:
        return this.u32(v as number);
      case VT.INT32:
        b8.writeInt32LE(v as number);
        return this.push(b8.subarray(0, 4));
      case VT.FLOAT32:
        b8.writeFloatLE(v as number);
        return this.push(b8.subarray(0, 4));
      case VT.FLOAT64:
        b8.writeDoubleLE(v as number);
        return this.push(b8);
      case VT.BOOL:
        return this.u8(v ? 1 : 0);
      case VT.STRING:
        return this.str(v as string);
      case VT.UINT64:
        return this.u64(BigInt(v as number | bigint));
      case VT.INT64:
        b8.writeBigInt64LE(BigInt(v as number | bigint));
        return this.push(b8);
      case VT.ARRAY: {
        const a = v as KvArray;
        this.u32(a.elemType);
        this.u64(a.values.length);
        for (const x of a.values) this.value(a.elemType, x);
        return;
      }
      default:
        // unknown type: write nothing (the reader must reject the type before reading a value)
        return;
    }
  }
  concat(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export class GgufBuilder {
  private kvs: { key: string; type: number; value: KvValue }[] = [];
  private tensors: TensorSpec[] = [];

  kv(key: string, type: number, value: KvValue): this {
    this.kvs.push({ key, type, value });
    return this;
  }
  string(key: string, v: string): this {
    return this.kv(key, VT.STRING, v);
  }
  u32(key: string, v: number): this {
    return this.kv(key, VT.UINT32, v);
  }
  f32(key: string, v: number): this {
    return this.kv(key, VT.FLOAT32, v);
  }
  bool(key: string, v: boolean): this {
    return this.kv(key, VT.BOOL, v);
  }
  array(key: string, elemType: number, values: KvValue[]): this {
    return this.kv(key, VT.ARRAY, { elemType, values });
  }
  tensor(spec: TensorSpec): this {
    this.tensors.push(spec);
    return this;
  }

  build(opts: BuildOptions = {}): Buffer {
    const alignment = opts.alignment ?? 32;
    const w = new Writer();
    w.push(Buffer.from(opts.magic ?? 'GGUF', 'latin1'));
    w.u32(opts.version ?? 3);
    w.u64(opts.tensorCount ?? BigInt(this.tensors.length));
    w.u64(opts.kvCount ?? BigInt(this.kvs.length));
    for (const { key, type, value } of this.kvs) {
      w.str(key);
      w.u32(type);
      w.value(type, value);
    }
    // Lay out tensor data.
    const offsets: number[] = [];
    let cursor = 0;
    for (const t of this.tensors) {
      const off = t.offset ?? Math.ceil(cursor / alignment) * alignment;
      offsets.push(off);
      cursor = Math.max(cursor, off + t.data.length);
    }
    this.tensors.forEach((t, i) => {
      w.str(t.name);
      w.u32(opts.nDimsOverride?.[t.name] ?? t.dims.length);
      for (const d of t.dims) w.u64(d);
      w.u32(t.type);
      w.u64(offsets[i]!);
    });
    const header = w.concat();
    if (this.tensors.length === 0) return header;
    const dataStart = Math.ceil(header.length / alignment) * alignment;
    const out = Buffer.alloc(dataStart + cursor);
    header.copy(out, 0);
    this.tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]!));
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// tensor payload encoders

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** Raw 16-bit patterns (F16 or BF16), little-endian. */
export function u16Bytes(bits: number[]): Uint8Array {
  const b = Buffer.alloc(2 * bits.length);
  bits.forEach((v, i) => b.writeUInt16LE(v, 2 * i));
  return b;
}

/** Q8_0 blocks: f16 scale bits `d` then 32 int8 quants. */
export function q8_0Bytes(blocks: { d: number; qs: number[] }[]): Uint8Array {
  const b = Buffer.alloc(34 * blocks.length);
  blocks.forEach(({ d, qs }, i) => {
    if (qs.length !== 32) throw new Error('Q8_0 block needs 32 quants');
    b.writeUInt16LE(d, 34 * i);
    qs.forEach((q, j) => b.writeInt8(q, 34 * i + 2 + j));
  });
  return b;
}

// ---------------------------------------------------------------------------------------------
// shared fixtures

/** Locations of the stories260K model and its reference; throws (never skips) if they are missing. */
export function stories260KPaths(): { fixturesDir: string; model: string; reference: string } {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const fixturesDir = process.env.HOOKLENS_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
  const model = path.resolve(fixturesDir, '../models/stories260K.gguf');
  const reference = path.join(fixturesDir, 'stories260K-reference.json');
  for (const f of [model, reference]) {
    if (!fs.existsSync(f)) {
      throw new Error(
        `missing test fixture ${f} (fixtures are expected in ${fixturesDir}, the model in ${path.dirname(model)}; ` +
          `set HOOKLENS_FIXTURES to the fixtures directory)`,
      );
    }
  }
  return { fixturesDir, model, reference };
}
