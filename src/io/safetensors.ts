/**
 * safetensors reader/writer.
 *
 * Format: 8-byte little-endian u64 header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`,
 * then the data section (offsets are relative to its start).
 *
 * Reading uses positional `readSync` straight into each tensor's destination buffer, so the
 * file is never held in memory twice; writing streams each tensor with `writeSync` into a
 * temp file that is renamed over the target once complete.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fail, HooklensError } from '../errors.js';
import { numel, type RawTensor } from './raw-tensor.js';
import { writeFileAtomic, writeThroughTemp } from './atomic.js';

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: Map<string, RawTensor>;
}

export interface ReadSafetensorsOptions {
  /** Only tensors for which this returns true are read (and dtype-checked); others are skipped. */
  only?: (name: string) => boolean;
}

/** Bytes per element of the dtypes we can convert to float32. */
const DTYPE_SIZE: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** Headers above this are rejected (same limit as the reference implementation). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single readSync/writeSync call (Node limits one call to < 2 GiB). */
const MAX_IO_CHUNK = 1 << 30;
/** Elements converted per chunk for non-F32 dtypes (bounds the temporary buffer). */
const CONVERT_CHUNK_ELEMS = 1 << 20;

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const SAFETENSORS_SINGLE = 'model.safetensors';

function q(name: string): string {
  return JSON.stringify(name);
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

function checkHostEndianness(): void {
  if (os.endianness() !== 'LE') fail('safetensors I/O requires a little-endian host');
}

/** Read exactly `buf.byteLength` bytes at `pos`, or fail naming the file. */
function readFully(fd: number, buf: Uint8Array, pos: number, file: string, what: string): void {
  let off = 0;
  while (off < buf.byteLength) {
    const len = Math.min(buf.byteLength - off, MAX_IO_CHUNK);
    const n = fs.readSync(fd, buf, off, len, pos + off);
    if (n === 0) fail(`${file}: unexpected end of file while reading ${what}`);
    off += n;
  }
}

function writeFully(fd: number, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.byteLength) {
    const len = Math.min(buf.byteLength - off, MAX_IO_CHUNK);
    off += fs.writeSync(fd, buf, off, len);
  }
}

let f16Table: Float32Array | undefined;
function getF16Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 31) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = t;
  return t;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseEntry(file: string, name: string, raw: unknown, dataLen: number, checkDtype: boolean): Entry {
  const where = `${file}: tensor ${q(name)}`;
  if (!isPlainObject(raw)) fail(`${where}: header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (dtype === undefined) fail(`${where}: header entry is missing "dtype"`);
  if (shape === undefined) fail(`${where}: header entry is missing "shape"`);
  if (offsets === undefined) fail(`${where}: header entry is missing "data_offsets"`);
  if (typeof dtype !== 'string') fail(`${where}: "dtype" is not a string`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`${where}: "shape" must be an array of non-negative integers, got ${oneLine(JSON.stringify(shape))}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    fail(`${where}: "data_offsets" must be [begin, end] non-negative integers, got ${oneLine(JSON.stringify(offsets))}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) fail(`${where}: data_offsets end ${end} < begin ${begin}`);
  if (end > dataLen) {
    fail(`${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLen} bytes)`);
  }
  const size = DTYPE_SIZE[dtype];
  if (checkDtype) {
    if (size === undefined) {
      fail(`${where}: unsupported dtype ${dtype} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    }
    const n = numel(shape as number[]);
    if (end - begin !== n * size) {
      fail(
        `${where}: byte length ${end - begin} does not match shape [${(shape as number[]).join(', ')}] × ${dtype} (${n * size} bytes)`,
      );
    }
  }
  return { name, dtype, shape: (shape as number[]).slice(), begin, end };
}

/**
 * The format's layout rule, as its reference implementation enforces it: tensors' byte ranges,
 * sorted by offset, tile the data section exactly — no overlap (aliased tensors would make a
 * replaced weight silently change another), no gap, nothing after the last tensor.
 */
function checkLayout(file: string, entries: Entry[], dataLen: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: Entry | null = null;
  for (const e of sorted) {
    if (e.begin < cursor && prev) {
      fail(`${file}: tensors ${q(prev.name)} [${prev.begin}, ${prev.end}) and ${q(e.name)} [${e.begin}, ${e.end}) overlap in the data section`);
    }
    if (e.begin > cursor) {
      const after = prev ? `after tensor ${q(prev.name)}` : 'at the start of the data section';
      fail(`${file}: bytes [${cursor}, ${e.begin}) ${after} belong to no tensor (safetensors data must be contiguous)`);
    }
    cursor = e.end;
    prev = e;
  }
  if (cursor !== dataLen) {
    fail(`${file}: the data section has ${dataLen} bytes but its tensors cover only ${cursor} (trailing bytes after ${prev ? `tensor ${q(prev.name)}` : 'an empty header'})`);
  }
}

