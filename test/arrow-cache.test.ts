import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FixedSizeList, List, RecordBatchFileReader, RecordBatchStreamReader, Type, tableFromIPC, tableToIPC, tableFromArrays } from 'apache-arrow';
import { HooklensError } from '../src/errors.js';
import { ArrowCacheWriter, cacheColumnToArray, cachePromptRows, readArrowCache, type HookColumnSpec } from '../src/io/arrow-cache.js';
import { mulberry32 as rng } from '../src/util/random.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-arrow-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function randF32(n: number, r: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() - 0.5) * 20;
  return a;
}

const HEADS = 2;
const D = 8;
const VOCAB = 11;
const COLUMNS: HookColumnSpec[] = [
  { name: 'blocks.0.hook_resid_post', perPositionShape: [D] },
  { name: 'blocks.0.attn.hook_z', perPositionShape: [HEADS, 4] },
  { name: 'blocks.0.attn.hook_pattern', perPositionShape: [HEADS, -1] },
  { name: 'logits', perPositionShape: [VOCAB] },
];

interface PromptData {
  tokens: number[];
  resid: Float32Array;
  z: Float32Array;
  pattern: Float32Array[];
  logits: Float32Array;
}

function makePrompt(T: number, r: () => number): PromptData {
  return {
    tokens: Array.from({ length: T }, () => Math.floor(r() * 50000)),
    resid: randF32(T * D, r),
    z: randF32(T * HEADS * 4, r),
    // per query position q: [head, k] with k = T (full prompt length)
    pattern: Array.from({ length: T }, () => randF32(HEADS * T, r)),
    logits: randF32(T * VOCAB, r),
  };
}

function cols(p: PromptData): Record<string, Float32Array | Float32Array[]> {
  return {
    'blocks.0.hook_resid_post': p.resid,
    'blocks.0.attn.hook_z': p.z,
    'blocks.0.attn.hook_pattern': p.pattern,
    logits: p.logits,
  };
}

async function writeSample(file: string, lengths = [5, 1, 9], opts = {}): Promise<PromptData[]> {
  const r = rng(1234);
  const prompts = lengths.map((T) => makePrompt(T, r));
  const w = ArrowCacheWriter.open(file, { model: 'gpt2-small', columns: COLUMNS }, opts);
  prompts.forEach((p, i) => w.writePrompt(i, p.tokens, cols(p)));
  await w.close();
  return prompts;
}

function listDir(): string[] {
  return fs.readdirSync(dir).sort();
}

