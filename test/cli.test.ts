/**
 * End-to-end tests of the `hooklens` command line: each test spawns `node bin/hooklens.mjs ...`
 * and checks the documented contract (JSON shapes, Arrow cache layout, exit codes, one-line
 * errors, no partial output files). Spawns are asynchronous and throttled (test/helpers/cli-run.ts),
 * so the concurrent tests keep both cores busy without oversubscribing them.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { FixedSizeList, List, Type, tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArrowCache } from '../src/io/arrow-cache.js';
import { loadReference, maxScaledDiff, modelPath, storiesGguf, type Reference } from './helpers/fixtures.js';
import {
  cliEnv,
  cliSuite,
  copyModelDir,
  copyWritable,
  listTree,
  readSafetensorsParts,
  stderrLines,
  withI64Tensor,
  writeSafetensorsParts,
  writeSafetensorsRaw,
  layOutSafetensors,
  tensorsInDataOrder,
  type CliResult,
} from './helpers/cli-run.js';

/** Byte position of tensor `name`'s data-offset field in a GGUF header (after name, dims and type). */
function ggufOffsetFieldPosition(buf: Buffer, name: string): number {
  const key = Buffer.concat([Buffer.alloc(8), Buffer.from(name, 'utf8')]);
  key.writeBigUInt64LE(BigInt(name.length), 0);
  const at = buf.indexOf(key);
  if (at < 0) throw new Error(`tensor ${name} not in the GGUF header`);
  let pos = at + key.length;
  const nDims = buf.readUInt32LE(pos);
  pos += 4 + 8 * nDims + 4;
  return pos;
}

const TOL = 1e-4;
const SPAWN_TEST_TIMEOUT = 180_000; // includes waiting for a free spawn slot

const gpt2Ref: Reference = loadReference('tiny-gpt2');
const llamaRef: Reference = loadReference('tiny-llama');
const storiesRef: Reference = loadReference('stories260K');
const GPT2 = modelPath('tiny-gpt2');
const LLAMA = modelPath('tiny-llama');
const { caseDir, cli } = cliSuite('hooklens-cli-');

