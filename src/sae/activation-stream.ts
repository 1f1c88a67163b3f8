/**
 * Streaming activations for SAE training from one or more Arrow activation-cache files
 * (`hooklens cache` / writeActivationCache format: columns prompt, pos, token and one
 * fixed_size_list<float32> column per hook).
 *
 * Memory stays bounded whatever the file size: a file is never read whole. `ActivationStream.open`
 * reads each file's footer and the small metadata header of each record batch (row counts) with
 * positional reads; iteration then reads one record batch at a time (one positional read of its
 * block) and moves its rows through a fixed-size shuffle buffer, like SAELens' activation store:
 *
 *   - the buffer first fills with `bufferRows` rows; after that every incoming row evicts a
 *     uniformly chosen buffered row into the output batch and takes its slot;
 *   - at the end of each epoch the rows left in the buffer are emitted in random order, so each
 *     epoch emits every (kept) row exactly once; batches run on across epoch boundaries;
 *   - with `shuffle` the order in which record batches (of all files) are visited is also
 *     permuted each epoch, which mixes far better than the buffer alone when files hold many
 *     record batches.
 *
 * At any moment the stream holds at most `bufferRows` buffered rows plus one decoded record batch
 * (plus the output batch being filled); `stats` exposes counters to check that.
 *
 * All randomness comes from mulberry32(seed): the same files, options and seed give the same
 * batches, in the same order, on every run.
 */
import fs from 'node:fs';
import { FixedSizeList, Message, RecordBatchReader, Schema, Type, type Data, type Float32, type Int32, type RecordBatch } from 'apache-arrow';
import { Footer } from 'apache-arrow/ipc/metadata/file';
import { HooklensError, fail } from '../errors.js';
import { HOOKLENS_METADATA_KEY } from '../io/arrow-cache.js';
import { mulberry32 } from '../util/random.js';

export interface ActivationStreamOptions {
  /** One cache file or several; rows of all files form one dataset. */
  files: string | readonly string[];
  /** Hook column to read, e.g. `blocks.2.hook_resid_post`. */
  hook: string;
  /** Rows per yielded batch. */
  batchSize: number;
  /**
   * Shuffle buffer capacity in rows. Default: 16384 rows, or fewer when that would take more than
   * 64 MiB (never fewer than batchSize). Ignored without shuffle.
   */
  bufferRows?: number;
  /** Shuffle rows (buffer) and the record-batch visiting order. Default true. */
  shuffle?: boolean;
  /** Seed of the mulberry32 stream driving all shuffling. Default 0. */
  seed?: number;
  /** Passes over the data; `Infinity` streams forever. Default 1. */
  epochs?: number;
  /** Skip rows at position 0 (the BOS position of each prompt), as SAELens usually does. */
  excludePos0?: boolean;
  /** Skip rows whose token is one of these ids (e.g. BOS / EOS / padding wherever they occur). */
  excludeTokens?: readonly number[];
  /** Drop the final batch when it is smaller than batchSize. Default false. */
  dropLast?: boolean;
}

export interface ActivationBatch {
  /** rows × dIn activations, row-major. */
  acts: Float32Array;
  rows: number;
  dIn: number;
  /** Per row: token id, prompt index, position, and index into `files`. */
  tokens: Int32Array;
  prompts: Int32Array;
  positions: Int32Array;
  fileIndex: Int32Array;
  /** Epoch (0-based) of the batch's first row. */
  epoch: number;
  /** Rows yielded so far, this batch included. */
  tokensSeen: number;
}

export interface ActivationStreamStats {
  /** Rows yielded so far by the current (or last) iteration. */
  tokensSeen: number;
  batchesYielded: number;
  epochsCompleted: number;
  /** Rows kept per epoch after filtering; known once the first epoch is complete. */
  rowsPerEpoch: number | null;
  /** Rows skipped by excludePos0 / excludeTokens so far. */
  rowsSkipped: number;
  recordBatchesRead: number;
  /** Bytes read from disk by this iteration (record-batch blocks). */
  bytesRead: number;
  /** Largest single read (one record-batch block). */
  maxReadBytes: number;
  /** Largest record batch decoded, in rows. */
  maxRecordBatchRows: number;
  /** Shuffle-buffer capacity (0 without shuffle). */
  bufferCapacity: number;
  /** Rows in the shuffle buffer now. */
  bufferedRows: number;
  /** Rows held now: shuffle buffer + the decoded record batch, if any. */
  heldRows: number;
  /** Highest heldRows so far; never above bufferCapacity + maxRecordBatchRows. */
  peakHeldRows: number;
}