function readTensorData(fd: number, file: string, e: Entry, dataStart: number): Float32Array {
  const n = numel(e.shape);
  const out = new Float32Array(n);
  const pos = dataStart + e.begin;
  const what = `tensor ${q(e.name)}`;
  if (e.dtype === 'F32') {
    readFully(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), pos, file, what);
    return out;
  }
  const size = DTYPE_SIZE[e.dtype]!;
  const chunkElems = Math.min(n, CONVERT_CHUNK_ELEMS);
  const tmp = new ArrayBuffer(chunkElems * size);
  for (let start = 0; start < n; start += chunkElems) {
    const count = Math.min(chunkElems, n - start);
    const bytes = new Uint8Array(tmp, 0, count * size);
    readFully(fd, bytes, pos + start * size, file, what);
    if (e.dtype === 'F16') {
      const table = getF16Table();
      const src = new Uint16Array(tmp, 0, count);
      for (let i = 0; i < count; i++) out[start + i] = table[src[i]!]!;
    } else if (e.dtype === 'BF16') {
      const src = new Uint16Array(tmp, 0, count);
      const dst = new Uint32Array(out.buffer, out.byteOffset + start * 4, count);
      for (let i = 0; i < count; i++) dst[i] = src[i]! << 16;
    } else if (e.dtype === 'F64') {
      const src = new Float64Array(tmp, 0, count);
      for (let i = 0; i < count; i++) out[start + i] = src[i]!;
    } else {
      fail(`${file}: tensor ${q(e.name)}: unsupported dtype ${e.dtype}`);
    }
  }
  return out;
}

