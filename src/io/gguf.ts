/**
 * GGUF (v2 / v3) reader: header, metadata key/value pairs, tensor infos, and tensor data
 * dequantised to float32 (F32, F16, BF16, Q8_0).
 *
 * Layout (all little-endian):
 *   magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
 *   kv_count × (key: string, value_type u32, value)
 *   tensor_count × (name: string, n_dims u32, dims u64[n_dims], ggml_type u32, offset u64)
 *   padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
 * Strings are u64 byte length + UTF-8 bytes (no terminator). GGUF lists dims fastest-first
 * (ne[0] is the innermost axis), so the row-major (PyTorch) shape is the dims reversed.
 */
import fs from 'node:fs';
import os from 'node:os';
import { fail, HooklensError } from '../errors.js';
import { type RawTensor } from './raw-tensor.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** Dims as stored in the file, fastest-varying first (ggml `ne`). */
  dims: number[];
  /** Row-major (PyTorch) shape: `dims` reversed. */
  shape: number[];
  /** ggml type id (0 = F32, 1 = F16, 8 = Q8_0, 30 = BF16, ...). */
  type: number;
  typeName: string;
  /** Offset of the data relative to the start of the data section, as stored in the file. */
  offset: number;
  /** Absolute byte offset of the data in the file. */
  fileOffset: number;
  /** Size of the stored (possibly quantised) data in bytes. */
  nbytes: number;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Record<string, GgufValue>;
  tensorInfos: GgufTensorInfo[];
  tensors: Map<string, RawTensor>;
  /** Data-section alignment (`general.alignment`, default 32). */
  alignment: number;
  /** Absolute byte offset at which the tensor data section starts. */
  dataOffset: number;
}

// ---------------------------------------------------------------------------------------------
// ggml tensor types

const GGML_TYPE_NAMES: Record<number, string> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  4: 'Q4_2 (removed)',
  5: 'Q4_3 (removed)',
  6: 'Q5_0',
  7: 'Q5_1',
  8: 'Q8_0',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  12: 'Q4_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  30: 'BF16',
  31: 'Q4_0_4_4 (removed)',
  32: 'Q4_0_4_8 (removed)',
  33: 'Q4_0_8_8 (removed)',
  34: 'TQ1_0',
  35: 'TQ2_0',
  36: 'IQ4_NL_4_4 (removed)',
  37: 'IQ4_NL_4_8 (removed)',
  38: 'IQ4_NL_8_8 (removed)',
  39: 'MXFP4',
};

export const GGML_TYPE = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;

export function ggufTensorTypeName(t: number): string {
  return GGML_TYPE_NAMES[t] ?? `unknown type ${t}`;
}

/** Block layout of the types this reader can decode: `blockSize` values stored in `blockBytes` bytes. */
const DECODABLE: Record<number, { blockSize: number; blockBytes: number }> = {
  [GGML_TYPE.F32]: { blockSize: 1, blockBytes: 4 },
  [GGML_TYPE.F16]: { blockSize: 1, blockBytes: 2 },
  [GGML_TYPE.BF16]: { blockSize: 1, blockBytes: 2 },
  [GGML_TYPE.Q8_0]: { blockSize: 32, blockBytes: 2 + 32 },
};

// ---------------------------------------------------------------------------------------------
// metadata value types

/** GGUF metadata value types. */
export const VT = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

const VT_NAMES = [
  'UINT8',
  'INT8',
  'UINT16',
  'INT16',
  'UINT32',
  'INT32',
  'FLOAT32',
  'BOOL',
  'STRING',
  'ARRAY',
  'UINT64',
  'INT64',
  'FLOAT64',
];

/** Encoded size of fixed-size value types (strings/arrays: minimum size). */
const VT_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

const MAX_DIMS = 4;
const DEFAULT_ALIGNMENT = 32;
const MAX_ARRAY_NESTING = 8;