interface BlockInfo {
  offset: number;
  metaDataLength: number;
  bodyLength: number;
  rows: number;
}

interface OpenFile {
  path: string;
  fd: number;
  size: number;
  model: string | null;
  blocks: BlockInfo[];
  /** The schema message framed as an IPC stream prefix, to decode a single batch block. */
  streamPrefix: Uint8Array;
  colIndex: number;
  /** Floats per row of the hook column. */
  dIn: number;
  promptIndex: number;
  posIndex: number;
  tokenIndex: number;
  /** Column index of `modality` (vision-language caches), or -1. */
  modalityIndex: number;
}

const MAGIC = 'ARROW1';
const INDEX_COLUMNS = ['prompt', 'pos', 'token'] as const;
const NON_HOOK_COLUMNS = [...INDEX_COLUMNS, 'image', 'modality', 'logits'] as const;
const EOS_MARKER = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0);
const DEFAULT_BUFFER_ROWS = 16384;
const DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024;

function errMsg(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}

function readAt(fd: number, file: string, position: number, length: number, into?: Uint8Array, intoOffset = 0): Uint8Array {
  const buf = into ?? new Uint8Array(length);
  let done = 0;
  try {
    while (done < length) {
      const n = fs.readSync(fd, buf, intoOffset + done, length - done, position + done);
      if (n === 0) fail(`${file}: truncated Arrow IPC file (unexpected end of file at byte ${position + done})`);
      done += n;
    }
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`cannot read activation cache ${file}: ${errMsg(e)}`);
  }
  return buf;
}

function hasMagic(b: Uint8Array): boolean {
  for (let i = 0; i < MAGIC.length; i++) if (b[i] !== MAGIC.charCodeAt(i)) return false;
  return true;
}

/** An IPC-stream framed copy of the schema message: continuation, length, flatbuffer, padding. */
function framedSchema(schema: Schema): Uint8Array {
  const fb = Message.encode(Message.from(schema));
  const padded = (fb.byteLength + 7) & ~7;
  const out = new Uint8Array(8 + padded);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, -1, true);
  dv.setInt32(4, padded, true);
  out.set(fb, 8);
  return out;
}

/** Rows of a record-batch block, from its metadata header alone (the body is not read). */
function blockRows(meta: Uint8Array, file: string, i: number): number {
  const dv = new DataView(meta.buffer, meta.byteOffset, meta.byteLength);
  const continuation = meta.byteLength >= 8 && dv.getInt32(0, true) === -1;
  const start = continuation ? 8 : 4;
  const len = dv.getInt32(continuation ? 4 : 0, true);
  if (len <= 0 || start + len > meta.byteLength) fail(`${file}: corrupt Arrow IPC file (record batch ${i} has a bad metadata length)`);
  let rows: number;
  try {
    const m = Message.decode(meta.subarray(start, start + len));
    if (!m.isRecordBatch()) fail(`${file}: corrupt Arrow IPC file (block ${i} is not a record batch)`);
    rows = Number((m.header() as unknown as { length: number | bigint }).length);
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${file}: corrupt Arrow IPC file (record batch ${i}: ${errMsg(e)})`);
  }
  if (!Number.isSafeInteger(rows) || rows < 0) fail(`${file}: corrupt Arrow IPC file (record batch ${i} has ${rows} rows)`);
  return rows;
}

/** The file's size and decoded footer (magic and length checked). */
function readFooter(fd: number, file: string): { size: number; footer: Footer; footerStart: number } {
  const size = fs.fstatSync(fd).size;
  if (size < 8) fail(`${file}: not an Arrow IPC file (only ${size} bytes)`);
  const head = readAt(fd, file, 0, 8);
  if (!hasMagic(head)) {
    const isStream = head[0] === 0xff && head[1] === 0xff && head[2] === 0xff && head[3] === 0xff;
    fail(isStream ? `${file}: is an Arrow IPC stream, not an Arrow IPC file` : `${file}: not an Arrow IPC file (missing ARROW1 magic)`);
  }
  if (size < 18) fail(`${file}: truncated Arrow IPC file (no footer)`);
  const tail = readAt(fd, file, size - 10, 10);
  if (!hasMagic(tail.subarray(4))) fail(`${file}: truncated Arrow IPC file (no footer)`);
  const footerLen = new DataView(tail.buffer, tail.byteOffset).getInt32(0, true);
  const footerStart = size - 10 - footerLen;
  if (footerLen <= 0 || footerStart < 8) fail(`${file}: corrupt Arrow IPC file (bad footer length ${footerLen})`);
  let footer: Footer;
  try {
    footer = Footer.decode(readAt(fd, file, footerStart, footerLen));
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${file}: corrupt Arrow IPC file (unreadable footer: ${errMsg(e)})`);
  }
  return { size, footer, footerStart };
}