/** Read a .safetensors file, converting F32/F16/BF16/F64 tensors to float32. */
export function readSafetensors(file: string, opts: ReadSafetensorsOptions = {}): SafetensorsFile {
  checkHostEndianness();
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(`${file}: cannot open safetensors file (${code ?? oneLine(String(e))})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) fail(`${file}: not a safetensors file (only ${size} bytes, need at least 8 for the header length)`);
    const lenBuf = Buffer.alloc(8);
    readFully(fd, lenBuf, 0, file, 'header length');
    const n64 = lenBuf.readBigUInt64LE(0);
    if (n64 > BigInt(size - 8)) {
      fail(`${file}: safetensors header length ${n64} runs past the end of the file (${size} bytes)`);
    }
    const headerLen = Number(n64);
    if (headerLen > MAX_HEADER_BYTES) fail(`${file}: safetensors header length ${headerLen} exceeds the 100 MiB limit`);
    const headerBuf = Buffer.alloc(headerLen);
    readFully(fd, headerBuf, 8, file, 'header');
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch (e) {
      fail(`${file}: safetensors header is not valid JSON (${oneLine((e as Error).message)})`);
    }
    if (!isPlainObject(header)) fail(`${file}: safetensors header is not a JSON object`);

    const dataStart = 8 + headerLen;
    const dataLen = size - dataStart;
    const metadata: Record<string, string> = {};
    const entries: Entry[] = [];
    const allEntries: Entry[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (!isPlainObject(raw)) fail(`${file}: "__metadata__" in the safetensors header is not an object`);
        for (const [k, v] of Object.entries(raw)) metadata[k] = typeof v === 'string' ? v : JSON.stringify(v);
        continue;
      }
      const wanted = !opts.only || opts.only(name);
      const entry = parseEntry(file, name, raw, dataLen, wanted);
      allEntries.push(entry);
      if (wanted) entries.push(entry);
    }

    checkLayout(file, allEntries, dataLen);
    const tensors = new Map<string, RawTensor>();
    for (const e of entries) tensors.set(e.name, { shape: e.shape, data: readTensorData(fd, file, e, dataStart) });
    return { metadata, tensors };
  } finally {
    fs.closeSync(fd);
  }
}

function parseIndex(indexFile: string): Map<string, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    fail(`${indexFile}: cannot read safetensors index (${oneLine((e as Error).message)})`);
  }
  if (!isPlainObject(raw) || !isPlainObject(raw.weight_map)) {
    fail(`${indexFile}: safetensors index has no "weight_map" object`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(raw.weight_map)) {
    if (typeof shard !== 'string' || shard === '') {
      fail(`${indexFile}: weight_map entry for tensor ${q(name)} is not a file name`);
    }
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      fail(`${indexFile}: weight_map entry for tensor ${q(name)} points outside the directory: ${q(shard)}`);
    }
    map.set(name, shard);
  }
  return map;
}

/** Shard file names listed by a `model.safetensors.index.json`, in first-use order. */
export function safetensorsIndexShards(indexFile: string): string[] {
  return [...new Set(parseIndex(indexFile).values())];
}

/**
 * Read all weights of a model directory: `model.safetensors.index.json` (sharded), else
 * `model.safetensors`, else the directory's only `*.safetensors` file.
 */
export function readSafetensorsDir(dir: string, opts: ReadSafetensorsOptions = {}): Map<string, RawTensor> {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    fail(`${dir}: model directory does not exist`);
  }
  if (!st.isDirectory()) fail(`${dir}: not a directory`);

  const indexFile = path.join(dir, SAFETENSORS_INDEX);
  if (fs.existsSync(indexFile)) {
    const weightMap = parseIndex(indexFile);
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of weightMap) {
      if (opts.only && !opts.only(name)) continue;
      let list = byShard.get(shard);
      if (!list) byShard.set(shard, (list = []));
      list.push(name);
    }
    const out = new Map<string, RawTensor>();
    for (const [shard, names] of byShard) {
      const shardFile = path.join(dir, shard);
      if (!fs.existsSync(shardFile)) {
        fail(`${indexFile}: shard ${q(shard)} (holding ${q(names[0]!)} and ${names.length - 1} more) is missing`);
      }
      const wanted = new Set(names);
      const { tensors } = readSafetensors(shardFile, { only: (n) => wanted.has(n) });
      for (const name of names) {
        const t = tensors.get(name);
        if (!t) fail(`${shardFile}: tensor ${q(name)} listed in ${SAFETENSORS_INDEX} is missing from this shard`);
        out.set(name, t);
      }
    }
    return out;
  }

  const single = path.join(dir, SAFETENSORS_SINGLE);
  if (fs.existsSync(single)) return readSafetensors(single, opts).tensors;

  const candidates = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors') && !f.startsWith('.'));
  if (candidates.length === 1) return readSafetensors(path.join(dir, candidates[0]!), opts).tensors;
  if (candidates.length === 0) {
    fail(`${dir}: no safetensors weights found (expected ${SAFETENSORS_INDEX}, ${SAFETENSORS_SINGLE} or a single *.safetensors file)`);
  }
  fail(
    `${dir}: ${candidates.length} *.safetensors files (${candidates.slice(0, 4).join(', ')}${candidates.length > 4 ? ', …' : ''}) but no ${SAFETENSORS_INDEX} saying how they fit together`,
  );
}

type TensorSet = Record<string, RawTensor> | Map<string, RawTensor>;

function tensorEntries(tensors: TensorSet): [string, RawTensor][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

function checkTensorForWrite(file: string, name: string, t: RawTensor): void {
  const where = `${file}: tensor ${q(name)}`;
  if (name === '' || name === '__metadata__') fail(`${file}: invalid tensor name ${q(name)}`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`${where}: shape must be non-negative integers, got ${oneLine(JSON.stringify(t.shape))}`);
  }
  if (!(t.data instanceof Float32Array)) fail(`${where}: data is not a Float32Array`);
  if (t.data.length !== numel(t.shape)) {
    fail(`${where}: data has ${t.data.length} elements but shape [${t.shape.join(', ')}] needs ${numel(t.shape)}`);
  }
}

/** Write float32 tensors as a safetensors file, atomically (temp file + rename). */
export function writeSafetensors(file: string, tensors: TensorSet, metadata?: Record<string, string>): void {
  checkHostEndianness();
  const entries = tensorEntries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`${file}: metadata value for ${q(k)} is not a string`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [name, t] of entries) {
    checkTensorForWrite(file, name, t);
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  let headerBytes = Buffer.from(json, 'utf8');
  const pad = (8 - ((8 + headerBytes.length) % 8)) % 8;
  if (pad) {
    json += ' '.repeat(pad);
    headerBytes = Buffer.from(json, 'utf8');
  }
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBytes.length), 0);

  try {
    writeThroughTemp(file, (fd) => {
      writeFully(fd, lenBuf);
      writeFully(fd, headerBytes);
      for (const [, t] of entries) writeFully(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    });
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    fail(`${file}: cannot write safetensors file (${code ?? oneLine(String(e))})`);
  }
}

/**
 * Write tensors as `model-0000i-of-0000N.safetensors` shards (greedy, in order, each at most
 * `maxShardBytes` of tensor data unless a single tensor is larger) plus
 * `model.safetensors.index.json`. The index is written last. Returns the shard file names.
 */
export function writeSafetensorsSharded(dir: string, tensors: TensorSet, maxShardBytes: number): string[] {
  if (!(maxShardBytes > 0) || !Number.isFinite(maxShardBytes)) {
    fail(`${dir}: maxShardBytes must be a positive number, got ${maxShardBytes}`);
  }
  const entries = tensorEntries(tensors);
  for (const [name, t] of entries) checkTensorForWrite(dir, name, t);
  const groups: [string, RawTensor][][] = [];
  let cur: [string, RawTensor][] = [];
  let curBytes = 0;
  let total = 0;
  for (const entry of entries) {
    const bytes = entry[1].data.length * 4;
    total += bytes;
    if (cur.length > 0 && curBytes + bytes > maxShardBytes) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(entry);
    curBytes += bytes;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);

  fs.mkdirSync(dir, { recursive: true });
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, '0');
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  groups.forEach((group, i) => {
    const shard = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    names.push(shard);
    writeSafetensors(path.join(dir, shard), new Map(group), { format: 'pt' });
    for (const [name] of group) weightMap[name] = shard;
  });
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  writeFileAtomic(path.join(dir, SAFETENSORS_INDEX), JSON.stringify(index, null, 2) + '\n');
  return names;
}
