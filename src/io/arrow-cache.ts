/**
 * Activation caches as Arrow IPC **file** format (`.arrow`, a.k.a. Feather v2).
 *
 * ## File format (public contract — read it with pyarrow, DuckDB, polars, arrow-js …)
 *
 * One row per (prompt, position). Columns, in order:
 *
 *   - `prompt: int32 not null` — the prompt index passed to `writePrompt`
 *   - `pos:    int32 not null` — position within the prompt, 0‥T-1
 *   - `token:  int32 not null` — the token id at that position
 *   - vision-language caches add, after `token`:
 *       - `image:    int32 not null` — image index (vision-tower caches: one row per patch
 *         position of each image, CLS first where present; `token` is then -1);
 *       - `modality: utf8 not null`  — 'text' or 'image' for each language-model position.
 *   - one column per hook, named exactly as the hook (`blocks.0.hook_resid_post`,
 *     `blocks.0.attn.hook_pattern`, …), holding that position's activation flattened
 *     row-major to float32:
 *       - `fixed_size_list<item: float>[N] not null` when the per-position shape is fixed
 *         (N = product of the per-position shape);
 *       - `list<item: float> not null` when an axis varies from row to row (e.g. the
 *         attention pattern per query position has shape [head, k] with k = prompt length).
 *   - optionally `logits`: `fixed_size_list<item: float>[vocab]`. It is just another float
 *     column and is described inside `hooks` like any hook (shape `[vocab]`).
 *
 * Schema metadata key `hooklens` holds JSON:
 *
 *     {"version": 1, "model": "<model id>",
 *      "hooks": {"<column name>": {"shape": [<per-position shape>]}, …}}
 *
 * `hooks` has one entry per float column (hooks and `logits`), in column order; a varying
 * axis is written as -1 (readers here also accept `null`). Every row of a varying column
 * holds a multiple of the product of the fixed axes.
 *
 * Rows are written in record batches of at most `maxBatchRows` rows / ~`maxBatchBytes`
 * bytes, streamed to a temp file next to the target (synchronous fd writes, so memory stays
 * bounded however many prompts are written) and renamed over the target on `close()`.
 *
 * Unlike arrow-js' stock `RecordBatchFileWriter`, the body after the leading magic is a
 * complete IPC stream (schema message, batches, EOS), as the spec prescribes; readers that
 * only look at the footer (pyarrow, arrow-js) don't care, stream-style readers do.
 */
import fs from 'node:fs';
import {
  AsyncByteQueue,
  Field,
  FixedSizeList,
  Float32,
  Int32,
  List,
  Message,
  RecordBatch,
  RecordBatchFileWriter,
  RecordBatchReader,
  Schema,
  Struct,
  Type,
  Utf8,
  makeData,
  type Data,
  type DataType,
} from 'apache-arrow';
import { HooklensError, fail } from '../errors.js';
import { tempPathFor } from './atomic.js';

/** Schema metadata key holding the hooklens JSON description. */
export const HOOKLENS_METADATA_KEY = 'hooklens';
/** Version written into the metadata JSON. */
export const ARROW_CACHE_FORMAT_VERSION = 1;
const INDEX_COLUMNS = ['prompt', 'pos', 'token'] as const;

export interface HookColumnSpec {
  name: string;
  /** Per-position shape; -1 marks a varying axis (the column is then a `List<Float32>`). */
  perPositionShape: number[];
}

/** Optional index columns of vision-language caches. */
export interface ExtraIndexSpec {
  image?: boolean;
  modality?: boolean;
}

/** Per-row values of the optional index columns for one writePrompt call. */
export interface ExtraIndexValues {
  image?: ArrayLike<number>;
  /** 1 = image position, 0 = text. */
  modality?: ArrayLike<number>;
}

export const MODALITIES = ['text', 'image'] as const;

export interface ArrowCacheWriterOptions {
  /** Emit a record batch once this many rows are buffered. Default 65536. */
  maxBatchRows?: number;
  /** Emit a record batch once the buffered rows reach about this many bytes. Default 32 MiB. */
  maxBatchBytes?: number;
}

export interface ArrowCacheColumn {
  perPositionShape: number[];
  rows: number;
  /** Fixed-size columns: rows × product(perPositionShape) floats, contiguous. */
  data?: Float32Array;
  /** Varying columns: one Float32Array per row. */
  lists?: Float32Array[];
}