function openCacheFd(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (e) {
    fail(`cannot read activation cache ${file}: ${errMsg(e)}`);
  }
}

/** Hook columns of a cache file, from its footer alone (no record batch is read). */
export function cacheHookColumns(file: string): string[] {
  const fd = openCacheFd(file);
  try {
    const { footer } = readFooter(fd, file);
    return footer.schema.fields.map((f) => f.name).filter((n) => !(NON_HOOK_COLUMNS as readonly string[]).includes(n));
  } finally {
    fs.closeSync(fd);
  }
}

function openCacheFile(file: string, hook: string): OpenFile {
  const fd = openCacheFd(file);
  try {
    const { size, footer, footerStart } = readFooter(fd, file);
    const schema = footer.schema;
    const fieldIdx = new Map(schema.fields.map((f, i) => [f.name, i]));
    const idx: Record<string, number> = {};
    for (const name of INDEX_COLUMNS) {
      const i = fieldIdx.get(name);
      if (i === undefined) fail(`${file}: not a hooklens activation cache (no "${name}" column)`);
      const t = schema.fields[i].type;
      if (t.typeId !== Type.Int || (t as Int32).bitWidth !== 32) fail(`${file}: column "${name}" must be int32, got ${t}`);
      idx[name] = i;
    }
    const colIndex = fieldIdx.get(hook);
    if (colIndex === undefined) {
      const hooks = schema.fields.filter((f) => !(INDEX_COLUMNS as readonly string[]).includes(f.name)).map((f) => f.name);
      fail(`${file}: no column "${hook}" (available hooks: ${hooks.length ? hooks.join(', ') : 'none'})`);
    }
    const t = schema.fields[colIndex].type;
    if (t.typeId !== Type.FixedSizeList) {
      fail(`${file}: column "${hook}" is ${t}, not a fixed-size list; activations of varying size per position cannot be streamed for SAE training`);
    }
    const vt = (t as FixedSizeList).valueType;
    if (vt.typeId !== Type.Float || (vt as Float32).precision !== 1) fail(`${file}: column "${hook}" holds ${vt}, expected float32`);

    let model: string | null = null;
    const meta = schema.metadata.get(HOOKLENS_METADATA_KEY);
    if (meta !== undefined) {
      try {
        const j = JSON.parse(meta) as { model?: unknown };
        if (typeof j.model === 'string') model = j.model;
      } catch {
        /* the schema and columns are what matter here */
      }
    }

    const dataEnd = footerStart;
    const blocks: BlockInfo[] = [];
    for (let i = 0; i < footer.numRecordBatches; i++) {
      const b = footer.getRecordBatch(i);
      if (!b) fail(`${file}: corrupt Arrow IPC file (record batch ${i} missing from the footer)`);
      const { offset, metaDataLength, bodyLength } = b;
      if (!(offset >= 8 && metaDataLength >= 8 && bodyLength >= 0 && offset + metaDataLength + bodyLength <= dataEnd)) {
        fail(`${file}: truncated or corrupt Arrow IPC file (record batch ${i} lies outside the file)`);
      }
      const rows = blockRows(readAt(fd, file, offset, metaDataLength), file, i);
      blocks.push({ offset, metaDataLength, bodyLength, rows });
    }
    return {
      path: file,
      fd,
      size,
      model,
      blocks,
      streamPrefix: framedSchema(schema),
      colIndex,
      dIn: (t as FixedSizeList).listSize,
      promptIndex: idx.prompt,
      posIndex: idx.pos,
      tokenIndex: idx.token,
      modalityIndex: fieldIdx.get('modality') ?? -1,
    };
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* ignore */ }
    throw e;
  }
}