describe('ArrowCacheWriter / readArrowCache round trip', () => {
  it('round-trips exactly (several shapes, a varying column, prompts of different lengths)', async () => {
    const file = path.join(dir, 'cache.arrow');
    const lengths = [5, 1, 9];
    // small batches so prompts straddle batch boundaries
    const prompts = await writeSample(file, lengths, { maxBatchRows: 4 });
    expect(listDir()).toEqual(['cache.arrow']);

    const c = readArrowCache(file);
    expect(c.model).toBe('gpt2-small');
    const rows = lengths.reduce((a, b) => a + b, 0);
    expect(c.prompt.length).toBe(rows);
    expect(Array.from(c.prompt)).toEqual(lengths.flatMap((T, i) => Array(T).fill(i)));
    expect(Array.from(c.pos)).toEqual(lengths.flatMap((T) => Array.from({ length: T }, (_, j) => j)));
    expect(Array.from(c.token)).toEqual(prompts.flatMap((p) => p.tokens));

    const concat = (xs: Float32Array[]) => {
      const out = new Float32Array(xs.reduce((s, x) => s + x.length, 0));
      let at = 0;
      for (const x of xs) { out.set(x, at); at += x.length; }
      return out;
    };
    expect(c.columns['blocks.0.hook_resid_post'].data).toEqual(concat(prompts.map((p) => p.resid)));
    expect(c.columns['blocks.0.attn.hook_z'].data).toEqual(concat(prompts.map((p) => p.z)));
    expect(c.columns.logits.data).toEqual(concat(prompts.map((p) => p.logits)));
    const pat = c.columns['blocks.0.attn.hook_pattern'];
    expect(pat.data).toBeUndefined();
    expect(pat.rows).toBe(rows);
    expect(pat.lists).toEqual(prompts.flatMap((p) => p.pattern));
    expect(pat.perPositionShape).toEqual([HEADS, -1]);

    const z = cacheColumnToArray(c, 'blocks.0.attn.hook_z');
    expect(z.shape).toEqual([rows, HEADS, 4]);
    expect(z.data.length).toBe(rows * HEADS * 4);
    expect(() => cacheColumnToArray(c, 'blocks.0.attn.hook_pattern')).toThrow(/varying/);
    expect(() => cacheColumnToArray(c, 'nope')).toThrow(HooklensError);
    expect(cachePromptRows(c, 2)).toEqual({ start: 6, end: 15 });
  });

  it('writes the hooklens metadata JSON', async () => {
    const file = path.join(dir, 'cache.arrow');
    await writeSample(file);
    const t = tableFromIPC(fs.readFileSync(file));
    const meta = JSON.parse(t.schema.metadata.get('hooklens')!);
    expect(meta).toEqual({
      version: 1,
      model: 'gpt2-small',
      hooks: {
        'blocks.0.hook_resid_post': { shape: [D] },
        'blocks.0.attn.hook_z': { shape: [HEADS, 4] },
        'blocks.0.attn.hook_pattern': { shape: [HEADS, -1] },
        logits: { shape: [VOCAB] },
      },
    });
    expect(readArrowCache(file).hooks['blocks.0.attn.hook_pattern']).toEqual({ shape: [HEADS, -1] });
  });

  it('uses Int32 / FixedSizeList<Float32> / List<Float32> column types', async () => {
    const file = path.join(dir, 'cache.arrow');
    await writeSample(file);
    const { schema } = tableFromIPC(fs.readFileSync(file));
    const byName = Object.fromEntries(schema.fields.map((f) => [f.name, f.type]));
    for (const n of ['prompt', 'pos', 'token']) {
      expect(byName[n].typeId).toBe(Type.Int);
      expect(String(byName[n])).toBe('Int32');
    }
    const fixed = (n: string, size: number) => {
      const t = byName[n] as FixedSizeList;
      expect(t.typeId).toBe(Type.FixedSizeList);
      expect(t.listSize).toBe(size);
      expect(t.valueType.typeId).toBe(Type.Float);
      expect(String(t.valueType)).toBe('Float32');
    };
    fixed('blocks.0.hook_resid_post', D);
    fixed('blocks.0.attn.hook_z', HEADS * 4);
    fixed('logits', VOCAB);
    const l = byName['blocks.0.attn.hook_pattern'] as List;
    expect(l.typeId).toBe(Type.List);
    expect(String(l.valueType)).toBe('Float32');
  });

  it('is readable with the plain apache-arrow API (what pyarrow sees)', async () => {
    const file = path.join(dir, 'cache.arrow');
    await writeSample(file, [5, 1, 9]);
    const buf = fs.readFileSync(file);
    expect(buf.subarray(0, 6).toString('latin1')).toBe('ARROW1');
    expect(buf.subarray(buf.length - 6).toString('latin1')).toBe('ARROW1');
    const t = tableFromIPC(buf);
    expect(t.numRows).toBe(15);
    expect(t.schema.fields.map((f) => f.name)).toEqual([
      'prompt', 'pos', 'token',
      'blocks.0.hook_resid_post', 'blocks.0.attn.hook_z', 'blocks.0.attn.hook_pattern', 'logits',
    ]);
    // row 7 = prompt 2, position 1: its pattern row has HEADS × 9 floats
    expect(t.getChild('prompt')!.get(7)).toBe(2);
    expect(t.getChild('pos')!.get(7)).toBe(1);
    expect(t.getChild('blocks.0.attn.hook_pattern')!.get(7)!.length).toBe(HEADS * 9);
    expect(t.getChild('blocks.0.hook_resid_post')!.get(7)!.length).toBe(D);
  });

  it('writes a spec-complete file: the body after the magic is a valid IPC stream', async () => {
    const file = path.join(dir, 'cache.arrow');
    await writeSample(file, [5, 1, 9], { maxBatchRows: 4 });
    const buf = fs.readFileSync(file);
    const reader = RecordBatchStreamReader.from(buf.subarray(8)).open();
    expect(reader.schema.metadata.get('hooklens')).toBeDefined();
    let rows = 0;
    for (const b of reader) rows += b.numRows;
    expect(rows).toBe(15);
  });

  it('writes a valid, empty cache when no prompt was written', async () => {
    const file = path.join(dir, 'empty.arrow');
    const w = ArrowCacheWriter.open(file, { model: 'm', columns: COLUMNS });
    await w.close();
    const c = readArrowCache(file);
    expect(c.prompt.length).toBe(0);
    expect(c.columns.logits.data!.length).toBe(0);
    expect(c.columns['blocks.0.attn.hook_pattern'].lists).toEqual([]);
    expect(tableFromIPC(fs.readFileSync(file)).numRows).toBe(0);
  });
});