export interface ArrowCache {
  model: string;
  hooks: Record<string, { shape: number[] }>;
  prompt: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  /** Image index per row (vision-tower caches). */
  image?: Int32Array;
  /** Per row: 1 = image position, 0 = text (vision-language caches' `modality` column). */
  modality?: Uint8Array;
  columns: Record<string, ArrowCacheColumn>;
}

const DEFAULT_MAX_BATCH_ROWS = 65536;
const DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024;
const INT32_MAX = 2 ** 31 - 1;

function errMsg(e: unknown): string {
  if (e instanceof Error) return e.message; // Node fs messages already start with the code (ENOENT: …)
  return String(e);
}

function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Product of the fixed axes (all axes when nothing varies). */
function fixedProduct(shape: readonly number[]): number {
  let p = 1;
  for (const d of shape) if (d !== -1) p *= d;
  return p;
}

function isVarying(shape: readonly number[]): boolean {
  return shape.includes(-1);
}

function validateSpec(spec: { model: string; columns: HookColumnSpec[] }): void {
  if (typeof spec.model !== 'string') fail('activation cache: model must be a string');
  if (!Array.isArray(spec.columns) || spec.columns.length === 0) fail('activation cache: at least one hook column is required');
  const seen = new Set<string>();
  for (const c of spec.columns) {
    if (typeof c.name !== 'string' || c.name === '') fail('activation cache: column names must be non-empty strings');
    if ((INDEX_COLUMNS as readonly string[]).includes(c.name)) fail(`activation cache: column name "${c.name}" is reserved (prompt, pos, token)`);
    if (seen.has(c.name)) fail(`activation cache: duplicate column "${c.name}"`);
    seen.add(c.name);
    if (!Array.isArray(c.perPositionShape) || c.perPositionShape.length === 0) {
      fail(`activation cache: column "${c.name}": per-position shape must have at least one axis`);
    }
    for (const d of c.perPositionShape) {
      if (!(d === -1 || (Number.isInteger(d) && d > 0))) {
        fail(`activation cache: column "${c.name}": bad per-position shape ${shapeStr(c.perPositionShape)} (axes must be positive integers or -1 for varying)`);
      }
    }
    if (fixedProduct(c.perPositionShape) > INT32_MAX) {
      fail(`activation cache: column "${c.name}": per-position size of ${shapeStr(c.perPositionShape)} is too large`);
    }
    if (c.name === 'logits' && (c.perPositionShape.length !== 1 || isVarying(c.perPositionShape))) {
      fail(`activation cache: column "logits" must have per-position shape [vocab], got ${shapeStr(c.perPositionShape)}`);
    }
  }
}

/** Arrow byte sink writing synchronously to a file descriptor (the writer calls `write` synchronously). */
class FdSink extends AsyncByteQueue {
  bytes = 0;
  constructor(
    private readonly fd: number,
    private readonly file: string,
  ) {
    super();
  }
  override write(value: Parameters<AsyncByteQueue['write']>[0]): void {
    if (!ArrayBuffer.isView(value)) throw new HooklensError(`cannot write activation cache ${this.file}: unexpected chunk from the Arrow writer`);
    const u8 = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    let off = 0;
    try {
      while (off < u8.byteLength) off += fs.writeSync(this.fd, u8, off, u8.byteLength - off);
    } catch (e) {
      throw new HooklensError(`cannot write activation cache ${this.file}: ${errMsg(e)}`);
    }
    this.bytes += u8.byteLength;
  }
}

/**
 * `RecordBatchFileWriter` that also writes the schema message after the leading magic, so the
 * file body is a complete IPC stream as the format spec requires (stock arrow-js 21 writes only
 * the magic and relies on the footer's copy of the schema).
 */
class SpecFileWriter extends RecordBatchFileWriter {
  protected override _writeSchema(schema: Schema): this {
    this._writeMagic()._writePadding(2);
    return this._writeMessage(Message.from(schema));
  }
}