/** One record batch as stored: rows in file order. */
export interface DecodedBatch {
  rows: number;
  acts: Float32Array;
  prompt: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  /** Per row 1 = image position, 0 = text (only when the cache has a `modality` column). */
  modality?: Uint8Array;
}

function checkPositiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isInteger(v) && v > 0)) fail(`activation stream: ${name} must be a positive integer, got ${v}`);
}

export class ActivationStream implements Iterable<ActivationBatch> {
  readonly files: readonly string[];
  readonly hook: string;
  /** Floats per row (the hook's per-position size). */
  readonly dIn: number;
  /** Rows in all files before filtering (from the record-batch headers). */
  readonly totalRows: number;
  /** Model recorded in each file's metadata (null when absent). */
  readonly models: readonly (string | null)[];
  private readonly opened: OpenFile[];
  private readonly opts: Required<Omit<ActivationStreamOptions, 'files' | 'excludeTokens'>> & { excludeTokens: Set<number> };
  private current: ActivationStreamStats;
  private closed = false;

  private constructor(opened: OpenFile[], dIn: number, opts: ActivationStreamOptions) {
    this.opened = opened;
    this.files = opened.map((f) => f.path);
    this.models = opened.map((f) => f.model);
    this.hook = opts.hook;
    this.dIn = dIn;
    this.totalRows = opened.reduce((s, f) => s + f.blocks.reduce((t, b) => t + b.rows, 0), 0);
    const shuffle = opts.shuffle ?? true;
    this.opts = {
      hook: opts.hook,
      batchSize: opts.batchSize,
      bufferRows: opts.bufferRows ?? Math.max(opts.batchSize, Math.min(DEFAULT_BUFFER_ROWS, Math.floor(DEFAULT_BUFFER_BYTES / (4 * dIn)))),
      shuffle,
      seed: opts.seed ?? 0,
      epochs: opts.epochs ?? 1,
      excludePos0: opts.excludePos0 ?? false,
      excludeTokens: new Set(opts.excludeTokens ?? []),
      dropLast: opts.dropLast ?? false,
    };
    this.current = this.freshStats();
  }

  /** Open the files (footers and batch headers only), check the hook column; throws one-line errors. */
  static open(opts: ActivationStreamOptions): ActivationStream {
    const files = typeof opts.files === 'string' ? [opts.files] : [...opts.files];
    if (files.length === 0) fail('activation stream: no activation cache files given');
    if (typeof opts.hook !== 'string' || opts.hook === '') fail('activation stream: no hook column given');
    checkPositiveInt('batchSize', opts.batchSize);
    if (opts.batchSize === undefined) fail('activation stream: batchSize is required');
    checkPositiveInt('bufferRows', opts.bufferRows);
    const ep = opts.epochs;
    if (ep !== undefined && !(ep === Infinity || (Number.isInteger(ep) && ep > 0))) fail(`activation stream: epochs must be a positive integer or Infinity, got ${ep}`);
    if (opts.seed !== undefined && !Number.isFinite(opts.seed)) fail(`activation stream: seed must be a number, got ${opts.seed}`);
    const opened: OpenFile[] = [];
    try {
      let dIn = -1;
      for (const f of files) {
        const o = openCacheFile(f, opts.hook);
        opened.push(o);
        const size = o.dIn;
        if (dIn < 0) dIn = size;
        else if (size !== dIn) fail(`${f}: column "${opts.hook}" has ${size} floats per row but ${files[0]} has ${dIn}`);
      }
      return new ActivationStream(opened, dIn, opts);
    } catch (e) {
      for (const o of opened) try { fs.closeSync(o.fd); } catch { /* ignore */ }
      throw e;
    }
  }

  /** Counters of the current (or last) iteration. */
  get stats(): Readonly<ActivationStreamStats> {
    return { ...this.current };
  }

  [Symbol.iterator](): Iterator<ActivationBatch> {
    return this.batches();
  }