/** A file-supplied name made safe for a one-line message: control characters escaped, long names cut. */
function show(s: string): string {
  let out = JSON.stringify(s)
    .slice(1, -1)
    .replace(/\\"/g, '"')
    .replace(/[\u0085\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (out.length > 120) out = out.slice(0, 117) + '...';
  return out;
}

// ---------------------------------------------------------------------------------------------
// bounds-checked cursor over the header

/** Thrown when the header continues past the bytes loaded so far (but not past the end of the file). */
class NeedMoreBytes extends Error {}

/**
 * Cursor over (a prefix of) the file. `buf` holds bytes [0, buf.length); `fileSize` is the real size,
 * so a read past `buf` but inside the file asks the caller for a longer prefix instead of failing.
 */
class Cursor {
  pos = 0;
  constructor(
    private readonly buf: Buffer,
    readonly file: string,
    readonly fileSize: number,
  ) {}

  /** Bytes left in the file (not just in the loaded prefix). */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  need(n: number, what: string): void {
    if (n > this.fileSize - this.pos) {
      fail(
        `${this.file}: truncated header: ${what} at offset ${this.pos} needs ${n} bytes ` +
          `but the file ends at ${this.fileSize} bytes`,
      );
    }
    if (n > this.buf.length - this.pos) throw new NeedMoreBytes();
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }
  i8(what: string): number {
    this.need(1, what);
    return this.buf.readInt8(this.pos++);
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  i16(what: string): number {
    this.need(2, what);
    const v = this.buf.readInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  i32(what: string): number {
    this.need(4, what);
    const v = this.buf.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  f32(what: string): number {
    this.need(4, what);
    const v = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(what: string): number {
    this.need(8, what);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  u64(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  i64(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A u64 that must fit a JS number (counts, lengths, offsets). */
  size(what: string): number {
    const at = this.pos;
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      fail(`${this.file}: ${what} at offset ${at} is ${v}, which is implausibly large (corrupt header?)`);
    }
    return Number(v);
  }

  str(what: string): string {
    const at = this.pos;
    const len = this.size(`length of ${what}`);
    if (len > this.remaining) {
      fail(
        `${this.file}: truncated header: ${what} at offset ${at} has length ${len} ` +
          `but only ${this.remaining} bytes remain in the file (${this.fileSize} bytes)`,
      );
    }
    this.need(len, what);
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
}

function bigToValue(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function readScalar(c: Cursor, type: number, what: string): GgufValue {
  switch (type) {
    case VT.UINT8:
      return c.u8(what);
    case VT.INT8:
      return c.i8(what);
    case VT.UINT16:
      return c.u16(what);
    case VT.INT16:
      return c.i16(what);
    case VT.UINT32:
      return c.u32(what);
    case VT.INT32:
      return c.i32(what);
    case VT.FLOAT32:
      return c.f32(what);
    case VT.FLOAT64:
      return c.f64(what);
    case VT.UINT64:
      return bigToValue(c.u64(what));
    case VT.INT64:
      return bigToValue(c.i64(what));
    case VT.BOOL: {
      const at = c.pos;
      const b = c.u8(what);
      if (b > 1) fail(`${c.file}: ${what} at offset ${at} is a BOOL with invalid byte ${b}`);
      return b === 1;
    }
    case VT.STRING:
      return c.str(what);
    default:
      // unreachable: callers validate the type first
      throw new HooklensError(`${c.file}: ${what} has unknown value type ${type}`);
  }
}

function readValue(c: Cursor, type: number, what: string, depth: number): GgufValue {
  if (!Number.isInteger(type) || type < 0 || type > VT.FLOAT64) {
    fail(`${c.file}: ${what} has unknown value type ${type} (valid types are 0..12)`);
  }
  if (type !== VT.ARRAY) return readScalar(c, type, what);

  if (depth >= MAX_ARRAY_NESTING) fail(`${c.file}: ${what} nests arrays more than ${MAX_ARRAY_NESTING} deep`);
  const typeAt = c.pos;
  const elemType = c.u32(`element type of ${what}`);
  if (elemType > VT.FLOAT64) {
    fail(`${c.file}: ${what} at offset ${typeAt} has unknown array element type ${elemType} (valid types are 0..12)`);
  }
  const countAt = c.pos;
  const count = c.size(`element count of ${what}`);
  // Every element takes at least VT_SIZE bytes: reject bogus counts before allocating.
  const minBytes = count * VT_SIZE[elemType]!;
  if (minBytes > c.remaining) {
    fail(
      `${c.file}: truncated header: ${what} at offset ${countAt} declares ${count} ${VT_NAMES[elemType]} elements ` +
        `(at least ${minBytes} bytes) but only ${c.remaining} bytes remain in the file`,
    );
  }
  const out: GgufValue[] = new Array(count);
  if (elemType === VT.ARRAY) {
    for (let i = 0; i < count; i++) out[i] = readValue(c, VT.ARRAY, `${what}[${i}]`, depth + 1);
  } else {
    for (let i = 0; i < count; i++) out[i] = readScalar(c, elemType, what);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// dequantisation

let F16_TABLE: Float32Array | null = null;

/** float32 value of every IEEE half bit pattern (256 KiB, built once). */
function f16Table(): Float32Array {
  if (F16_TABLE) return F16_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = halfToFloat(h);
  F16_TABLE = t;
  return t;
}

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero / subnormal
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const HOST_LE = os.endianness() === 'LE';

/** A Uint16Array over `n` little-endian u16 values of `buf` at `off`: a view if 2-byte aligned, else a copy. */
function u16View(buf: Buffer, off: number, n: number): Uint16Array {
  const abs = buf.byteOffset + off;
  if (HOST_LE && abs % 2 === 0) return new Uint16Array(buf.buffer, abs, n);
  const out = new Uint16Array(n);
  if (HOST_LE) {
    new Uint8Array(out.buffer).set(buf.subarray(off, off + 2 * n));
  } else {
    for (let i = 0; i < n; i++) out[i] = buf.readUInt16LE(off + 2 * i);
  }
  return out;
}

function decodeTensor(buf: Buffer, off: number, info: GgufTensorInfo, n: number): Float32Array {
  switch (info.type) {
    case GGML_TYPE.F32: {
      const out = new Float32Array(n);
      if (HOST_LE) {
        // One byte copy; works whatever the alignment of `off`.
        new Uint8Array(out.buffer).set(buf.subarray(off, off + 4 * n));
      } else {
        for (let i = 0; i < n; i++) out[i] = buf.readFloatLE(off + 4 * i);
      }
      return out;
    }
    case GGML_TYPE.F16: {
      const src = u16View(buf, off, n);
      const table = f16Table();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      return out;
    }
    case GGML_TYPE.BF16: {
      const src = u16View(buf, off, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case GGML_TYPE.Q8_0: {
      const out = new Float32Array(n);
      const table = f16Table();
      const nBlocks = n / 32;
      let p = off;
      for (let b = 0; b < nBlocks; b++) {
        const d = table[buf[p]! | (buf[p + 1]! << 8)]!;
        p += 2;
        const base = b * 32;
        for (let j = 0; j < 32; j++) {
          const q = buf[p + j]!;
          out[base + j] = d * (q > 127 ? q - 256 : q);
        }
        p += 32;
      }
      return out;
    }
    default:
      throw new HooklensError(`internal: no decoder for ggml type ${info.type}`);
  }
}

// ---------------------------------------------------------------------------------------------
// public API

/**
 * Read and fully decode a GGUF file. Every problem is reported as a one-line HooklensError naming `path`.
 *
 * The file is read through a descriptor, never held whole in memory: the header from a prefix (grown
 * until it fits), then each tensor's bytes once — F32 straight into its Float32Array, other types
 * through a scratch buffer of that tensor's size. Works for files larger than Node's 2 GiB
 * readFileSync limit.
 */
export function readGguf(path: string): GgufFile {
  const ioFail = (e: unknown, what: string): never => {
    const msg = String((e as Error)?.message ?? e).split('\n')[0];
    fail(`${path}: cannot ${what} GGUF file: ${msg}`);
  };
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    return ioFail(e, 'read');
  }
  try {
    let fileSize: number;
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) fail(`${path}: cannot read GGUF file: not a regular file`);
      fileSize = st.size;
    } catch (e) {
      if (e instanceof HooklensError) throw e;
      return ioFail(e, 'read');
    }
    const readAt = (dst: Uint8Array, position: number): void => {
      let done = 0;
      while (done < dst.length) {
        let n: number;
        try {
          n = fs.readSync(fd, dst, done, Math.min(dst.length - done, 1 << 30), position + done);
        } catch (e) {
          return ioFail(e, 'read');
        }
        if (n === 0) fail(`${path}: unexpected end of file at offset ${position + done} (file changed while reading?)`);
        done += n;
      }
    };

    // Header: parse a prefix, doubling it while the header runs past it.
    let prefixLen = Math.min(fileSize, 1 << 20);
    let header: GgufHeader;
    for (;;) {
      const prefix = Buffer.allocUnsafe(prefixLen);
      readAt(prefix, 0);
      try {
        header = parseHeader(prefix, path, fileSize);
        break;
      } catch (e) {
        if (!(e instanceof NeedMoreBytes) || prefixLen >= fileSize) throw e;
        prefixLen = Math.min(fileSize, prefixLen * 4);
      }
    }

    const tensors = new Map<string, RawTensor>();
    for (const info of header.tensorInfos) {
      const n = numelOf(info);
      let data: Float32Array;
      if (info.type === GGML_TYPE.F32 && HOST_LE) {
        data = new Float32Array(n);
        readAt(new Uint8Array(data.buffer), info.fileOffset);
      } else {
        const raw = Buffer.allocUnsafe(info.nbytes);
        readAt(raw, info.fileOffset);
        data = decodeTensor(raw, 0, info, n);
      }
      tensors.set(info.name, { shape: info.shape.slice(), data });
    }
    return { ...header, tensors };
  } finally {
    fs.closeSync(fd);
  }
}

type GgufHeader = Omit<GgufFile, 'tensors'>;

/**
 * Parse and validate the header from `buf`, a prefix of a file of `fileSize` bytes. Tensor data ranges
 * are checked against `fileSize`. Throws NeedMoreBytes if the header extends past `buf`.
 */
function parseHeader(buf: Buffer, file: string, fileSize: number): GgufHeader {
  if (fileSize < 24) {
    fail(`${file}: file is too short to be a GGUF file (${fileSize} bytes; the fixed header alone is 24 bytes)`);
  }
  if (buf.length < 24) throw new NeedMoreBytes();
  const magic = buf.toString('latin1', 0, 4);
  if (magic !== 'GGUF') {
    const hex = [...buf.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    fail(`${file}: not a GGUF file: bad magic ${JSON.stringify(magic)} (bytes ${hex}), expected "GGUF"`);
  }
  const c = new Cursor(buf, file, fileSize);
  c.pos = 4;
  const version = c.u32('version');
  if (version !== 2 && version !== 3) {
    const swapped = buf.readUInt32BE(4);
    if (swapped === 2 || swapped === 3) {
      fail(`${file}: big-endian GGUF files are not supported (version field reads ${version} little-endian)`);
    }
    fail(`${file}: unsupported GGUF version ${version} (supported: 2 and 3)`);
  }
  const tensorCount = c.size('tensor count');
  const kvCount = c.size('metadata key/value count');
  // Each kv needs >= 8 (key len) + 4 (type) + 1 bytes, each tensor info >= 8 + 4 + 4 + 8 bytes.
  if (kvCount * 13 > c.remaining) {
    fail(`${file}: truncated header: metadata count ${kvCount} cannot fit in the remaining ${c.remaining} bytes`);
  }
  if (tensorCount * 24 > c.remaining) {
    fail(`${file}: truncated header: tensor count ${tensorCount} cannot fit in the remaining ${c.remaining} bytes`);
  }

  const metadata: Record<string, GgufValue> = Object.create(null) as Record<string, GgufValue>;
  for (let i = 0; i < kvCount; i++) {
    const key = c.str(`key of metadata entry ${i}`);
    if (Object.hasOwn(metadata, key)) fail(`${file}: duplicate metadata key '${show(key)}'`);
    const typeAt = c.pos;
    const type = c.u32(`value type of metadata '${show(key)}'`);
    if (type > VT.FLOAT64) {
      fail(`${file}: metadata '${show(key)}' at offset ${typeAt} has unknown value type ${type} (valid types are 0..12)`);
    }
    metadata[key] = readValue(c, type, `metadata '${show(key)}'`, 0);
  }

  let alignment = DEFAULT_ALIGNMENT;
  if (Object.hasOwn(metadata, 'general.alignment')) {
    const a = metadata['general.alignment'];
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a > 2 ** 30 || (a & (a - 1)) !== 0) {
      fail(`${file}: general.alignment must be a positive power of two, got ${show(String(a))}`);
    }
    alignment = a;
  }

  const infos: GgufTensorInfo[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const tname = c.str(`name of tensor ${i}`);
    if (seen.has(tname)) fail(`${file}: duplicate tensor name '${show(tname)}'`);
    seen.add(tname);
    const nDims = c.u32(`n_dims of tensor '${show(tname)}'`);
    if (nDims === 0 || nDims > MAX_DIMS) {
      fail(`${file}: tensor '${show(tname)}' has n_dims ${nDims} (must be 1..${MAX_DIMS})`);
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const at = c.pos;
      const v = c.u64(`dim ${d} of tensor '${show(tname)}'`);
      if (v === 0n) fail(`${file}: tensor '${show(tname)}' has a zero-sized dimension (ne[${d}] = 0 at offset ${at})`);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
        fail(`${file}: tensor '${show(tname)}' dimension ne[${d}] = ${v} is implausibly large (corrupt header?)`);
      }
      dims.push(Number(v));
    }
    const type = c.u32(`type of tensor '${show(tname)}'`);
    const offset = c.size(`data offset of tensor '${show(tname)}'`);
    infos.push({
      name: tname,
      dims,
      shape: [...dims].reverse(),
      type,
      typeName: ggufTensorTypeName(type),
      offset,
      fileOffset: 0,
      nbytes: 0,
    });
  }

  const headerEnd = c.pos;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;

  for (const info of infos) {
    const layout = DECODABLE[info.type];
    if (!layout) {
      fail(
        `${file}: tensor '${show(info.name)}' has ggml type ${info.type} (${info.typeName}), which hooklens cannot decode ` +
          `(supported: F32, F16, BF16, Q8_0)`,
      );
    }
    let n = 1;
    for (const d of info.dims) {
      n *= d;
      if (!Number.isSafeInteger(n)) fail(`${file}: tensor '${show(info.name)}' has too many elements (${info.dims.join(' x ')})`);
    }
    if (info.dims[0]! % layout.blockSize !== 0) {
      fail(
        `${file}: tensor '${show(info.name)}' of type ${info.typeName} has innermost dimension ${info.dims[0]}, ` +
          `not a multiple of the block size ${layout.blockSize}`,
      );
    }
    if (info.offset % alignment !== 0) {
      fail(`${file}: tensor '${show(info.name)}' data offset ${info.offset} is not a multiple of the alignment ${alignment}`);
    }
    const nbytes = (n / layout.blockSize) * layout.blockBytes;
    const start = dataOffset + info.offset;
    const end = start + nbytes;
    if (!Number.isSafeInteger(end) || end > fileSize) {
      fail(
        `${file}: tensor '${show(info.name)}' data [offset ${start}, ${end}) lies beyond the end of the file (${fileSize} bytes)`,
      );
    }
    info.fileOffset = start;
    info.nbytes = nbytes;
  }

  checkNoOverlap(file, infos);
  return { path: file, version, metadata, tensorInfos: infos, alignment, dataOffset };
}

/**
 * Tensor data ranges may leave alignment padding between them but must not overlap: aliased
 * tensors would make a replaced weight silently change another.
 */
function checkNoOverlap(file: string, infos: GgufTensorInfo[]): void {
  const sorted = [...infos].sort((a, b) => a.fileOffset - b.fileOffset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.fileOffset < a.fileOffset + a.nbytes) {
      fail(
        `${file}: tensors '${show(a.name)}' [data offset ${a.offset}, ${a.offset + a.nbytes}) and '${show(b.name)}' ` +
          `[${b.offset}, ${b.offset + b.nbytes}) overlap in the data section`,
      );
    }
  }
}

function numelOf(info: GgufTensorInfo): number {
  return info.dims.reduce((a, b) => a * b, 1);
}

/** Parse a GGUF file already in memory. `name` is used in error messages (and as `path`). */
export function parseGguf(data: Buffer | Uint8Array, name: string): GgufFile {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const header = parseHeader(buf, name, buf.length);
  const tensors = new Map<string, RawTensor>();
  for (const info of header.tensorInfos) {
    tensors.set(info.name, { shape: info.shape.slice(), data: decodeTensor(buf, info.fileOffset, info, numelOf(info)) });
  }
  return { ...header, tensors };
}