interface FixedBuf {
  kind: 'fixed';
  spec: HookColumnSpec;
  size: number;
  buf: Float32Array; // capacity × size
}
interface VaryingBuf {
  kind: 'varying';
  spec: HookColumnSpec;
  unit: number; // product of fixed axes: each row's length must be a multiple
  values: Float32Array; // grows
  used: number;
  offsets: Int32Array; // capacity + 1
}
type ColBuf = FixedBuf | VaryingBuf;

type WriterState = 'open' | 'closed' | 'aborted';

export class ArrowCacheWriter {
  private state: WriterState = 'open';
  private readonly capacity: number;
  private readonly maxBatchBytes: number;
  private readonly fixedRowBytes: number;
  private readonly cols: ColBuf[];
  private readonly colByName: Map<string, ColBuf>;
  private readonly promptBuf: Int32Array;
  private readonly posBuf: Int32Array;
  private readonly tokenBuf: Int32Array;
  private readonly imageBuf: Int32Array | null;
  private readonly modalityBuf: Uint8Array | null;
  /** Schema index of the first hook column. */
  private readonly firstHookField: number;
  private buffered = 0;
  private batches = 0;
  private rowsWritten = 0;

  private constructor(
    readonly path: string,
    private readonly tempPath: string,
    private fd: number | null,
    private readonly sink: FdSink,
    private readonly writer: SpecFileWriter,
    private readonly schema: Schema,
    columns: HookColumnSpec[],
    opts: ArrowCacheWriterOptions,
    extra: ExtraIndexSpec,
  ) {
    this.maxBatchBytes = opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    let rowBytes = 4 * INDEX_COLUMNS.length;
    for (const c of columns) if (!isVarying(c.perPositionShape)) rowBytes += 4 * fixedProduct(c.perPositionShape);
    this.fixedRowBytes = rowBytes;
    const maxRows = opts.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS;
    this.capacity = Math.max(1, Math.min(maxRows, Math.floor(this.maxBatchBytes / rowBytes)));
    this.promptBuf = new Int32Array(this.capacity);
    this.posBuf = new Int32Array(this.capacity);
    this.tokenBuf = new Int32Array(this.capacity);
    this.imageBuf = extra.image ? new Int32Array(this.capacity) : null;
    this.modalityBuf = extra.modality ? new Uint8Array(this.capacity) : null;
    this.firstHookField = INDEX_COLUMNS.length + (extra.image ? 1 : 0) + (extra.modality ? 1 : 0);
    this.cols = columns.map((spec): ColBuf => {
      if (isVarying(spec.perPositionShape)) {
        return { kind: 'varying', spec, unit: fixedProduct(spec.perPositionShape), values: new Float32Array(1024), used: 0, offsets: new Int32Array(this.capacity + 1) };
      }
      const size = fixedProduct(spec.perPositionShape);
      return { kind: 'fixed', spec, size, buf: new Float32Array(this.capacity * size) };
    });
    this.colByName = new Map(this.cols.map((c) => [c.spec.name, c]));
  }