  /**
   * A fresh pass from the seed: each call starts over with the same shuffling, so two iterations
   * with the same options yield identical batches. One iteration at a time.
   */
  *batches(): Generator<ActivationBatch, void, undefined> {
    if (this.closed) fail(`activation stream (${this.files.join(', ')}): already closed`);
    const { batchSize, shuffle, epochs, excludePos0, excludeTokens, dropLast } = this.opts;
    const dIn = this.dIn;
    const cap = shuffle ? this.opts.bufferRows : 0;
    const st = (this.current = this.freshStats());
    st.bufferCapacity = cap;
    const rng = mulberry32(this.opts.seed);
    const skipTokens = excludeTokens.size > 0;

    // Shuffle buffer.
    const bAct = new Float32Array(cap * dIn);
    const bTok = new Int32Array(cap);
    const bPrompt = new Int32Array(cap);
    const bPos = new Int32Array(cap);
    const bFile = new Int32Array(cap);
    let buffered = 0;

    // Output batch being filled.
    let out = newBatch(batchSize, dIn);
    let k = 0;
    let outEpoch = 0;
    const putFrom = (act: Float32Array, actRow: number, tok: number, prompt: number, pos: number, file: number, epoch: number): void => {
      if (k === 0) outEpoch = epoch;
      out.acts.set(act.subarray(actRow * dIn, (actRow + 1) * dIn), k * dIn);
      out.tokens[k] = tok;
      out.prompts[k] = prompt;
      out.positions[k] = pos;
      out.fileIndex[k] = file;
      k++;
    };
    const finish = (rows: number): ActivationBatch => {
      st.tokensSeen += rows;
      st.batchesYielded++;
      const b: ActivationBatch =
        rows === batchSize
          ? { ...out, rows, dIn, epoch: outEpoch, tokensSeen: st.tokensSeen }
          : {
              acts: out.acts.slice(0, rows * dIn),
              tokens: out.tokens.slice(0, rows),
              prompts: out.prompts.slice(0, rows),
              positions: out.positions.slice(0, rows),
              fileIndex: out.fileIndex.slice(0, rows),
              rows,
              dIn,
              epoch: outEpoch,
              tokensSeen: st.tokensSeen,
            };
      out = newBatch(batchSize, dIn);
      k = 0;
      return b;
    };

    const visits: [number, number][] = [];
    this.opened.forEach((f, fi) => f.blocks.forEach((_, bi) => visits.push([fi, bi])));

    for (let epoch = 0; epoch < epochs; epoch++) {
      if (shuffle) shuffleInPlace(visits, rng);
      let keptThisEpoch = 0;
      for (const [fi, bi] of visits) {
        const rb = this.readBlock(fi, bi, st);
        st.heldRows = buffered + rb.rows;
        st.peakHeldRows = Math.max(st.peakHeldRows, st.heldRows);
        for (let r = 0; r < rb.rows; r++) {
          const tok = rb.token[r];
          if ((excludePos0 && rb.pos[r] === 0) || (skipTokens && excludeTokens.has(tok))) {
            st.rowsSkipped++;
            continue;
          }
          keptThisEpoch++;
          if (!shuffle) {
            putFrom(rb.acts, r, tok, rb.prompt[r], rb.pos[r], fi, epoch);
          } else if (buffered < cap) {
            bAct.set(rb.acts.subarray(r * dIn, (r + 1) * dIn), buffered * dIn);
            bTok[buffered] = tok;
            bPrompt[buffered] = rb.prompt[r];
            bPos[buffered] = rb.pos[r];
            bFile[buffered] = fi;
            buffered++;
            st.bufferedRows = buffered;
            continue;
          } else {
            const j = Math.floor(rng() * cap);
            putFrom(bAct, j, bTok[j], bPrompt[j], bPos[j], bFile[j], epoch);
            bAct.set(rb.acts.subarray(r * dIn, (r + 1) * dIn), j * dIn);
            bTok[j] = tok;
            bPrompt[j] = rb.prompt[r];
            bPos[j] = rb.pos[r];
            bFile[j] = fi;
          }
          if (k === batchSize) yield finish(batchSize);
        }
        st.heldRows = buffered;
      }
      // Drain: the rest of this epoch, in random order.
      while (buffered > 0) {
        const j = Math.floor(rng() * buffered);
        putFrom(bAct, j, bTok[j], bPrompt[j], bPos[j], bFile[j], epoch);
        const last = buffered - 1;
        if (j !== last) {
          bAct.copyWithin(j * dIn, last * dIn, (last + 1) * dIn);
          bTok[j] = bTok[last];
          bPrompt[j] = bPrompt[last];
          bPos[j] = bPos[last];
          bFile[j] = bFile[last];
        }
        buffered--;
        st.bufferedRows = st.heldRows = buffered;
        if (k === batchSize) yield finish(batchSize);
      }
      if (st.rowsPerEpoch === null) {
        st.rowsPerEpoch = keptThisEpoch;
        if (keptThisEpoch === 0) {
          fail(`activation stream: no rows to read in ${this.files.join(', ')}${excludePos0 || skipTokens ? ' after excluding positions/tokens' : ''}`);
        }
      }
      st.epochsCompleted = epoch + 1;
    }
    if (k > 0 && !dropLast) yield finish(k);
  }

