import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { ArrowCacheWriter, readArrowCache } from '../src/io/arrow-cache.js';
import { writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import { loadModel } from '../src/models/load.js';
import {
  ActivationStream,
  estimateStreamNormScaling,
  normScalingFactor,
  streamActivations,
  type ActivationBatch,
  type ActivationStreamOptions,
} from '../src/sae/activation-stream.js';
import { mulberry32 } from '../src/util/random.js';
import { storiesGguf } from './helpers/fixtures.js';

const HOOK = 'blocks.0.hook_resid_post';
const D = 6;

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-actstream-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

interface Row {
  file: number;
  prompt: number;
  pos: number;
  token: number;
  act: Float32Array;
}

/**
 * A cache with a fixed hook column (D floats; element 0 encodes file/prompt/pos so rows are
 * recognisable), a varying attention column, and small record batches (maxBatchRows).
 */
async function makeCache(name: string, opts: { prompts: number; seed: number; file?: number; maxBatchRows?: number; d?: number }): Promise<{ file: string; rows: Row[] }> {
  const file = path.join(dir, name);
  const d = opts.d ?? D;
  const r = mulberry32(opts.seed);
  const w = ArrowCacheWriter.open(
    file,
    {
      model: 'synthetic',
      columns: [
        { name: HOOK, perPositionShape: [d] },
        { name: 'blocks.0.attn.hook_pattern', perPositionShape: [2, -1] },
      ],
    },
    { maxBatchRows: opts.maxBatchRows ?? 7 },
  );
  const rows: Row[] = [];
  for (let p = 0; p < opts.prompts; p++) {
    const T = 3 + (p % 5);
    const tokens = Array.from({ length: T }, (_, t) => (t === 0 ? 1 : 2 + Math.floor(r() * 500)));
    const acts = new Float32Array(T * d);
    for (let t = 0; t < T; t++) {
      acts[t * d] = (opts.file ?? 0) * 1e6 + p * 100 + t;
      for (let i = 1; i < d; i++) acts[t * d + i] = r() * 2 - 1;
      rows.push({ file: opts.file ?? 0, prompt: p, pos: t, token: tokens[t], act: acts.slice(t * d, (t + 1) * d) });
    }
    const pattern = Array.from({ length: T }, () => new Float32Array(2 * T).fill(0.5));
    w.writePrompt(p, tokens, { [HOOK]: acts, 'blocks.0.attn.hook_pattern': pattern });
  }
  await w.close();
  return { file, rows };
}

function collect(batches: Iterable<ActivationBatch>): { keys: string[]; rows: Row[]; batches: ActivationBatch[] } {
  const rows: Row[] = [];
  const all: ActivationBatch[] = [];
  for (const b of batches) {
    all.push(b);
    for (let k = 0; k < b.rows; k++) {
      rows.push({ file: b.fileIndex[k], prompt: b.prompts[k], pos: b.positions[k], token: b.tokens[k], act: b.acts.slice(k * b.dIn, (k + 1) * b.dIn) });
    }
  }
  return { keys: rows.map(key), rows, batches: all };
}

const key = (r: Pick<Row, 'file' | 'prompt' | 'pos'>): string => `${r.file}:${r.prompt}:${r.pos}`;

function expectRowsMatch(got: Row[], want: Row[]): void {
  const byKey = new Map(want.map((r) => [key(r), r]));
  for (const g of got) {
    const w = byKey.get(key(g))!;
    expect(w, key(g)).toBeDefined();
    expect(g.token).toBe(w.token);
    expect(Array.from(g.act)).toEqual(Array.from(w.act));
  }
}

function stream(opts: Partial<ActivationStreamOptions> & { files: string | string[] }): ActivationStream {
  return ActivationStream.open({ hook: HOOK, batchSize: 16, ...opts });
}

function oneLineError(fn: () => unknown): string {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HooklensError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  return msg;
}

describe('ActivationStream', () => {
  let A: { file: string; rows: Row[] };
  let B: { file: string; rows: Row[] };
  beforeAll(async () => {
    A = await makeCache('a.arrow', { prompts: 40, seed: 1 }); // 200 rows in 29 record batches
    B = await makeCache('b.arrow', { prompts: 13, seed: 2, file: 1, maxBatchRows: 5 });
  });

  it('reads footer and batch headers on open, and yields every row exactly once per epoch', () => {
    const s = stream({ files: A.file, bufferRows: 32, seed: 7 });
    expect(s.dIn).toBe(D);
    expect(s.totalRows).toBe(A.rows.length);
    expect(s.models).toEqual(['synthetic']);
    const { keys, rows, batches } = collect(s);
    expect(keys.length).toBe(A.rows.length);
    expect([...keys].sort()).toEqual(A.rows.map(key).sort());
    expectRowsMatch(rows, A.rows);
    // Full batches except the last, which holds the remainder.
    expect(batches.slice(0, -1).every((b) => b.rows === 16 && b.acts.length === 16 * D)).toBe(true);
    expect(batches.at(-1)!.rows).toBe(A.rows.length % 16);
    expect(batches.at(-1)!.tokensSeen).toBe(A.rows.length);
    expect(s.stats).toMatchObject({ tokensSeen: A.rows.length, epochsCompleted: 1, rowsPerEpoch: A.rows.length, rowsSkipped: 0 });
    s.close();
  });

  it('shuffles (not file order), deterministically per seed', () => {
    const order = (seed: number, bufferRows = 64) => collect(stream({ files: A.file, seed, bufferRows })).keys;
    const fileOrder = A.rows.map(key);
    const a1 = order(3);
    const a2 = order(3);
    const b = order(4);
    expect(a1).toEqual(a2);
    expect(a1).not.toEqual(fileOrder);
    expect(b).not.toEqual(a1);
    // Rows move far: many rows leave their file neighbourhood.
    const at = new Map(fileOrder.map((k, i) => [k, i]));
    const moved = a1.filter((k, i) => Math.abs(at.get(k)! - i) > 20).length;
    expect(moved).toBeGreaterThan(a1.length / 2);
    // Same seed → identical batch contents, not just keys.
    const x = [...stream({ files: A.file, seed: 3, bufferRows: 64 })];
    const y = [...stream({ files: A.file, seed: 3, bufferRows: 64 })];
    expect(x.map((b) => Array.from(b.acts))).toEqual(y.map((b) => Array.from(b.acts)));
    // A second pass over the same stream object starts from the seed again.
    const s = stream({ files: A.file, seed: 3, bufferRows: 64 });
    expect(collect(s).keys).toEqual(collect(s).keys);
    s.close();
  });

  it('without shuffle yields file order', () => {
    const { keys } = collect(stream({ files: A.file, shuffle: false }));
    expect(keys).toEqual(A.rows.map(key));
  });

  it('runs several epochs (each a permutation) and streams indefinitely', () => {
    const N = A.rows.length;
    const s = stream({ files: A.file, epochs: 3, bufferRows: 50, seed: 11 });
    const { keys, batches } = collect(s);
    expect(keys.length).toBe(3 * N);
    const sorted = A.rows.map(key).sort();
    for (let e = 0; e < 3; e++) expect(keys.slice(e * N, (e + 1) * N).sort()).toEqual(sorted);
    expect(keys.slice(0, N)).not.toEqual(keys.slice(N, 2 * N)); // epochs are shuffled differently
    expect(batches.map((b) => b.epoch)).toEqual(batches.map((b, i) => Math.floor((i * 16) / N)));
    expect(s.stats.epochsCompleted).toBe(3);
    expect(batches.at(-1)!.rows).toBe((3 * N) % 16);
    const dropped = collect(stream({ files: A.file, epochs: 3, bufferRows: 50, seed: 11, dropLast: true }));
    expect(dropped.batches.every((b) => b.rows === 16)).toBe(true);
    expect(dropped.keys).toEqual(keys.slice(0, dropped.keys.length));

    const forever = stream({ files: A.file, epochs: Infinity, bufferRows: 50, seed: 11 });
    let seen = 0;
    for (const b of forever) {
      seen = b.tokensSeen;
      if (b.tokensSeen >= 5 * N) break;
    }
    expect(seen).toBeGreaterThanOrEqual(5 * N);
    expect(forever.stats.epochsCompleted).toBeGreaterThanOrEqual(4);
    forever.close();
  });

  it('skips position 0 and chosen tokens', () => {
    const s = stream({ files: A.file, excludePos0: true });
    const { keys } = collect(s);
    const want = A.rows.filter((r) => r.pos !== 0);
    expect(keys.sort()).toEqual(want.map(key).sort());
    expect(s.stats.rowsSkipped).toBe(40);
    const tok = A.rows[7].token;
    const t = collect(stream({ files: A.file, excludeTokens: [1, tok] }));
    expect(t.rows.every((r) => r.token !== 1 && r.token !== tok)).toBe(true);
    expect(t.keys.length).toBe(A.rows.filter((r) => r.token !== 1 && r.token !== tok).length);
    expect(() => collect(stream({ files: A.file, excludeTokens: [...new Set(A.rows.map((r) => r.token))] }))).toThrow(/no rows/);
  });

  it('holds at most the buffer plus one record batch and never reads a whole file', () => {
    const readFile = vi.spyOn(fs, 'readFileSync');
    const size = fs.statSync(A.file).size;
    const s = stream({ files: A.file, bufferRows: 10, epochs: 2, seed: 5 });
    let peakDuring = 0;
    for (const _ of s) peakDuring = Math.max(peakDuring, s.stats.heldRows);
    const st = s.stats;
    expect(readFile).not.toHaveBeenCalled();
    expect(st.bufferCapacity).toBe(10);
    expect(st.maxRecordBatchRows).toBe(7);
    expect(st.peakHeldRows).toBeLessThanOrEqual(10 + 7);
    expect(peakDuring).toBeLessThanOrEqual(st.peakHeldRows);
    expect(st.recordBatchesRead).toBe(2 * Math.ceil(A.rows.length / 7));
    // Each epoch reads each block once: less than the file (no footer, no schema) per epoch.
    expect(st.bytesRead).toBeLessThan(2 * size);
    expect(st.bytesRead).toBeGreaterThan(2 * A.rows.length * D * 4);
    expect(st.maxReadBytes).toBeLessThan(size / 10);
    s.close();
  });

  it('reads several files as one dataset', () => {
    const s = stream({ files: [A.file, B.file], seed: 2, bufferRows: 40 });
    const { keys, rows } = collect(s);
    const want = [...A.rows, ...B.rows];
    expect(keys.sort()).toEqual(want.map(key).sort());
    expectRowsMatch(rows, want);
    expect(s.totalRows).toBe(want.length);
    // Files are interleaved, not read one after the other.
    const firstB = rows.findIndex((r) => r.file === 1);
    expect(firstB).toBeLessThan(A.rows.length);
    s.close();
  });

  it('gives one-line errors for a missing file, a bad column, a varying column, truncation and garbage', async () => {
    let msg = oneLineError(() => stream({ files: [A.file, path.join(dir, 'nope.arrow')] }));
    expect(msg).toContain('nope.arrow');
    expect(msg).toContain('ENOENT');

    msg = oneLineError(() => stream({ files: A.file, hook: 'blocks.9.hook_resid_post' }));
    expect(msg).toContain(A.file);
    expect(msg).toContain('"blocks.9.hook_resid_post"');
    expect(msg).toContain(`available hooks: ${HOOK}, blocks.0.attn.hook_pattern`);

    msg = oneLineError(() => stream({ files: A.file, hook: 'blocks.0.attn.hook_pattern' }));
    expect(msg).toMatch(/not a fixed-size list/);

    const bytes = fs.readFileSync(A.file);
    const cut = path.join(dir, 'cut.arrow');
    fs.writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    msg = oneLineError(() => stream({ files: cut }));
    expect(msg).toContain('cut.arrow');
    expect(msg).toMatch(/truncated/);

    // Footer intact but a record batch's body damaged: fails when that batch is read.
    const damaged = path.join(dir, 'damaged.arrow');
    const s0 = stream({ files: A.file });
    const off = (s0 as unknown as { opened: { blocks: { offset: number }[] }[] }).opened[0].blocks[3].offset;
    s0.close();
    for (const [a, b] of [[0, 8], [8, 16], [200, 232], [290, 330]]) {
      const dmg = Buffer.from(bytes);
      dmg.fill(0x7f, off + a, off + b);
      fs.writeFileSync(damaged, dmg);
      msg = oneLineError(() => collect(stream({ files: damaged, shuffle: false })));
      expect(msg).toContain('damaged.arrow');
    }

    const junk = path.join(dir, 'junk.arrow');
    fs.writeFileSync(junk, 'not arrow at all, just text');
    expect(oneLineError(() => stream({ files: junk }))).toMatch(/not an Arrow IPC file/);

    const wide = await makeCache('wide.arrow', { prompts: 2, seed: 3, d: D + 1 });
    msg = oneLineError(() => stream({ files: [A.file, wide.file] }));
    expect(msg).toMatch(/7 floats per row .* has 6/);

    expect(oneLineError(() => stream({ files: A.file, batchSize: 0 }))).toMatch(/batchSize/);
    expect(oneLineError(() => stream({ files: A.file, epochs: 1.5 }))).toMatch(/epochs/);
    expect(oneLineError(() => stream({ files: [] }))).toMatch(/no activation cache files/);
  });

  it('closes its files: streamActivations and close()', () => {
    const s = stream({ files: A.file });
    s.close();
    expect(() => [...s]).toThrow(/closed/);
    let n = 0;
    for (const b of streamActivations({ files: A.file, hook: HOOK, batchSize: 50 })) n += b.rows;
    expect(n).toBe(A.rows.length);
  });

  it('computes the SAELens norm scaling factor', () => {
    expect(normScalingFactor(Float32Array.of(3, 4, 0, 0, 6, 8), 2).meanNorm).toBeCloseTo(5, 12);
    const direct = normScalingFactor(readArrowCache(A.file).columns[HOOK].data!, D);
    const est = estimateStreamNormScaling({ files: A.file, hook: HOOK, seed: 1 });
    expect(est.rows).toBe(A.rows.length);
    expect(est.factor).toBeCloseTo(direct.factor, 10);
    expect(est.factor).toBeCloseTo(Math.sqrt(D) / direct.meanNorm, 10);
    const sample = estimateStreamNormScaling({ files: A.file, hook: HOOK, sampleRows: 50, batchSize: 16 });
    expect(sample.rows).toBe(50);
    expect(() => normScalingFactor(new Float32Array(4), 2)).toThrow(/mean activation norm is 0/);
  });
});

describe('ActivationStream on a writeActivationCache file (stories260K)', () => {
  it('streams exactly the cached rows', async () => {
    const model = await loadModel(storiesGguf());
    const file = path.join(dir, 'stories.arrow');
    const prompts = ['Once upon a time', 'Lily had a red ball.', 'One day'].map((t) => model.encode(t));
    const hook = 'blocks.1.hook_resid_post';
    const { rows } = await writeActivationCache(model, prompts, file, { hooks: [hook] });
    model.dispose();
    const cache = readArrowCache(file);
    const d = cache.columns[hook].data!;
    const want: Row[] = Array.from({ length: rows }, (_, i) => ({ file: 0, prompt: cache.prompt[i], pos: cache.pos[i], token: cache.token[i], act: d.slice(i * 64, (i + 1) * 64) }));
    const s = ActivationStream.open({ files: file, hook, batchSize: 8, bufferRows: 8, seed: 1 });
    expect(s.dIn).toBe(64);
    const got = collect(s);
    s.close();
    expect(got.keys.sort()).toEqual(want.map(key).sort());
    expectRowsMatch(got.rows, want);
  });
});