describe('streaming', () => {
  it('streams many prompts to disk in multiple record batches', async () => {
    const file = path.join(dir, 'big.arrow');
    const HOOK = 1024;
    const T = 16;
    // row = 12 B of indices + 4 KiB of floats; 1 MiB batches → 255 rows a batch
    const maxBatchBytes = 1 << 20;
    const w = ArrowCacheWriter.open(file, { model: 'm', columns: [{ name: 'blocks.0.hook_resid_post', perPositionShape: [HOOK] }] }, { maxBatchBytes });
    const buf = new Float32Array(T * HOOK);
    const tokens = Array.from({ length: T }, (_, i) => i);
    let sawBytesOnDiskMidway = false;
    for (let p = 0; p < 200; p++) {
      buf.fill(p); // caller reuses its buffer: the writer must have copied the previous prompt
      w.writePrompt(p, tokens, { 'blocks.0.hook_resid_post': buf });
      if (p === 100) {
        // data already reached the (temp) file before close()
        expect(w.bytesWritten).toBeGreaterThan(50 * T * HOOK * 4);
        const tmp = fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));
        expect(tmp.length).toBe(1);
        expect(fs.statSync(path.join(dir, tmp[0])).size).toBe(w.bytesWritten);
        expect(fs.existsSync(file)).toBe(false);
        sawBytesOnDiskMidway = true;
      }
    }
    await w.close();
    expect(sawBytesOnDiskMidway).toBe(true);
    expect(fs.statSync(file).size).toBe(w.bytesWritten);
    expect(listDir()).toEqual(['big.arrow']);

    const t = tableFromIPC(fs.readFileSync(file));
    expect(t.numRows).toBe(200 * T);
    expect(t.batches.length).toBeGreaterThan(1);
    expect(t.batches.length).toBe(Math.ceil((200 * T) / Math.floor(maxBatchBytes / (12 + HOOK * 4))));
    for (const b of t.batches) expect(b.numRows * (12 + HOOK * 4)).toBeLessThanOrEqual(maxBatchBytes);
    const fr = RecordBatchFileReader.from(fs.readFileSync(file));
    fr.open();
    expect(fr.numRecordBatches).toBe(t.batches.length);
    expect(w.batchesWritten).toBe(t.batches.length);

    const c = readArrowCache(file);
    const col = cacheColumnToArray(c, 'blocks.0.hook_resid_post');
    expect(col.shape).toEqual([200 * T, HOOK]);
    for (const p of [0, 77, 199]) {
      const r = p * T + 5;
      expect(c.prompt[r]).toBe(p);
      expect(c.pos[r]).toBe(5);
      expect(col.data[r * HOOK + 3]).toBe(p);
    }
  });

  it('splits batches by maxBatchRows and by bytes of varying columns', async () => {
    const file = path.join(dir, 'rows.arrow');
    const w = ArrowCacheWriter.open(file, { model: 'm', columns: [{ name: 'pat', perPositionShape: [-1] }] }, { maxBatchRows: 1000, maxBatchBytes: 4096 });
    for (let p = 0; p < 20; p++) {
      const T = 10 + p;
      w.writePrompt(p, new Int32Array(T), { pat: Array.from({ length: T }, (_, q) => new Float32Array(q + 1).fill(p)) });
    }
    await w.close();
    const t = tableFromIPC(fs.readFileSync(file));
    expect(t.batches.length).toBeGreaterThan(5);
    const c = readArrowCache(file);
    expect(c.columns.pat.lists!.length).toBe(t.numRows);
    const { start } = cachePromptRows(c, 13);
    expect(Array.from(c.columns.pat.lists![start + 4])).toEqual([13, 13, 13, 13, 13]);
  });
});