  /**
   * Every record batch of every file, in file order, unshuffled and unfiltered — for consumers
   * that select rows themselves (probing). Holds one decoded batch at a time.
   */
  *recordBatches(): Generator<DecodedBatch & { file: number }, void, undefined> {
    if (this.closed) fail(`activation stream (${this.files.join(', ')}): already closed`);
    const st = (this.current = this.freshStats());
    for (let fi = 0; fi < this.opened.length; fi++) {
      for (let bi = 0; bi < this.opened[fi].blocks.length; bi++) {
        const rb = this.readBlock(fi, bi, st);
        st.heldRows = rb.rows;
        st.peakHeldRows = Math.max(st.peakHeldRows, rb.rows);
        yield { ...rb, file: fi };
      }
    }
  }

  /** Close the file descriptors. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.opened) {
      try { fs.closeSync(f.fd); } catch { /* ignore */ }
    }
  }

  private freshStats(): ActivationStreamStats {
    return {
      tokensSeen: 0,
      batchesYielded: 0,
      epochsCompleted: 0,
      rowsPerEpoch: null,
      rowsSkipped: 0,
      recordBatchesRead: 0,
      bytesRead: 0,
      maxReadBytes: 0,
      maxRecordBatchRows: 0,
      bufferCapacity: 0,
      bufferedRows: 0,
      heldRows: 0,
      peakHeldRows: 0,
    };
  }

  /** Read and decode one record batch: one positional read of its block. */
  private readBlock(fi: number, bi: number, st: ActivationStreamStats): DecodedBatch {
    if (this.closed) fail(`activation stream (${this.files.join(', ')}): closed while reading`);
    const f = this.opened[fi];
    const blk = f.blocks[bi];
    const n = blk.metaDataLength + blk.bodyLength;
    const pre = f.streamPrefix.byteLength;
    // [schema message][this block][EOS] is a one-batch IPC stream that arrow-js decodes as is.
    const bytes = new Uint8Array(pre + n + EOS_MARKER.byteLength);
    bytes.set(f.streamPrefix, 0);
    readAt(f.fd, f.path, blk.offset, n, bytes, pre);
    bytes.set(EOS_MARKER, pre + n);
    st.recordBatchesRead++;
    st.bytesRead += n;
    st.maxReadBytes = Math.max(st.maxReadBytes, n);
    try {
      const reader = RecordBatchReader.from(bytes);
      reader.open();
      const r = reader.next();
      if (r.done || !r.value) fail(`${f.path}: corrupt Arrow IPC file (record batch ${bi} unreadable)`);
      const rb: RecordBatch = r.value;
      if (rb.numRows !== blk.rows) fail(`${f.path}: corrupt Arrow IPC file (record batch ${bi} has ${rb.numRows} rows, header says ${blk.rows})`);
      const rows = rb.numRows;
      st.maxRecordBatchRows = Math.max(st.maxRecordBatchRows, rows);
      const int = (i: number, name: string): Int32Array => {
        const d = rb.data.children[i] as Data<Int32>;
        if (d.nullCount > 0) fail(`${f.path}: column "${name}" has nulls (record batch ${bi})`);
        const v = (d.values as Int32Array).subarray(0, rows);
        if (v.length !== rows) fail(`${f.path}: corrupt Arrow IPC file (record batch ${bi}: column "${name}" is short)`);
        return v;
      };
      const d = rb.data.children[f.colIndex] as Data<FixedSizeList<Float32>>;
      const child = d.children[0] as Data<Float32>;
      if (d.nullCount > 0 || child.nullCount > 0) fail(`${f.path}: column "${this.hook}" has nulls (record batch ${bi})`);
      const acts = (child.values as Float32Array).subarray(0, rows * this.dIn);
      if (acts.length !== rows * this.dIn) fail(`${f.path}: corrupt Arrow IPC file (record batch ${bi}: column "${this.hook}" is short)`);
      const out: DecodedBatch = { rows, acts, prompt: int(f.promptIndex, 'prompt'), pos: int(f.posIndex, 'pos'), token: int(f.tokenIndex, 'token') };
      if (f.modalityIndex >= 0) {
        const col = rb.getChildAt(f.modalityIndex)!;
        const modality = new Uint8Array(rows);
        for (let k = 0; k < rows; k++) {
          const v = col.get(k);
          if (v !== 'text' && v !== 'image') fail(`${f.path}: column "modality" is ${JSON.stringify(v)} in record batch ${bi}, not 'text' or 'image'`);
          modality[k] = v === 'image' ? 1 : 0;
        }
        out.modality = modality;
      }
      return out;
    } catch (e) {
      if (e instanceof HooklensError) throw e;
      fail(`${f.path}: corrupt Arrow IPC file (record batch ${bi}: ${errMsg(e)})`);
    }
  }
}