  /**
   * Start writing an activation cache to `tempPathFor(path)`; `close()` renames it to `path`.
   * Options bound the record-batch size (and so the writer's memory).
   */
  static open(
    path: string,
    spec: { model: string; columns: HookColumnSpec[]; index?: ExtraIndexSpec },
    opts: ArrowCacheWriterOptions = {},
  ): ArrowCacheWriter {
    validateSpec(spec);
    for (const [k, v] of [['maxBatchRows', opts.maxBatchRows], ['maxBatchBytes', opts.maxBatchBytes]] as const) {
      if (v !== undefined && !(Number.isInteger(v) && v > 0)) fail(`activation cache: ${k} must be a positive integer, got ${v}`);
    }
    const columns = spec.columns.map((c) => ({ name: c.name, perPositionShape: [...c.perPositionShape] }));
    const extra = spec.index ?? {};
    const schema = buildSchema(spec.model, columns, extra);
    const tmp = tempPathFor(path);
    let fd: number;
    try {
      fd = fs.openSync(tmp, 'wx');
    } catch (e) {
      fail(`cannot create activation cache ${path}: ${errMsg(e)}`);
    }
    try {
      const sink = new FdSink(fd, path);
      const writer = new SpecFileWriter();
      // Binding the sink and schema up front writes the magic + schema message now, so an
      // empty cache is still a valid file, and every batch (built on this same Schema object)
      // matches the writer's schema. (arrow-js silently *drops* a batch whose schema differs.)
      writer.reset(sink, schema);
      return new ArrowCacheWriter(path, tmp, fd, sink, writer, schema, columns, opts, extra);
    } catch (e) {
      try { fs.closeSync(fd); } catch { /* ignore */ }
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  }

  /** Bytes written to disk so far (the complete file size once closed). */
  get bytesWritten(): number {
    return this.sink.bytes;
  }

  /** Record batches written to disk so far. */
  get batchesWritten(): number {
    return this.batches;
  }

  /**
   * Append one prompt: `tokens` [T]; for each column a Float32Array of T × perPos floats
   * (row-major) or, for varying columns, an array of T Float32Arrays. The data is copied.
   * Any error aborts the writer (the temp file is deleted) before it is thrown.
   */
  writePrompt(promptIndex: number, tokens: ArrayLike<number>, columns: Record<string, Float32Array | Float32Array[]>, extra: ExtraIndexValues = {}): void {
    this.ensureOpen();
    try {
      this.validatePrompt(promptIndex, tokens, columns);
      for (const [k, buf] of [['image', this.imageBuf], ['modality', this.modalityBuf]] as const) {
        const v = extra[k];
        if (buf && (!v || v.length !== tokens.length)) fail(`activation cache ${this.path}, prompt ${promptIndex}: column "${k}" needs ${tokens.length} values`);
        if (!buf && v) fail(`activation cache ${this.path}: this cache has no "${k}" column`);
      }
      this.append(promptIndex, tokens, columns, extra);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** Flush remaining rows, write the footer, close, rename temp → final path. */
  async close(): Promise<void> {
    this.ensureOpen();
    try {
      if (this.buffered > 0) this.flush();
      this.writer.close(); // writes EOS + footer + magic through the sink
      const fd = this.fd!;
      this.fd = null;
      try {
        fs.closeSync(fd);
      } catch (e) {
        fail(`cannot write activation cache ${this.path}: ${errMsg(e)}`);
      }
      try {
        fs.renameSync(this.tempPath, this.path);
      } catch (e) {
        fail(`cannot write activation cache ${this.path}: ${errMsg(e)}`);
      }
      this.state = 'closed';
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** Delete the temp file; the final path is untouched. Idempotent; a no-op after a successful close. */
  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    if (this.fd !== null) {
      try { fs.closeSync(this.fd); } catch { /* ignore */ }
      this.fd = null;
    }
    try { fs.rmSync(this.tempPath, { force: true }); } catch { /* ignore */ }
  }

  private ensureOpen(): void {
    if (this.state !== 'open') fail(`activation cache ${this.path}: writer is already ${this.state}`);
  }

  private validatePrompt(promptIndex: number, tokens: ArrayLike<number>, columns: Record<string, Float32Array | Float32Array[]>): void {
    const where = `activation cache ${this.path}, prompt ${promptIndex}`;
    if (!Number.isInteger(promptIndex) || promptIndex < -(2 ** 31) || promptIndex > INT32_MAX) {
      fail(`activation cache ${this.path}: prompt index must be an int32, got ${promptIndex}`);
    }
    const T = tokens?.length;
    if (typeof T !== 'number' || T <= 0) fail(`${where}: no tokens`);
    if (this.rowsWritten + this.buffered + T > INT32_MAX) fail(`${where}: too many rows for one cache`);
    for (let i = 0; i < T; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < -(2 ** 31) || t > INT32_MAX) fail(`${where}: token at position ${i} is not an int32 (${t})`);
    }
    for (const name of Object.keys(columns)) {
      if (!this.colByName.has(name)) {
        fail(`${where}: unknown column "${name}" (cache columns: ${this.cols.map((c) => c.spec.name).join(', ')})`);
      }
    }
    for (const c of this.cols) {
      const name = c.spec.name;
      const v = columns[name];
      if (v === undefined) fail(`${where}: missing column "${name}"`);
      if (c.kind === 'fixed') {
        if (!(v instanceof Float32Array)) fail(`${where}: column "${name}" must be a Float32Array of T × ${c.size} floats`);
        if (v.length !== T * c.size) {
          fail(`${where}: column "${name}" expected ${T * c.size} floats (${T} positions × per-position shape ${shapeStr(c.spec.perPositionShape)}), got ${v.length}`);
        }
      } else {
        if (!Array.isArray(v)) fail(`${where}: column "${name}" varies per position; expected an array of ${T} Float32Arrays`);
        if (v.length !== T) fail(`${where}: column "${name}" expected ${T} rows (one per position), got ${v.length}`);
        for (let i = 0; i < T; i++) {
          const r = v[i];
          if (!(r instanceof Float32Array)) fail(`${where}: column "${name}" row ${i} is not a Float32Array`);
          if (r.length % c.unit !== 0) {
            fail(`${where}: column "${name}" row ${i} has ${r.length} floats, not a multiple of ${c.unit} (per-position shape ${shapeStr(c.spec.perPositionShape)})`);
          }
        }
      }
    }
  }

  private varyingBytes(): number {
    let b = 0;
    for (const c of this.cols) if (c.kind === 'varying') b += 4 * (c.used + this.buffered + 1);
    return b;
  }

  private append(promptIndex: number, tokens: ArrayLike<number>, columns: Record<string, Float32Array | Float32Array[]>, extra: ExtraIndexValues): void {
    const T = tokens.length;
    const hasVarying = this.cols.some((c) => c.kind === 'varying');
    let start = 0;
    while (start < T) {
      let n = Math.min(T - start, this.capacity - this.buffered);
      if (hasVarying) {
        // Cut the chunk where the varying columns would push the batch over maxBatchBytes
        // (always take at least one row into an empty batch).
        let bytes = this.buffered * this.fixedRowBytes + this.varyingBytes();
        let k = 0;
        while (k < n) {
          let rowBytes = this.fixedRowBytes;
          for (const c of this.cols) if (c.kind === 'varying') rowBytes += 4 * ((columns[c.spec.name] as Float32Array[])[start + k].length + 1);
          if (bytes + rowBytes > this.maxBatchBytes && this.buffered + k > 0) break;
          bytes += rowBytes;
          k++;
        }
        n = k;
        if (n === 0) {
          this.flush();
          continue;
        }
      }
      const b = this.buffered;
      for (let i = 0; i < n; i++) {
        this.promptBuf[b + i] = promptIndex;
        this.posBuf[b + i] = start + i;
        this.tokenBuf[b + i] = tokens[start + i];
        if (this.imageBuf) this.imageBuf[b + i] = extra.image![start + i];
        if (this.modalityBuf) this.modalityBuf[b + i] = extra.modality![start + i] ? 1 : 0;
      }
      for (const c of this.cols) {
        const v = columns[c.spec.name];
        if (c.kind === 'fixed') {
          c.buf.set((v as Float32Array).subarray(start * c.size, (start + n) * c.size), b * c.size);
        } else {
          const rows = v as Float32Array[];
          let need = c.used;
          for (let i = 0; i < n; i++) need += rows[start + i].length;
          if (need > INT32_MAX) fail(`activation cache ${this.path}: column "${c.spec.name}" row too large`);
          if (need > c.values.length) {
            const grown = new Float32Array(Math.max(need, Math.min(INT32_MAX, c.values.length * 2)));
            grown.set(c.values.subarray(0, c.used));
            c.values = grown;
          }
          for (let i = 0; i < n; i++) {
            const r = rows[start + i];
            c.values.set(r, c.used);
            c.used += r.length;
            c.offsets[b + i + 1] = c.used;
          }
        }
      }
      this.buffered += n;
      start += n;
      if (this.buffered >= this.capacity || (hasVarying && this.buffered * this.fixedRowBytes + this.varyingBytes() >= this.maxBatchBytes)) {
        this.flush();
      }
    }
  }

  /** Build one record batch from the buffered rows (zero-copy views) and write it to disk. */
  private flush(): void {
    const n = this.buffered;
    if (n === 0) return;
    const children: Data[] = [
      makeData({ type: new Int32(), length: n, nullCount: 0, data: this.promptBuf.subarray(0, n) }),
      makeData({ type: new Int32(), length: n, nullCount: 0, data: this.posBuf.subarray(0, n) }),
      makeData({ type: new Int32(), length: n, nullCount: 0, data: this.tokenBuf.subarray(0, n) }),
    ];
    if (this.imageBuf) children.push(makeData({ type: new Int32(), length: n, nullCount: 0, data: this.imageBuf.subarray(0, n) }));
    if (this.modalityBuf) children.push(modalityData(this.modalityBuf.subarray(0, n)));
    this.cols.forEach((c, i) => {
      const type = this.schema.fields[this.firstHookField + i].type;
      if (c.kind === 'fixed') {
        const child = makeData({ type: new Float32(), length: n * c.size, nullCount: 0, data: c.buf.subarray(0, n * c.size) });
        children.push(makeData({ type: type as FixedSizeList<Float32>, length: n, nullCount: 0, child }));
      } else {
        const child = makeData({ type: new Float32(), length: c.used, nullCount: 0, data: c.values.subarray(0, c.used) });
        children.push(makeData({ type: type as List<Float32>, length: n, nullCount: 0, valueOffsets: c.offsets.subarray(0, n + 1), child }));
      }
    });
    const struct = makeData({ type: new Struct(this.schema.fields), length: n, nullCount: 0, children });
    const batch = new RecordBatch(this.schema, struct);
    const before = this.sink.bytes;
    // The sink writes synchronously, so once write() returns the buffers may be reused.
    this.writer.write(batch);
    if (this.sink.bytes === before) fail(`cannot write activation cache ${this.path}: the Arrow writer dropped a record batch`);
    this.batches++;
    this.rowsWritten += n;
    this.buffered = 0;
    for (const c of this.cols) if (c.kind === 'varying') c.used = 0;
  }
}

/** 'text' / 'image' strings as a utf8 column. */
function modalityData(codes: Uint8Array): Data {
  const words = MODALITIES.map((m) => new TextEncoder().encode(m));
  const offsets = new Int32Array(codes.length + 1);
  for (let i = 0; i < codes.length; i++) offsets[i + 1] = offsets[i] + words[codes[i]].length;
  const bytes = new Uint8Array(offsets[codes.length]);
  for (let i = 0; i < codes.length; i++) bytes.set(words[codes[i]], offsets[i]);
  return makeData({ type: new Utf8(), length: codes.length, nullCount: 0, valueOffsets: offsets, data: bytes });
}

function buildSchema(model: string, columns: HookColumnSpec[], extra: ExtraIndexSpec = {}): Schema {
  const fields: Field[] = INDEX_COLUMNS.map((n) => new Field(n, new Int32(), false));
  if (extra.image) fields.push(new Field('image', new Int32(), false));
  if (extra.modality) fields.push(new Field('modality', new Utf8(), false));
  const hooks: Record<string, { shape: number[] }> = {};
  for (const c of columns) {
    const item = new Field('item', new Float32(), true);
    const type: DataType = isVarying(c.perPositionShape) ? new List(item) : new FixedSizeList(fixedProduct(c.perPositionShape), item);
    fields.push(new Field(c.name, type, false));
    hooks[c.name] = { shape: [...c.perPositionShape] };
  }
  const meta = JSON.stringify({ version: ARROW_CACHE_FORMAT_VERSION, model, hooks });
  return new Schema(fields, new Map([[HOOKLENS_METADATA_KEY, meta]]));
}

// ---------------------------------------------------------------------------------------------
// Reading

const MAGIC = 'ARROW1';

function hasMagicAt(buf: Uint8Array, at: number): boolean {
  if (at < 0 || at + MAGIC.length > buf.byteLength) return false;
  for (let i = 0; i < MAGIC.length; i++) if (buf[at + i] !== MAGIC.charCodeAt(i)) return false;
  return true;
}

function parseMetadata(file: string, raw: string | undefined): { model: string; hooks: Record<string, { shape: number[] }> } {
  if (raw === undefined) fail(`${file}: Arrow file has no "${HOOKLENS_METADATA_KEY}" schema metadata; not a hooklens activation cache`);
  let j: unknown;
  try {
    j = JSON.parse(raw);
  } catch (e) {
    fail(`${file}: "${HOOKLENS_METADATA_KEY}" schema metadata is not valid JSON (${errMsg(e)})`);
  }
  const o = j as { model?: unknown; hooks?: unknown };
  if (typeof j !== 'object' || j === null || typeof o.model !== 'string' || typeof o.hooks !== 'object' || o.hooks === null || Array.isArray(o.hooks)) {
    fail(`${file}: "${HOOKLENS_METADATA_KEY}" schema metadata must be {"model": string, "hooks": {...}}`);
  }
  const hooks: Record<string, { shape: number[] }> = {};
  for (const [name, h] of Object.entries(o.hooks as Record<string, unknown>)) {
    const shape = (h as { shape?: unknown } | null)?.shape;
    if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => d === null || d === -1 || (Number.isInteger(d) && d > 0))) {
      fail(`${file}: "${HOOKLENS_METADATA_KEY}" metadata for column "${name}" has a bad shape ${JSON.stringify(shape)}`);
    }
    hooks[name] = { shape: shape.map((d: number | null) => (d === null ? -1 : d)) };
  }
  return { model: o.model, hooks };
}

/**
 * Read a whole activation cache. Peak memory is about the file size plus the decoded columns.
 * Varying columns' rows are views into one buffer per column.
 */
export function readArrowCache(file: string): ArrowCache {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    fail(`cannot read activation cache ${file}: ${errMsg(e)}`);
  }
  if (!hasMagicAt(buf, 0)) {
    const isStream = buf.byteLength >= 4 && buf[0] === 0xff && buf[1] === 0xff && buf[2] === 0xff && buf[3] === 0xff;
    fail(isStream ? `${file}: is an Arrow IPC stream, not an Arrow IPC file` : `${file}: not an Arrow IPC file (missing ARROW1 magic)`);
  }
  if (buf.byteLength < 18 || !hasMagicAt(buf, buf.byteLength - 6)) fail(`${file}: truncated Arrow IPC file (no footer)`);