describe('errors', () => {
  const spec = { model: 'm', columns: [{ name: 'blocks.0.hook_resid_post', perPositionShape: [4] }, { name: 'pat', perPositionShape: [2, -1] }] };

  function expectAbortedClean(file: string) {
    expect(fs.existsSync(file)).toBe(false);
    expect(listDir()).toEqual([]);
  }

  it('rejects a wrong Float32Array length, naming the column and expected vs got', () => {
    const file = path.join(dir, 'c.arrow');
    const w = ArrowCacheWriter.open(file, spec);
    let err: unknown;
    try {
      w.writePrompt(0, [1, 2, 3], { 'blocks.0.hook_resid_post': new Float32Array(11), pat: [new Float32Array(2), new Float32Array(4), new Float32Array(6)] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HooklensError);
    expect((err as Error).message).toMatch(/"blocks\.0\.hook_resid_post" expected 12 floats .* got 11/);
    // any error aborts: nothing left behind, and the writer refuses further use
    expectAbortedClean(file);
    expect(() => w.writePrompt(0, [1], { 'blocks.0.hook_resid_post': new Float32Array(4), pat: [new Float32Array(2)] })).toThrow(/aborted/);
  });

  it('rejects unknown and missing columns', () => {
    const file = path.join(dir, 'c.arrow');
    const ok = { 'blocks.0.hook_resid_post': new Float32Array(4), pat: [new Float32Array(2)] };
    const w1 = ArrowCacheWriter.open(file, spec);
    expect(() => w1.writePrompt(0, [1], { ...ok, 'blocks.9.hook_x': new Float32Array(4) })).toThrow(/unknown column "blocks\.9\.hook_x"/);
    expectAbortedClean(file);
    const w2 = ArrowCacheWriter.open(file, spec);
    expect(() => w2.writePrompt(0, [1], { pat: ok.pat })).toThrow(/missing column "blocks\.0\.hook_resid_post"/);
    expectAbortedClean(file);
  });

  it('rejects bad varying rows', () => {
    const file = path.join(dir, 'c.arrow');
    const w = ArrowCacheWriter.open(file, spec);
    expect(() => w.writePrompt(0, [1, 2], { 'blocks.0.hook_resid_post': new Float32Array(8), pat: [new Float32Array(2)] })).toThrow(/"pat" expected 2 rows/);
    const w2 = ArrowCacheWriter.open(file, spec);
    expect(() => w2.writePrompt(0, [1], { 'blocks.0.hook_resid_post': new Float32Array(4), pat: [new Float32Array(3)] })).toThrow(/"pat" row 0 has 3 floats, not a multiple of 2/);
    const w3 = ArrowCacheWriter.open(file, spec);
    expect(() => w3.writePrompt(0, [1], { 'blocks.0.hook_resid_post': new Float32Array(4), pat: new Float32Array(2) })).toThrow(/"pat" varies per position/);
    expectAbortedClean(file);
  });

  it('rejects bad column specs', () => {
    const file = path.join(dir, 'c.arrow');
    expect(() => ArrowCacheWriter.open(file, { model: 'm', columns: [] })).toThrow(HooklensError);
    expect(() => ArrowCacheWriter.open(file, { model: 'm', columns: [{ name: 'pos', perPositionShape: [2] }] })).toThrow(/reserved/);
    expect(() => ArrowCacheWriter.open(file, { model: 'm', columns: [{ name: 'a', perPositionShape: [2] }, { name: 'a', perPositionShape: [2] }] })).toThrow(/duplicate/);
    expect(() => ArrowCacheWriter.open(file, { model: 'm', columns: [{ name: 'a', perPositionShape: [0] }] })).toThrow(/bad per-position shape/);
    expect(() => ArrowCacheWriter.open(path.join(dir, 'no', 'such', 'dir.arrow'), spec)).toThrow(/cannot create activation cache .*dir\.arrow/);
    expect(listDir()).toEqual([]);
  });

  it('reader: non-Arrow, truncated, and metadata-less files name the file', async () => {
    const junk = path.join(dir, 'junk.arrow');
    fs.writeFileSync(junk, 'hello, this is not arrow');
    expect(() => readArrowCache(junk)).toThrow(HooklensError);
    expect(() => readArrowCache(junk)).toThrow(/junk\.arrow: not an Arrow IPC file/);

    const good = path.join(dir, 'good.arrow');
    await writeSample(good);
    const bytes = fs.readFileSync(good);
    for (const cut of [10, 200, Math.floor(bytes.length / 2), bytes.length - 3]) {
      const trunc = path.join(dir, `trunc${cut}.arrow`);
      fs.writeFileSync(trunc, bytes.subarray(0, cut));
      expect(() => readArrowCache(trunc)).toThrow(HooklensError);
      expect(() => readArrowCache(trunc)).toThrow(new RegExp(`trunc${cut}\\.arrow: truncated`));
    }
    // corrupt footer length (magic intact at both ends)
    const corrupt = path.join(dir, 'corrupt.arrow');
    const cb = Buffer.from(bytes);
    cb.writeInt32LE(0x7fffff00, cb.length - 10);
    fs.writeFileSync(corrupt, cb);
    expect(() => readArrowCache(corrupt)).toThrow(/corrupt\.arrow: truncated or corrupt/);

    const plain = path.join(dir, 'plain.arrow');
    fs.writeFileSync(plain, tableToIPC(tableFromArrays({ prompt: new Int32Array([0]), x: new Float32Array([1]) }), 'file'));
    expect(() => readArrowCache(plain)).toThrow(/plain\.arrow: .*no "hooklens" schema metadata/);

    const stream = path.join(dir, 'stream.arrows');
    fs.writeFileSync(stream, tableToIPC(tableFromArrays({ x: new Float32Array([1]) }), 'stream'));
    expect(() => readArrowCache(stream)).toThrow(/stream\.arrows: is an Arrow IPC stream/);

    expect(() => readArrowCache(path.join(dir, 'missing.arrow'))).toThrow(/cannot read activation cache .*missing\.arrow/);
  });
});

describe('abort', () => {
  it('leaves neither the final file nor the temp file, and does not touch an existing file', async () => {
    const file = path.join(dir, 'cache.arrow');
    fs.writeFileSync(file, 'previous contents');
    const r = rng(7);
    const w = ArrowCacheWriter.open(file, { model: 'm', columns: COLUMNS }, { maxBatchRows: 2 });
    const p = makePrompt(6, r);
    w.writePrompt(0, p.tokens, cols(p));
    expect(w.bytesWritten).toBeGreaterThan(0);
    expect(listDir().length).toBe(2);
    w.abort();
    w.abort(); // idempotent
    expect(listDir()).toEqual(['cache.arrow']);
    expect(fs.readFileSync(file, 'utf8')).toBe('previous contents');
    await expect(w.close()).rejects.toThrow(/aborted/);
  });

  it('abort before any prompt leaves nothing; abort after close is a no-op', async () => {
    const file = path.join(dir, 'cache.arrow');
    const w = ArrowCacheWriter.open(file, { model: 'm', columns: COLUMNS });
    w.abort();
    expect(listDir()).toEqual([]);
    const w2 = ArrowCacheWriter.open(file, { model: 'm', columns: COLUMNS });
    await w2.close();
    w2.abort();
    expect(listDir()).toEqual(['cache.arrow']);
    expect(readArrowCache(file).model).toBe('m');
  });
});