function newBatch(batchSize: number, dIn: number) {
  return {
    acts: new Float32Array(batchSize * dIn),
    tokens: new Int32Array(batchSize),
    prompts: new Int32Array(batchSize),
    positions: new Int32Array(batchSize),
    fileIndex: new Int32Array(batchSize),
  };
}

function shuffleInPlace<T>(a: T[], rng: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
}

/** Open, iterate and close: a convenience generator over ActivationStream. */
export function* streamActivations(opts: ActivationStreamOptions): Generator<ActivationBatch, void, undefined> {
  const s = ActivationStream.open(opts);
  try {
    yield* s.batches();
  } finally {
    s.close();
  }
}

export interface NormScaling {
  /** sqrt(dIn) / meanNorm: multiply activations by this so their average norm is sqrt(dIn). */
  factor: number;
  meanNorm: number;
  rows: number;
}

/** SAELens `expected_average_only_in` scaling factor of a block of rows (rows × dIn floats). */
export function normScalingFactor(acts: Float32Array, dIn: number): NormScaling {
  if (!(Number.isInteger(dIn) && dIn > 0) || acts.length % dIn !== 0) fail(`norm scaling: ${acts.length} floats are not rows of ${dIn}`);
  return scalingFrom(sumOfNorms(acts, dIn, acts.length / dIn), acts.length / dIn, dIn);
}

function sumOfNorms(acts: Float32Array, dIn: number, rows: number): number {
  let sum = 0;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = r * dIn; i < (r + 1) * dIn; i++) s += acts[i] * acts[i];
    sum += Math.sqrt(s);
  }
  return sum;
}

function scalingFrom(sum: number, rows: number, dIn: number): NormScaling {
  if (rows === 0) fail('norm scaling: no rows');
  const meanNorm = sum / rows;
  if (!(meanNorm > 0) || !Number.isFinite(meanNorm)) fail(`norm scaling: mean activation norm is ${meanNorm}; cannot scale`);
  return { factor: Math.sqrt(dIn) / meanNorm, meanNorm, rows };
}

/**
 * Estimate the dataset-level norm scaling factor (SAELens `normalize_activations:
 * "expected_average_only_in"`): sqrt(dIn) / mean ‖x‖ over up to `sampleRows` rows drawn from a
 * shuffled pass (the whole dataset when it is smaller). Uses the stream's filters and seed.
 */
export function estimateStreamNormScaling(
  opts: Omit<ActivationStreamOptions, 'batchSize' | 'epochs' | 'dropLast'> & { sampleRows?: number; batchSize?: number },
): NormScaling {
  const sampleRows = opts.sampleRows ?? 1 << 17;
  checkPositiveInt('sampleRows', sampleRows);
  const s = ActivationStream.open({ ...opts, batchSize: opts.batchSize ?? 4096, epochs: 1, dropLast: false });
  let sum = 0;
  let rows = 0;
  try {
    for (const b of s.batches()) {
      const take = Math.min(b.rows, sampleRows - rows);
      sum += sumOfNorms(b.acts, b.dIn, take);
      rows += take;
      if (rows >= sampleRows) break;
    }
  } finally {
    s.close();
  }
  return scalingFrom(sum, rows, s.dIn);
}