  // Open the file and read every batch, mapping arrow-js' generic errors to one-line ones.
  let schema: Schema;
  const batches: RecordBatch[] = [];
  try {
    const reader = RecordBatchReader.from(buf);
    if (!reader.isFile()) fail(`${file}: not an Arrow IPC file`);
    reader.open();
    schema = reader.schema;
    const n = reader.numRecordBatches;
    for (let i = 0; i < n; i++) {
      const b = reader.readRecordBatch(i);
      if (!b) fail(`${file}: truncated or corrupt Arrow IPC file (record batch ${i} of ${n} unreadable)`);
      batches.push(b);
    }
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${file}: truncated or corrupt Arrow IPC file (${errMsg(e)})`);
  }

  const { model, hooks } = parseMetadata(file, schema.metadata.get(HOOKLENS_METADATA_KEY));
  const rows = batches.reduce((s, b) => s + b.numRows, 0);

  const fieldIdx = new Map(schema.fields.map((f, i) => [f.name, i]));
  const index: Record<string, Int32Array> = {};
  for (const name of INDEX_COLUMNS) {
    const i = fieldIdx.get(name);
    if (i === undefined) fail(`${file}: activation cache has no "${name}" column`);
    const t = schema.fields[i].type;
    if (t.typeId !== Type.Int || (t as Int32).bitWidth !== 32 || !(t as Int32).isSigned) fail(`${file}: column "${name}" must be int32, got ${t}`);
    const out = new Int32Array(rows);
    let at = 0;
    for (const b of batches) {
      const d = b.data.children[i] as Data<Int32>;
      if (d.nullCount > 0) fail(`${file}: column "${name}" has nulls`);
      out.set((d.values as Int32Array).subarray(0, d.length), at);
      at += d.length;
    }
    index[name] = out;
  }

  let image: Int32Array | undefined;
  const imageIdx = fieldIdx.get('image');
  if (imageIdx !== undefined) {
    image = new Int32Array(rows);
    let at = 0;
    for (const b of batches) {
      const d = b.data.children[imageIdx] as Data<Int32>;
      image.set((d.values as Int32Array).subarray(0, d.length), at);
      at += d.length;
    }
  }
  let modality: Uint8Array | undefined;
  const modalityIdx = fieldIdx.get('modality');
  if (modalityIdx !== undefined) {
    modality = new Uint8Array(rows);
    let r = 0;
    for (const b of batches) {
      const col = b.getChildAt(modalityIdx)!;
      for (let k = 0; k < col.length; k++) {
        const v = col.get(k);
        const code = MODALITIES.indexOf(v as (typeof MODALITIES)[number]);
        if (code < 0) fail(`${file}: column "modality" row ${r} is ${JSON.stringify(v)}, not 'text' or 'image'`);
        modality[r++] = code;
      }
    }
  }

  const columns: Record<string, ArrowCacheColumn> = {};
  for (const [name, { shape }] of Object.entries(hooks)) {
    const i = fieldIdx.get(name);
    if (i === undefined) fail(`${file}: column "${name}" is described in the metadata but missing from the file`);
    const t = schema.fields[i].type;
    const varying = isVarying(shape);
    const size = fixedProduct(shape);
    if (!varying) {
      if (t.typeId !== Type.FixedSizeList || (t as FixedSizeList).listSize !== size || (t as FixedSizeList).valueType.typeId !== Type.Float || (t as FixedSizeList<Float32>).valueType.precision !== 1) {
        fail(`${file}: column "${name}" must be fixed_size_list<float32>[${size}] for per-position shape ${shapeStr(shape)}, got ${t}`);
      }
      const data = new Float32Array(rows * size);
      let at = 0;
      for (const b of batches) {
        const d = b.data.children[i] as Data<FixedSizeList<Float32>>;
        const child = d.children[0] as Data<Float32>;
        if (d.nullCount > 0 || child.nullCount > 0) fail(`${file}: column "${name}" has nulls`);
        // Data slices slice fixed-size-list children too, so child.values starts at row 0.
        data.set((child.values as Float32Array).subarray(0, d.length * size), at);
        at += d.length * size;
      }
      columns[name] = { perPositionShape: [...shape], rows, data };
    } else {
      if (t.typeId !== Type.List || (t as List).valueType.typeId !== Type.Float || (t as List<Float32>).valueType.precision !== 1) {
        fail(`${file}: column "${name}" must be list<float32> for per-position shape ${shapeStr(shape)}, got ${t}`);
      }
      let total = 0;
      for (const b of batches) {
        const d = b.data.children[i] as Data<List<Float32>>;
        if (d.nullCount > 0 || d.children[0].nullCount > 0) fail(`${file}: column "${name}" has nulls`);
        total += d.valueOffsets[d.length] - d.valueOffsets[0];
      }
      const values = new Float32Array(total);
      const lists: Float32Array[] = new Array(rows);
      let at = 0;
      let r = 0;
      for (const b of batches) {
        const d = b.data.children[i] as Data<List<Float32>>;
        const offs = d.valueOffsets;
        const src = d.children[0].values as Float32Array;
        values.set(src.subarray(offs[0], offs[d.length]), at);
        for (let k = 0; k < d.length; k++) {
          const len = offs[k + 1] - offs[k];
          if (len % size !== 0) fail(`${file}: column "${name}" row ${r} has ${len} floats, not a multiple of ${size} (per-position shape ${shapeStr(shape)})`);
          lists[r++] = values.subarray(at, at + len);
          at += len;
        }
      }
      columns[name] = { perPositionShape: [...shape], rows, lists };
    }
  }

  return { model, hooks, prompt: index.prompt, pos: index.pos, token: index.token, ...(image ? { image } : {}), ...(modality ? { modality } : {}), columns };
}

/** One fixed-size column as a dense tensor: shape [rows, ...perPositionShape] (data is not copied). */
export function cacheColumnToArray(cache: ArrowCache, name: string): { shape: number[]; data: Float32Array } {
  const c = cache.columns[name];
  if (!c) fail(`activation cache has no column "${name}" (columns: ${Object.keys(cache.columns).join(', ')})`);
  if (!c.data) fail(`activation cache column "${name}" has a varying per-position shape ${shapeStr(c.perPositionShape)}; use .lists`);
  return { shape: [c.rows, ...c.perPositionShape], data: c.data };
}

/** The rows of one prompt, as [start, end) into the cache's row arrays (rows are written prompt by prompt). */
export function cachePromptRows(cache: ArrowCache, promptIndex: number): { start: number; end: number } {
  const p = cache.prompt;
  let start = -1;
  let end = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === promptIndex) {
      if (start < 0) start = i;
      else if (end !== i) fail(`activation cache: prompt ${promptIndex} rows are not contiguous`);
      end = i + 1;
    }
  }
  if (start < 0) fail(`activation cache has no prompt ${promptIndex}`);
  return { start, end };
}