function describeResult(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''} after ${r.ms} ms\n--- stdout ---\n${r.stdout.slice(0, 2000)}\n--- stderr ---\n${r.stderr.slice(0, 4000)}`;
}

/** Exit 0 and exactly one JSON document on stdout. */
function expectJson<T>(r: CliResult): T {
  expect(r.code, describeResult(r)).toBe(0);
  const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
  expect(lines, describeResult(r)).toHaveLength(1);
  return JSON.parse(lines[0]) as T;
}

/** Non-zero exit, nothing on stdout, exactly one non-empty stderr line that contains every `part`. */
function expectOneLineFailure(r: CliResult, ...parts: (string | RegExp)[]): string {
  const info = describeResult(r);
  expect(r.signal, info).toBeNull();
  expect(r.code, info).not.toBeNull();
  expect(r.code, info).not.toBe(0);
  const lines = stderrLines(r.stderr);
  expect(lines, info).toHaveLength(1);
  const line = lines[0];
  expect(line.trim(), info).not.toBe('');
  // A reason for the user, not a crash report.
  expect(line, info).not.toMatch(/internal error|^\s+at |TypeError|RangeError|ReferenceError/);
  for (const p of parts) {
    if (typeof p === 'string') expect(line, info).toContain(p);
    else expect(line, info).toMatch(p);
  }
  expect(r.stdout.trim(), info).toBe('');
  return line;
}

/** Final-position logits from a reference (`logits` is flattened [pos, vocab]). */
function finalLogits(ref: Reference): number[] {
  const [T, V] = ref.logits_shape;
  return ref.logits.slice((T - 1) * V, T * V);
}

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

interface RunJson {
  tokens: number[];
  top: { token: number; text: string; logit: number; prob: number }[];
}

// The local-path `run` is shared by the run test and the hub test (which must reproduce it).
const GPT2_RUN_ARGS = ['--tokens', gpt2Ref.tokens.join(','), '--json'];
let localRun: Promise<CliResult> | null = null;
function localGpt2Run(): Promise<CliResult> {
  localRun ??= cli(['run', '--model', GPT2, ...GPT2_RUN_ARGS]);
  return localRun;
}

// ---------------------------------------------------------------------------------------------
// Bad input: non-zero exit, one stderr line naming the problem, no output file, no temp files.

interface BadCase {
  name: string;
  /** Build inputs inside `dir`; returns argv. `out` is the --out path (its directory starts empty). */
  setup(dir: string, out: string): string[];
  expect: (string | RegExp)[];
  /** Pre-existing content at --out that a failed run must leave untouched. */
  existingOut?: string;
}

const HOOK = 'blocks.0.hook_resid_post';
const cacheArgs = (model: string, out: string, ...rest: string[]) => ['cache', '--model', model, ...rest, '--out', out];

/** Copy tiny-gpt2 into dir/name (writable) and return the copy's path. */
function gpt2Copy(dir: string, name = 'tiny-gpt2-copy'): string {
  const m = path.join(dir, name);
  copyModelDir(GPT2, m);
  return m;
}

const BAD_CASES: BadCase[] = [
  {
    name: 'missing model path',
    setup: (dir) => ['run', '--model', path.join(dir, 'no-such-model'), '--tokens', '1,2', '--json'],
    expect: ['no-such-model', /not found|no such/i],
  },
  {
    name: 'directory without config.json (cache)',
    setup: (dir, out) => {
      const m = path.join(dir, 'empty-model');
      fs.mkdirSync(m);
      return cacheArgs(m, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['empty-model', 'config.json'],
  },
  {
    name: 'safetensors truncated to half (cache)',
    setup: (dir, out) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2));
      return cacheArgs(m, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['model.safetensors'],
  },
  {
    name: 'safetensors header length beyond the file size',
    setup: (dir) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      const buf = fs.readFileSync(f);
      buf.writeBigUInt64LE(BigInt(buf.length * 2), 0);
      fs.writeFileSync(f, buf);
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['model.safetensors', /header length/i],
  },
  {
    name: 'safetensors header that is not JSON',
    setup: (dir) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      const { data } = readSafetensorsParts(f);
      writeSafetensorsRaw(f, '{"transformer.wte.weight": {"dtype": "F32", "shape": [211, 48], ', data);
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['model.safetensors', /JSON/],
  },
  {
    name: 'safetensors tensor offsets out of range',
    setup: (dir) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      const parts = readSafetensorsParts(f);
      const e = parts.header['transformer.wte.weight'] as { data_offsets: [number, number] };
      e.data_offsets = [e.data_offsets[0], parts.data.length + 4096];
      writeSafetensorsParts(f, parts);
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['model.safetensors', 'transformer.wte.weight'],
  },
  {
    name: 'safetensors I64 tensor for a weight (cache)',
    setup: (dir, out) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      writeSafetensorsParts(f, withI64Tensor(readSafetensorsParts(f), 'transformer.h.0.attn.c_attn.weight'));
      return cacheArgs(m, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['transformer.h.0.attn.c_attn.weight', 'I64'],
  },
  {
    // Two tensors alias the same bytes; every byte of the data section still belongs to a tensor.
    name: 'safetensors: two tensors share one byte range',
    setup: (dir) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      const tensors = tensorsInDataOrder(readSafetensorsParts(f));
      const a = tensors.findIndex((t, i) => tensors[i + 1] && t.bytes.length === tensors[i + 1].bytes.length);
      const alias = tensors[a + 1].name;
      const parts = layOutSafetensors(tensors.filter((t) => t.name !== alias));
      parts.header[alias] = { ...(parts.header[tensors[a].name] as object) };
      writeSafetensorsParts(f, parts);
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['model.safetensors', 'overlap', /"transformer\./],
  },
  {
    name: 'safetensors: a tensor starts inside the one before it (cache)',
    setup: (dir, out) => {
      const m = gpt2Copy(dir);
      const f = path.join(m, 'model.safetensors');
      const tensors = tensorsInDataOrder(readSafetensorsParts(f));
      const victim = tensors.findIndex((t) => t.name === 'transformer.h.1.attn.c_attn.weight');
      writeSafetensorsParts(f, layOutSafetensors(tensors, (i, cursor) => (i === victim ? cursor - 8 : cursor)));
      return cacheArgs(m, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['model.safetensors', 'overlap', 'transformer.h.1.attn.c_attn.weight'],
  },
  {
    name: 'GGUF: two tensors share one data range',
    setup: (dir) => {
      const f = path.join(dir, 'stories-alias.gguf');
      const buf = fs.readFileSync(storiesGguf());
      // ffn_up's data offset set to ffn_gate's (same shape): the loader would read one tensor twice.
      const offsetField = (name: string) => ggufOffsetFieldPosition(buf, name);
      const gate = offsetField('blk.0.ffn_gate.weight');
      const up = offsetField('blk.0.ffn_up.weight');
      buf.writeBigUInt64LE(buf.readBigUInt64LE(gate), up);
      fs.writeFileSync(f, buf);
      return ['run', '--model', f, '--tokens', '1,2', '--json'];
    },
    expect: ['stories-alias.gguf', 'overlap', 'blk.0.ffn_gate.weight', 'blk.0.ffn_up.weight'],
  },
  {
    name: 'config.json: an integer field given as a string',
    setup: (dir) => {
      const m = gpt2Copy(dir, 'string-layers');
      const cfg = JSON.parse(fs.readFileSync(path.join(m, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(m, 'config.json'), JSON.stringify({ ...cfg, n_layer: '3' }));
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['config.json', '"n_layer"', 'must be an integer', '"3" (a string)'],
  },
  {
    name: 'config.json: a boolean field given as a string (Llama)',
    setup: (dir) => {
      const m = path.join(dir, 'llama-string-bool');
      copyModelDir(LLAMA, m);
      const cfg = JSON.parse(fs.readFileSync(path.join(m, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(m, 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: 'false' }));
      return ['run', '--model', m, '--tokens', '1,2', '--json'];
    },
    expect: ['config.json', '"tie_word_embeddings"', 'true or false'],
  },
  {
    name: 'truncated GGUF',
    setup: (dir) => {
      const f = path.join(dir, 'stories-truncated.gguf');
      const buf = fs.readFileSync(storiesGguf());
      fs.writeFileSync(f, buf.subarray(0, buf.length >> 1));
      return ['run', '--model', f, '--tokens', '1,2', '--json'];
    },
    expect: ['stories-truncated.gguf'],
  },
  {
    name: 'GGUF with bad magic (cache)',
    setup: (dir, out) => {
      const f = path.join(dir, 'stories-badmagic.gguf');
      copyWritable(storiesGguf(), f);
      const fd = fs.openSync(f, 'r+');
      fs.writeSync(fd, Buffer.from('GGUX'), 0, 4, 0);
      fs.closeSync(fd);
      return cacheArgs(f, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['stories-badmagic.gguf', /magic/i],
  },
  {
    name: "unknown architecture model_type 'bert' (cache)",
    setup: (dir, out) => {
      const m = gpt2Copy(dir, 'bert-model');
      const cfg = JSON.parse(fs.readFileSync(path.join(m, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(m, 'config.json'), JSON.stringify({ ...cfg, model_type: 'bert', architectures: ['BertModel'] }));
      return cacheArgs(m, out, '--tokens', '1,2', '--hooks', HOOK);
    },
    expect: ['bert', 'config.json'],
  },
  {
    name: 'unknown hook name (cache)',
    setup: (_dir, out) => cacheArgs(GPT2, out, '--tokens', '1,2', '--hooks', `${HOOK},blocks.0.hook_nope`),
    expect: ['unknown hook', 'blocks.0.hook_nope'],
  },
  {
    name: 'hook layer out of range (cache)',
    setup: (_dir, out) => cacheArgs(GPT2, out, '--tokens', '1,2', '--hooks', 'blocks.9.hook_resid_post'),
    expect: ['blocks.9.hook_resid_post', /3 layers/],
  },
  {
    name: 'token id outside the vocabulary (cache, existing --out untouched)',
    setup: (_dir, out) => cacheArgs(GPT2, out, '--tokens', '1,99999', '--hooks', HOOK, '--logits'),
    expect: ['outside the vocabulary', '99999'],
    existingOut: 'previous cache contents\n',
  },
  {
    name: 'prompt longer than the context (cache)',
    setup: (_dir, out) => cacheArgs(GPT2, out, '--tokens', Array.from({ length: 65 }, (_, i) => (i * 7) % 211).join(','), '--hooks', HOOK),
    expect: ['context length', '64', '65'],
  },
  {
    // generate must validate the prompt even when no new token fits in the context.
    name: 'generate: prompt longer than the context',
    setup: () => ['generate', '--model', GPT2, '--tokens', Array.from({ length: 65 }, (_, i) => (i * 7) % 211).join(','), '--max-new-tokens', '4', '--json'],
    expect: ['context length', '64', '65'],
  },
  {
    name: 'bad --tokens syntax',
    setup: () => ['run', '--model', GPT2, '--tokens', '1,x,3', '--json'],
    expect: ['--tokens', "'x'"],
  },
  {
    name: 'unknown option (cache)',
    setup: (_dir, out) => cacheArgs(GPT2, out, '--tokens', '1,2', '--hooks', HOOK, '--frobnicate'),
    expect: ['--frobnicate'],
  },
  {
    name: 'missing --out (cache)',
    setup: () => ['cache', '--model', GPT2, '--tokens', '1,2', '--hooks', HOOK],
    expect: ['--out'],
  },
];

// One top-level concurrent suite: every test can start at once and the spawn limiter in
// helpers/cli-run.ts decides how many processes really run; heavy tests come first so that the
// cheap ones fill the gaps at the end.
describe.concurrent('hooklens CLI', () => {
  describe('hooklens cache', () => {
    it('writes an Arrow file matching the reference activations, patterns and logits', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const dir = caseDir('cache-ok');
      const refTokens = llamaRef.tokens; // 8 tokens
      const prefix = refTokens.slice(0, 5); // a causal prefix: its activations equal the reference's first 5 positions
      const promptsFile = path.join(dir, 'prompts.jsonl');
      fs.writeFileSync(promptsFile, `${JSON.stringify({ tokens: prefix })}\n${JSON.stringify({ tokens: refTokens })}\n`);
      const out = path.join(dir, 'acts.arrow');
      const hooks = 'blocks.*.hook_resid_post,blocks.0.attn.hook_pattern';
      const r = await cli(['cache', '--model', LLAMA, '--prompts', promptsFile, '--hooks', hooks, '--logits', '--out', out], { cwd: dir });
      expect(r.code, describeResult(r)).toBe(0);
      expect(listTree(dir), 'no temp files left next to the output').toEqual(['acts.arrow', 'prompts.jsonl']);

      const lens = [prefix.length, refTokens.length];
      const rows = lens[0] + lens[1];
      const expectedHooks = {
        'blocks.0.attn.hook_pattern': { shape: [4, -1] },
        'blocks.0.hook_resid_post': { shape: [64] },
        'blocks.1.hook_resid_post': { shape: [64] },
        'blocks.2.hook_resid_post': { shape: [64] },
        logits: { shape: [211] },
      };
      const expPrompt = [...Array(lens[0]).fill(0), ...Array(lens[1]).fill(1)];
      const expPos = [...prefix.map((_, i) => i), ...refTokens.map((_, i) => i)];
      const expToken = [...prefix, ...refTokens];

      // --- through the project's reader
      const cache = readArrowCache(out);
      expect(typeof cache.model).toBe('string');
      expect(cache.model).toContain('tiny-llama');
      expect(cache.hooks).toEqual(expectedHooks);
      expect(Array.from(cache.prompt)).toEqual(expPrompt);
      expect(Array.from(cache.pos)).toEqual(expPos);
      expect(Array.from(cache.token)).toEqual(expToken);

      const D = 64;
      const V = 211;
      const H = 4;
      const T = refTokens.length;
      for (const hook of ['blocks.0.hook_resid_post', 'blocks.2.hook_resid_post']) {
        const ref = llamaRef.activations[hook];
        expect(ref.shape).toEqual([T, D]);
        const col = cache.columns[hook];
        expect(col.rows).toBe(rows);
        // reference prompt: rows lens[0]..rows-1; prefix prompt: rows 0..lens[0]-1 = reference positions 0..4
        expect(maxScaledDiff(col.data!.subarray(lens[0] * D, rows * D), ref.values), `${hook} (reference prompt)`).toBeLessThanOrEqual(TOL);
        expect(maxScaledDiff(col.data!.subarray(0, lens[0] * D), ref.values.slice(0, lens[0] * D)), `${hook} (prefix prompt)`).toBeLessThanOrEqual(TOL);
      }
      const logits = cache.columns.logits;
      expect(maxScaledDiff(logits.data!.subarray(lens[0] * V, rows * V), llamaRef.logits), 'logits (reference prompt)').toBeLessThanOrEqual(TOL);
      expect(maxScaledDiff(logits.data!.subarray(0, lens[0] * V), llamaRef.logits.slice(0, lens[0] * V)), 'logits (prefix prompt)').toBeLessThanOrEqual(TOL);

      const refPat = llamaRef.activations['blocks.0.attn.hook_pattern'];
      expect(refPat.shape).toEqual([H, T, T]);
      /** Reference pattern [head, q, k<len] for query q, as the cache stores it. */
      const refPatternRow = (q: number, len: number): number[] => {
        const row: number[] = [];
        for (let h = 0; h < H; h++) for (let k = 0; k < len; k++) row.push(refPat.values[(h * T + q) * T + k]);
        return row;
      };
      const pat = cache.columns['blocks.0.attn.hook_pattern'];
      expect(pat.lists).toHaveLength(rows);
      for (let p = 0, r0 = 0; p < 2; r0 += lens[p], p++) {
        for (let q = 0; q < lens[p]; q++) {
          const row = pat.lists![r0 + q];
          expect(row.length).toBe(H * lens[p]);
          expect(maxScaledDiff(row, refPatternRow(q, lens[p])), `pattern prompt ${p} q ${q}`).toBeLessThanOrEqual(TOL);
        }
      }

      // --- through plain apache-arrow (what other tools see)
      const table = tableFromIPC(fs.readFileSync(out));
      expect(table.numRows).toBe(rows);
      const names = table.schema.fields.map((f) => f.name);
      expect(names.slice(0, 3)).toEqual(['prompt', 'pos', 'token']);
      expect(new Set(names.slice(3))).toEqual(new Set(Object.keys(expectedHooks)));
      for (const n of ['prompt', 'pos', 'token']) {
        const t = table.schema.fields.find((f) => f.name === n)!.type;
        expect(t.typeId, n).toBe(Type.Int);
        expect((t as unknown as { bitWidth: number; isSigned: boolean }).bitWidth).toBe(32);
        expect((t as unknown as { isSigned: boolean }).isSigned).toBe(true);
      }
      const typeOf = (n: string) => table.schema.fields.find((f) => f.name === n)!.type;
      for (const [n, size] of [['blocks.0.hook_resid_post', D], ['blocks.1.hook_resid_post', D], ['blocks.2.hook_resid_post', D], ['logits', V]] as const) {
        const t = typeOf(n);
        expect(t.typeId, n).toBe(Type.FixedSizeList);
        expect((t as FixedSizeList).listSize, n).toBe(size);
        expect((t as FixedSizeList).valueType.typeId, n).toBe(Type.Float);
      }
      const patType = typeOf('blocks.0.attn.hook_pattern');
      expect(patType.typeId).toBe(Type.List);
      expect((patType as List).valueType.typeId).toBe(Type.Float);

      const meta = JSON.parse(table.schema.metadata.get('hooklens') ?? 'null');
      expect(meta).toMatchObject({ model: cache.model, hooks: expectedHooks });

      expect(Array.from(table.getChild('prompt')!.toArray() as Int32Array)).toEqual(expPrompt);
      expect(Array.from(table.getChild('pos')!.toArray() as Int32Array)).toEqual(expPos);
      expect(Array.from(table.getChild('token')!.toArray() as Int32Array)).toEqual(expToken);
      const resid0 = table.getChild('blocks.0.hook_resid_post')!;
      const refResid0 = llamaRef.activations['blocks.0.hook_resid_post'].values;
      for (let q = 0; q < T; q++) {
        const v = Array.from(resid0.get(lens[0] + q)!.toArray() as Float32Array);
        expect(maxScaledDiff(v, refResid0.slice(q * D, (q + 1) * D)), `arrow-js resid row q=${q}`).toBeLessThanOrEqual(TOL);
      }
      const logitsCol = table.getChild('logits')!;
      const lastRow = Array.from(logitsCol.get(rows - 1)!.toArray() as Float32Array);
      expect(maxScaledDiff(lastRow, finalLogits(llamaRef))).toBeLessThanOrEqual(TOL);
      const patCol = table.getChild('blocks.0.attn.hook_pattern')!;
      for (const [r, p, q] of [[0, 0, 0], [lens[0] - 1, 0, lens[0] - 1], [lens[0] + 3, 1, 3], [rows - 1, 1, T - 1]]) {
        const v = Array.from(patCol.get(r)!.toArray() as Float32Array);
        expect(v.length).toBe(H * lens[p]);
        expect(maxScaledDiff(v, refPatternRow(q, lens[p])), `arrow-js pattern row ${r}`).toBeLessThanOrEqual(TOL);
      }
    });
  });

  describe.concurrent('hooklens run / tokenize / generate (JSON output)', () => {
    it('run --json on tiny-gpt2 reproduces the reference final-position logits', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const out = expectJson<RunJson>(await localGpt2Run());
      expect(out.tokens).toEqual(gpt2Ref.tokens);
      const ref = finalLogits(gpt2Ref);
      const probs = softmax(ref);
      expect(out.top).toHaveLength(10); // default --top-k
      expect(Math.abs(out.top[0].logit - Math.max(...ref))).toBeLessThanOrEqual(TOL);
      expect(out.top[0].token).toBe(ref.indexOf(Math.max(...ref)));
      let sum = 0;
      for (const [i, t] of out.top.entries()) {
        expect(Object.keys(t).sort()).toEqual(['logit', 'prob', 'text', 'token']);
        expect(Number.isInteger(t.token) && t.token >= 0 && t.token < ref.length).toBe(true);
        expect(typeof t.text).toBe('string');
        expect(Math.abs(t.logit - ref[t.token])).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(ref[t.token])));
        expect(Math.abs(t.prob - probs[t.token])).toBeLessThanOrEqual(TOL);
        expect(t.prob).toBeGreaterThan(0);
        if (i > 0) expect(t.logit).toBeLessThanOrEqual(out.top[i - 1].logit);
        sum += t.prob;
      }
      expect(new Set(out.top.map((t) => t.token)).size).toBe(out.top.length);
      expect(sum).toBeLessThanOrEqual(1 + 1e-6);
    });

    it('run --top-k 3 gives the 3 highest logits, sorted', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const out = expectJson<RunJson>(await cli(['run', '--model', GPT2, '--tokens', gpt2Ref.tokens.join(','), '--top-k', '3', '--json']));
      expect(out.tokens).toEqual(gpt2Ref.tokens);
      expect(out.top).toHaveLength(3);
      const ref = finalLogits(gpt2Ref);
      const best3 = ref
        .map((x, i) => [x, i] as const)
        .sort((a, b) => b[0] - a[0])
        .slice(0, 3)
        .map(([, i]) => i);
      expect(out.top.map((t) => t.token)).toEqual(best3);
      for (let i = 1; i < 3; i++) expect(out.top[i].logit).toBeLessThanOrEqual(out.top[i - 1].logit);
    });

    // One spawn per text would be too slow; two texts with different features (long, punctuation/quotes).
    for (const text of ['Lily and Tim went to the park. Lily gave the ball to', '"I love you," said Mom.']) {
      it(`tokenize --json on stories260K: ${JSON.stringify(text)}`, { timeout: SPAWN_TEST_TIMEOUT }, async () => {
        const expected = storiesRef.encodings?.[text];
        expect(expected, `reference encodings has ${JSON.stringify(text)}`).toBeDefined();
        const out = expectJson<{ tokens: number[] }>(await cli(['tokenize', '--model', storiesGguf(), '--text', text, '--json']));
        expect(out).toEqual({ tokens: expected });
      });
    }

    it('generate --json on stories260K reproduces the reference greedy continuation', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const greedy = storiesRef.greedy!;
      expect(greedy.prompt).toBe('Once upon a time');
      const out = expectJson<{ prompt_tokens: number[]; tokens: number[]; text: string }>(
        await cli(['generate', '--model', storiesGguf(), '--text', 'Once upon a time', '--max-new-tokens', '48', '--json']),
      );
      expect(Object.keys(out).sort()).toEqual(['prompt_tokens', 'text', 'tokens']);
      expect(out.prompt_tokens).toEqual(greedy.prompt_tokens);
      expect(out.prompt_tokens).toEqual(storiesRef.encodings!['Once upon a time']);
      expect(out.tokens).toHaveLength(greedy.prompt_tokens.length + 48);
      expect(out.tokens).toEqual(greedy.tokens);
      expect(out.text).toBe(greedy.text);
    });
  });

  describe('hub ids', () => {
    let server: http.Server | null = null;
    let endpoint = '';
    const requests: string[] = [];
    let served: string;
    const COMMIT = 'c0ffee0123456789abcdef0123456789abcdef01';

    beforeAll(async () => {
      served = caseDir('hub-served');
      copyModelDir(GPT2, path.join(served, 'acme', 'tiny-gpt2'));
      server = http.createServer((req, res) => {
        const url = decodeURIComponent(req.url ?? '');
        requests.push(url);
        const m = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(url);
        const local = m ? path.join(served, m[1], m[2]) : '';
        if (!m || !local.startsWith(served + path.sep) || !fs.existsSync(local) || !fs.statSync(local).isFile()) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
          return;
        }
        const body = fs.readFileSync(local);
        res.writeHead(200, { 'content-length': body.length, 'x-repo-commit': COMMIT }).end(body);
      });
      await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
      endpoint = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      const s = server;
      server = null;
      if (!s) return;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    });

    it('run --model acme/tiny-gpt2 downloads through HF_ENDPOINT into HF_HUB_CACHE and matches the local run', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const hubCache = caseDir('hub-cache');
      // Async spawn: the server lives in this process and must keep answering while the CLI runs.
      const [hub, local] = await Promise.all([
        cli(['run', '--model', 'acme/tiny-gpt2', ...GPT2_RUN_ARGS], { env: cliEnv(hubCache, { HF_ENDPOINT: endpoint }), cwd: hubCache }),
        localGpt2Run(),
      ]);
      const hubOut = expectJson<RunJson>(hub);
      expect(hubOut).toEqual(expectJson<RunJson>(local));
      expect(requests).toContain('/acme/tiny-gpt2/resolve/main/config.json');
      expect(requests).toContain('/acme/tiny-gpt2/resolve/main/model.safetensors');
      const files = listTree(hubCache);
      expect(files).toContain(path.join('models--acme--tiny-gpt2', 'snapshots', COMMIT, 'config.json'));
      expect(files).toContain(path.join('models--acme--tiny-gpt2', 'snapshots', COMMIT, 'model.safetensors'));
      expect(fs.readFileSync(path.join(hubCache, 'models--acme--tiny-gpt2', 'refs', 'main'), 'utf8').trim()).toBe(COMMIT);
      expect(files.filter((f) => path.basename(f).startsWith('.')), 'no temp files in the hub cache').toEqual([]);
    });
  });

  describe.concurrent('bad input: one-line error, non-zero exit, no output', () => {
    for (const c of BAD_CASES) {
      it(c.name, { timeout: SPAWN_TEST_TIMEOUT }, async () => {
        const dir = caseDir('bad');
        const outDir = path.join(dir, 'out');
        fs.mkdirSync(outDir);
        const out = path.join(outDir, 'acts.arrow');
        const args = c.setup(dir, out);
        if (c.existingOut !== undefined) fs.writeFileSync(out, c.existingOut);
        // cwd = outDir: anything written relative to the working directory would show up there too.
        const r = await cli(args, { cwd: outDir });
        expectOneLineFailure(r, ...c.expect);
        if (c.existingOut !== undefined) {
          expect(listTree(outDir), 'only the pre-existing --out file, no temp files').toEqual(['acts.arrow']);
          expect(fs.readFileSync(out, 'utf8')).toBe(c.existingOut);
        } else {
          expect(listTree(outDir), 'no output or temp file').toEqual([]);
        }
      });
    }
  });

  describe.concurrent('--help and unknown commands', () => {
    for (const cmd of ['run', 'tokenize', 'generate', 'cache', 'hooks']) {
      it(`${cmd} --help`, { timeout: SPAWN_TEST_TIMEOUT }, async () => {
        const r = await cli([cmd, '--help']);
        expect(r.code, describeResult(r)).toBe(0);
        expect(r.stdout).toContain(`hooklens ${cmd}`);
        expect(r.stdout).toContain('--model');
        expect(stderrLines(r.stderr)).toEqual([]);
      });
    }

    it('unknown command exits non-zero with one line naming it', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
      const r = await cli(['frobnicate', '--model', GPT2]);
      expectOneLineFailure(r, 'frobnicate');
    });
  });
});
