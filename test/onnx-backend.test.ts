/**
 * The onnxruntime path: the exported graph reproduces the independent reference (logits and every
 * reference activation ≤1e-4) and the tfjs forward (every hook, padded batches, final position
 * only, early stop); `run` and `cache` give the same numbers on both backends; bad choices fail in
 * one line.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { padBatch } from '../src/hooks/token-batch.js';
import { readArrowCache } from '../src/io/arrow-cache.js';
import { loadModel } from '../src/models/load.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';
import { editHook, type DirectionEdit } from '../src/probing/steer.js';
import Database from 'better-sqlite3';
import { REPO_ROOT, cliSuite, stderrLines, type CliResult } from './helpers/cli-run.js';
import { expectOnnxMatchesReference, loadReference, maxScaledDiff, modelPath, patchingReference, realPositions } from './helpers/fixtures.js';
import { PatchingSession } from '../src/patching/session.js';
import * as tf from '@tensorflow/tfjs';

const MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'stories260K'] as const;
const TIMEOUT = 120_000;
const { caseDir, cli } = cliSuite('hooklens-onnx-');

beforeAll(async () => {
  await initBackend();
});

describe.each(MODELS)('%s on onnxruntime', (name) => {
  const ref = loadReference(name);
  let model: HookedModel;
  let onnx: OnnxForward;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    onnx = new OnnxForward(model);
  });
  afterAll(async () => {
    await onnx?.dispose();
    model?.dispose();
  });

  it('logits and every reference activation match the independent reference (≤1e-4)', async () => {
    const r = await onnx.run(padBatch([ref.tokens], 'right', 0), { hooks: Object.keys(ref.activations) });
    expectOnnxMatchesReference(r, ref);
  });

  it('zero and mean ablation (a constant source for the replacement input), at all or chosen positions, equal tfjs hooks (≤1e-4)', async () => {
    const tokens = padBatch([ref.tokens.slice(0, 8), ref.tokens.slice(2, 10)], 'right', 0);
    const hook = 'blocks.1.hook_mlp_out';
    const d = model.cfg.dModel;
    const { logits: l0, cache } = model.runWithCache(tokens, { names: [hook] });
    const mean = tf.tidy(() => cache.get(hook).mean([0, 1]));
    const meanHost = mean.dataSync() as Float32Array;
    const at3 = Float32Array.from({ length: tokens.batch * tokens.seqLen }, (_, i) => (i % tokens.seqLen === 3 ? 1 : 0));
    const cases: [string, { data: Float32Array; shape: number[] }, { data: Float32Array; shape: number[] } | undefined, (x: tf.Tensor) => tf.Tensor][] = [
      ['zero everywhere', { data: Float32Array.of(0), shape: [1] }, undefined, (x) => tf.zerosLike(x)],
      ['mean everywhere', { data: meanHost, shape: [d] }, undefined, (x) => tf.broadcastTo(mean, x.shape)],
      ['zero at position 3', { data: Float32Array.of(0), shape: [1] }, { data: at3, shape: [tokens.batch, tokens.seqLen, 1] }, (x) => tf.mul(x, tf.sub(1, tf.tensor3d(at3, [tokens.batch, tokens.seqLen, 1])))],
    ];
    for (const [label, src, mask, fn] of cases) {
      const got = await onnx.runReplaced(tokens, hook, src, mask);
      const want = model.run(tokens, { fwdHooks: [[hook, (x) => fn(x)]] });
      expect(maxScaledDiff(got.data, want.dataSync()), label).toBeLessThan(1e-4);
      want.dispose();
    }
    tf.dispose([l0, mean]);
    cache.dispose();
  });

  it('weights handed over as external data (how graphs past protobuf\'s 2 GiB load) give the same logits bit for bit', async () => {
    const external = new OnnxForward(model, { maxEmbeddedBytes: 0 });
    try {
      const tokens = padBatch([ref.tokens], 'right', 0);
      const a = await onnx.run(tokens, { hooks: [] });
      const b = await external.run(tokens, { hooks: [] });
      expect(Array.from(b.logits!.data)).toEqual(Array.from(a.logits!.data));
    } finally {
      await external.dispose();
    }
  });

  it('every hook equals the tfjs forward on right- and left-padded batches (≤1e-4)', async () => {
    const hooks = model.hookNames().filter((h) => !h.endsWith('hook_result'));
    const V = model.cfg.dVocab;
    const prompts = [ref.tokens.slice(0, 9), ref.tokens.slice(0, 4).map((t) => (t + 3) % V)];
    for (const side of ['right', 'left'] as const) {
      const tokens = padBatch(prompts, side, 0);
      const r = await onnx.run(tokens, { hooks });
      const { logits, cache } = model.runWithCache(tokens, { names: hooks });
      // Padded positions hold arbitrary values on both paths; compare real positions only.
      const real = (data: ArrayLike<number>, shape: number[]) => realPositions(tokens, data, shape);
      expect(maxScaledDiff(real(r.logits!.data, r.logits!.shape), real(logits.dataSync(), logits.shape)), `${side} logits`).toBeLessThan(1e-4);
      for (const h of hooks) {
        const t = cache.get(h);
        expect(r.hooks.get(h)!.shape, h).toEqual(t.shape);
        // Attention tensors are [b, head, q, k]: their position axis is not axis 1; compare whole.
        const whole = /hook_(attn_scores|pattern)$/.test(h);
        const a = whole ? Array.from(r.hooks.get(h)!.data) : real(r.hooks.get(h)!.data, t.shape);
        const b = whole ? Array.from(t.dataSync()) : real(t.dataSync(), t.shape);
        expect(maxScaledDiff(a, b), `${side} ${h}`).toBeLessThan(1e-4);
      }
      cache.dispose();
      logits.dispose();
    }
  });

  it('greedy generation with past keys/values as graph inputs gives the tfjs tokens (alone and batched)', async () => {
    const V = model.cfg.dVocab;
    const prompts = [ref.tokens.slice(0, 6), ref.tokens.slice(0, 3).map((t) => (t + 5) % V), ref.tokens.slice(0, 9)];
    const want = prompts.map((p) => model.generate(p, 10));
    expect(await onnx.generateBatch(prompts, 10)).toEqual(want);
    expect(await onnx.generateBatch([prompts[1]], 10)).toEqual([want[1]]);
  });

  it('probe edits (add a vector, project out a basis; all positions or one) as graph inputs equal the tfjs hooks', async () => {
    const d = model.cfg.dModel;
    const rng = (k: number) => Float32Array.from({ length: d }, (_, j) => Math.sin(7 * j + k));
    const unitRows = (rows: Float32Array[]) => {
      // Gram–Schmidt, as probeBasis does.
      const out: Float32Array[] = [];
      for (const r of rows) {
        const v = Float64Array.from(r);
        for (const b of out) {
          const dot = v.reduce((s, x, j) => s + x * b[j], 0);
          for (let j = 0; j < d; j++) v[j] -= dot * b[j];
        }
        const n = Math.hypot(...v);
        out.push(Float32Array.from(v, (x) => x / n));
      }
      return out;
    };
    const basis = unitRows([rng(1), rng(2)]);
    const flat = new Float32Array(2 * d);
    basis.forEach((b, i) => flat.set(b, i * d));
    const hook = 'blocks.1.hook_resid_post';
    const cases: DirectionEdit[][] = [
      [{ hook, kind: 'add', vector: rng(3).map((x) => 3 * x), positions: 'all' }],
      [{ hook, kind: 'add', vector: rng(4), positions: -1 }],
      [{ hook, kind: 'project', basis: flat, rank: 2, positions: 'all' }, { hook: 'blocks.0.hook_mlp_out', kind: 'add', vector: rng(5), positions: 2 }],
    ];
    const tokens = padBatch([ref.tokens.slice(0, 8)], 'right', 0);
    for (const edits of cases) {
      const r = await onnx.run(tokens, { hooks: [] }, edits);
      const t = model.run(tokens, { fwdHooks: edits.map(editHook) });
      expect(maxScaledDiff(r.logits!.data, t.dataSync())).toBeLessThan(1e-4);
      t.dispose();
      expect(await onnx.generateBatch([ref.tokens.slice(0, 5)], 6, { edits })).toEqual([model.generate(ref.tokens.slice(0, 5), 6, { fwdHooks: edits.map(editHook) })]);
    }
  });

  it('final-position logits and an early stop match tfjs', async () => {
    const tokens = padBatch([ref.tokens.slice(0, 7), ref.tokens.slice(0, 3)], 'right', 0);
    const f = await onnx.run(tokens, { hooks: [], finalPositionOnly: true });
    const t = model.run(tokens, { finalPositionOnly: true });
    expect(f.logits!.shape).toEqual(t.shape);
    expect(maxScaledDiff(f.logits!.data, t.dataSync())).toBeLessThan(1e-4);
    t.dispose();
    const s = await onnx.run(tokens, { hooks: ['blocks.0.hook_resid_post'], stopAtLayer: 0 });
    expect(s.logits).toBeNull();
    const { logits, cache } = model.runWithCache(tokens, { names: ['blocks.0.hook_resid_post'], stopAtLayer: 0 });
    expect(maxScaledDiff(s.hooks.get('blocks.0.hook_resid_post')!.data, cache.get('blocks.0.hook_resid_post').dataSync())).toBeLessThan(1e-4);
    cache.dispose();
    logits.dispose();
  });

  const pref = patchingReference(name);
  it('resid_pre, attn_out and mlp_out grids equal the reference (≤1e-4); head_out, pattern, head_out_pos, resid_mid and mlp_post equal the tfjs grids', async () => {
    const pair = { clean: pref.clean, corrupt: pref.corrupt, answer: pref.answer, wrong: pref.wrong };
    // A small batch budget forces several chunks per layer.
    const session = new PatchingSession(model, [pair], { onnx, maxBatchTokens: 4 * pref.clean.length });
    const plain = new PatchingSession(model, [pair]);
    for (const component of ['resid_pre', 'attn_out', 'mlp_out'] as const) {
      const grid = await session.gridAsync(component, 'activation');
      const want = pref.grids[component].activation;
      const got = (grid.scores as number[][]).flat();
      expect(Math.max(...got.map((v, i) => Math.abs(v - want[i]))), component).toBeLessThan(1e-4);
    }
    for (const component of ['head_out', 'pattern', 'head_out_pos', 'resid_mid', 'mlp_post'] as const) {
      const a = (await session.gridAsync(component, 'activation')).scores.flat(3) as number[];
      const b = plain.grid(component, 'activation').scores.flat(3) as number[];
      expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]))), component).toBeLessThan(1e-4);
    }
    // A budget of one token-row: one position a group and one layer a call (no merged runs).
    const single = new PatchingSession(model, [pair], { onnx, maxBatchTokens: 1 });
    const got = ((await single.gridAsync('resid_pre', 'activation')).scores as number[][]).flat();
    expect(Math.max(...got.map((v, i) => Math.abs(v - pref.grids.resid_pre.activation[i])))).toBeLessThan(1e-4);
    single.dispose();
    // Two different pairs (rows of several prompts in each merged run), against tfjs.
    const pairs = [pair, { clean: pref.corrupt, corrupt: pref.clean, answer: pref.wrong, wrong: pref.answer }];
    const twoOnnx = new PatchingSession(model, pairs, { onnx });
    const twoTfjs = new PatchingSession(model, pairs);
    const a2 = ((await twoOnnx.gridAsync('attn_out', 'activation')).scores as number[][]).flat();
    const b2 = (twoTfjs.grid('attn_out', 'activation').scores as number[][]).flat();
    expect(Math.max(...a2.map((v, i) => Math.abs(v - b2[i])))).toBeLessThan(1e-4);
    twoOnnx.dispose();
    twoTfjs.dispose();
    const before = tf.memory().numTensors;
    await session.gridAsync('mlp_out', 'activation');
    expect(tf.memory().numTensors).toBe(before);
    session.dispose();
    plain.dispose();
  });

  it('under probe edits (steer at a resid_pre, ablate a direction in a later block) the onnx grids equal tfjs and a brute-force patched run', async () => {
    const pair = { clean: pref.clean, corrupt: pref.corrupt, answer: pref.answer, wrong: pref.wrong };
    const d = model.cfg.dModel;
    const unit = (seed: number) => {
      const v = Float32Array.from({ length: d }, (_, i) => Math.sin(seed * 7.1 + i * 1.3));
      const n = Math.hypot(...v);
      return v.map((x) => x / n);
    };
    const edits: DirectionEdit[] = [
      { hook: 'blocks.1.hook_resid_pre', kind: 'add', vector: unit(1).map((x) => 2 * x), positions: 'all' },
      { hook: 'blocks.1.hook_mlp_out', kind: 'project', basis: unit(2), rank: 1, positions: -1 },
    ];
    const session = new PatchingSession(model, [pair], { onnx, edits, maxBatchTokens: 4 * pref.clean.length });
    const plain = new PatchingSession(model, [pair], { edits });
    const before = onnx.sessionCount;
    for (const component of ['resid_pre', 'mlp_out', 'head_out'] as const) {
      const a = (await session.gridAsync(component, 'activation')).scores.flat(3) as number[];
      const b = plain.grid(component, 'activation').scores.flat(3) as number[];
      expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]))), component).toBeLessThan(1e-4);
    }
    expect(onnx.sessionCount).toBeGreaterThan(before);
    // Brute force at one site: resid_pre of block 1 (where the steer acts) at position 2, the whole
    // corrupt run with the edits and the clean value written in — no resuming, nothing cached.
    const grid = plain.grid('resid_pre', 'activation');
    const hooks = edits.map(editHook);
    const { logits: cl, cache } = model.runWithCache([pref.clean], { names: ['blocks.1.hook_resid_pre'], fwdHooks: hooks });
    const cleanAct = cache.get('blocks.1.hook_resid_pre');
    const patchAt2 = (act: tf.Tensor) => tf.tidy(() => {
      const m = tf.tensor3d(Float32Array.from({ length: pref.clean.length }, (_, t) => (t === 2 ? 1 : 0)), [1, pref.clean.length, 1]);
      return tf.add(tf.mul(act, tf.sub(1, m)), tf.mul(cleanAct, m));
    });
    const ld = (l: tf.Tensor) => { const v = l.dataSync(); const V = model.cfg.dVocab; const o = (l.shape[1]! - 1) * V; return v[o + pair.answer] - v[o + pair.wrong]; };
    const patched = model.run([pref.corrupt], { fwdHooks: [...hooks, ['blocks.1.hook_resid_pre', patchAt2]] });
    const base = model.run([pref.corrupt], { fwdHooks: hooks });
    const want = (ld(patched) - ld(base)) / (ld(cl) - ld(base));
    expect(Math.abs((grid.scores as number[][])[1][2] - want)).toBeLessThan(1e-4);
    tf.dispose([cl, patched, base]);
    cache.dispose();
    session.dispose();
    plain.dispose();
  });

  it('metrics that need the whole vocabulary (kl, logprob_diff) run the full head and equal the tfjs grids', async () => {
    const pair = { clean: pref.clean, corrupt: pref.corrupt, answer: pref.answer, wrong: pref.wrong };
    for (const metric of ['kl', 'logprob_diff'] as const) {
      const session = new PatchingSession(model, [pair], { onnx, metric });
      const plain = new PatchingSession(model, [pair], { metric });
      for (const component of ['resid_pre', 'head_out'] as const) {
        const a = (await session.gridAsync(component, 'activation')).scores.flat(3) as number[];
        const b = plain.grid(component, 'activation').scores.flat(3) as number[];
        expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]))), `${metric} ${component}`).toBeLessThan(1e-4);
      }
      session.dispose();
      plain.dispose();
    }
  });
});

describe('long prompts: tfjs multiplies attention slice by slice on wasm, onnxruntime in one op', () => {
  it('stories260K at 420 tokens (over the per-slice threshold): logits and patterns agree (≤1e-4), gradients flow', async () => {
    const model = await loadModel(modelPath('stories260K'));
    const onnx = new OnnxForward(model);
    try {
      const ids = Array.from({ length: 420 }, (_, i) => (i * 37 + 11) % model.cfg.dVocab);
      const tokens = padBatch([ids], 'right', 0);
      const hooks = ['blocks.0.attn.hook_pattern', 'blocks.4.attn.hook_z'];
      const r = await onnx.run(tokens, { hooks });
      const { logits, cache } = model.runWithCache(tokens, { names: hooks });
      expect(maxScaledDiff(r.logits!.data, logits.dataSync())).toBeLessThan(1e-4);
      for (const h of hooks) expect(maxScaledDiff(r.hooks.get(h)!.data, cache.get(h).dataSync()), h).toBeLessThan(1e-4);
      const g = model.gradients(tokens, 'blocks.2.hook_resid_pre', (l) => l.sum().asScalar(), { finalPositionOnly: true });
      const grad = g.grads.get('blocks.2.hook_resid_pre')!;
      expect(grad.shape).toEqual([1, 420, model.cfg.dModel]);
      expect(Array.from(grad.dataSync()).every(Number.isFinite)).toBe(true);
      expect(tf.norm(grad).dataSync()[0]).toBeGreaterThan(0);
      tf.dispose([logits, ...g.grads.values()]);
      cache.dispose();
    } finally {
      await onnx.dispose();
      model.dispose();
    }
  });
});

describe('--backend on the command line', () => {
  function info(r: CliResult): string {
    return `exit ${r.code}\n${r.stdout.slice(0, 800)}\n${r.stderr.slice(0, 1500)}`;
  }
  const M = () => modelPath('stories260K');

  it('run: onnx and tfjs give the same top predictions', { timeout: TIMEOUT }, async () => {
    const args = ['run', '--model', M(), '--text', 'Once upon a time, there was a little', '--top-k', '8', '--json'];
    const [a, b, c] = await Promise.all([cli([...args, '--backend', 'onnx']), cli([...args, '--backend', 'tfjs']), cli(args)]);
    for (const r of [a, b, c]) expect(r.code, info(r)).toBe(0);
    const ta = JSON.parse(a.stdout).top as { token: number; logit: number }[];
    const tb = JSON.parse(b.stdout).top as { token: number; logit: number }[];
    expect(ta.map((t) => t.token)).toEqual(tb.map((t) => t.token));
    ta.forEach((t, i) => expect(Math.abs(t.logit - tb[i].logit)).toBeLessThan(1e-4));
    expect(JSON.parse(c.stdout).top.map((t: { token: number }) => t.token)).toEqual(ta.map((t) => t.token));
  });

  it('generate: onnx and tfjs give the same tokens', { timeout: TIMEOUT }, async () => {
    const args = ['generate', '--model', M(), '--text', 'Once upon a time', '--max-new-tokens', '24', '--json'];
    const [a, b] = await Promise.all([cli([...args, '--backend', 'onnx']), cli([...args, '--backend', 'tfjs'])]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    expect(JSON.parse(a.stdout)).toEqual(JSON.parse(b.stdout));
  });

  it('sae features: the onnx store has the tfjs densities, activations and top examples', { timeout: TIMEOUT }, async () => {
    const d = caseDir('features');
    const prompts = path.join(d, 'p.jsonl');
    fs.writeFileSync(prompts, fs.readFileSync(path.join(REPO_ROOT, 'datasets', 'stories', 'stories.jsonl'), 'utf8').split('\n').slice(0, 8).join('\n'));
    const args = (b: string) => ['sae', 'features', '--model', M(), '--sae', path.join(REPO_ROOT, 'datasets', 'stories260K-sae'), '--prompts', prompts, '--backend', b, '--out', path.join(d, `${b}.sqlite`)];
    const [a, b] = await Promise.all([cli(args('onnx')), cli(args('tfjs'))]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    const rows = (f: string, sql: string) => {
      const db = new Database(path.join(d, f), { readonly: true });
      try {
        return db.prepare(sql).all() as Record<string, number>[];
      } finally {
        db.close();
      }
    };
    const fa = rows('onnx.sqlite', 'select id, n_active, max_act, mean_act from features order by id');
    const fb = rows('tfjs.sqlite', 'select id, n_active, max_act, mean_act from features order by id');
    expect(fa.map((r) => r.n_active)).toEqual(fb.map((r) => r.n_active));
    fa.forEach((r, i) => expect(Math.abs(r.max_act - fb[i].max_act)).toBeLessThan(1e-4));
    const top = "select feature, rank, prompt, pos from examples where kind = 'top' order by feature, rank";
    expect(rows('onnx.sqlite', top)).toEqual(rows('tfjs.sqlite', top));
  });

  it('sae eval: the nine metrics agree across backends (≤1e-4) on the shipped stories SAE', { timeout: TIMEOUT }, async () => {
    const d = caseDir('eval');
    const prompts = path.join(d, 'p.jsonl');
    fs.writeFileSync(prompts, fs.readFileSync(path.join(REPO_ROOT, 'datasets', 'stories', 'stories.jsonl'), 'utf8').split('\n').slice(0, 6).join('\n'));
    const args = (b: string) => ['sae', 'eval', '--model', M(), '--sae', path.join(REPO_ROOT, 'datasets', 'stories260K-sae'), '--prompts', prompts, '--backend', b, '--json'];
    const [a, b] = await Promise.all([cli(args('onnx')), cli(args('tfjs'))]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    const x = JSON.parse(a.stdout) as Record<string, number>;
    const y = JSON.parse(b.stdout) as Record<string, number>;
    expect(Object.keys(x)).toEqual(Object.keys(y));
    for (const k of Object.keys(x)) expect(Math.abs(x[k] - y[k]) / Math.max(1, Math.abs(y[k])), k).toBeLessThan(1e-4);
    expect(x.ce_loss_score).toBeGreaterThan(0.9);
  });

  it('cache: the onnx file holds the tfjs values (≤1e-4), including attention patterns and logits', { timeout: TIMEOUT }, async () => {
    const d = caseDir('cache');
    const prompts = path.join(d, 'p.jsonl');
    fs.writeFileSync(prompts, ['Once upon a time', 'Lily saw a big dog. She', 'The sun'].map((t) => JSON.stringify({ text: t })).join('\n'));
    const args = (b: string) => ['cache', '--model', M(), '--prompts', prompts, '--hooks', 'blocks.*.hook_resid_post,blocks.1.attn.hook_pattern,ln_final.hook_normalized', '--logits', '--backend', b, '--out', path.join(d, `${b}.arrow`)];
    const [a, b] = await Promise.all([cli(args('onnx')), cli(args('tfjs'))]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    const x = readArrowCache(path.join(d, 'onnx.arrow'));
    const y = readArrowCache(path.join(d, 'tfjs.arrow'));
    expect(Array.from(x.token)).toEqual(Array.from(y.token));
    expect(Object.keys(x.columns).sort()).toEqual(Object.keys(y.columns).sort());
    for (const [n, col] of Object.entries(x.columns)) {
      const other = y.columns[n];
      const flat = (c: typeof col) => (c.data ? Array.from(c.data) : c.lists!.flatMap((l) => Array.from(l)));
      expect(maxScaledDiff(flat(col), flat(other)), n).toBeLessThan(1e-4);
    }
  });

  it('models over the onnx memory budget, or hooks it does not export: auto falls back to tfjs, onnx says why', { timeout: TIMEOUT }, async () => {
    const env = { ...process.env, HOOKLENS_ONNX_MAX_BYTES: '1000' };
    const args = ['run', '--model', modelPath('tiny-llama'), '--tokens', '1,2,3', '--json'];
    const auto = await cli(args, { env });
    expect(auto.code, info(auto)).toBe(0);
    const perHead = await cli(['cache', '--model', modelPath('tiny-gpt2'), '--tokens', '1,2,3', '--hooks', 'blocks.0.attn.hook_result', '--out', path.join(caseDir('hr'), 'x.arrow')]);
    expect(perHead.code, info(perHead)).toBe(0);
    const forced = await cli([...args, '--backend', 'onnx'], { env });
    expect(forced.code).not.toBe(0);
    expect(stderrLines(forced.stderr)).toEqual([expect.stringMatching(/GiB of float32 weights; onnxruntime's copy of them may take .* GiB here/)]);
  });

  const bad: [string, string[], RegExp][] = [
    ['an unknown backend', ['run', '--model', modelPath('tiny-llama'), '--tokens', '1,2,3', '--backend', 'gpu'], /--backend must be tfjs, onnx or auto, got 'gpu'/],
    ['onnx asked for per-head results (not a graph output)', ['cache', '--model', modelPath('tiny-gpt2'), '--tokens', '1,2,3', '--hooks', 'blocks.0.attn.hook_result', '--backend', 'onnx', '--out', '/nonexistent-dir/x.arrow'], /--backend onnx does not export blocks\.0\.attn\.hook_result/],
  ];
  for (const [label, args, re] of bad) {
    it(`bad input: ${label} — one line, exit ≠ 0`, { timeout: TIMEOUT }, async () => {
      const r = await cli(args);
      expect(r.code, info(r)).not.toBe(0);
      expect(stderrLines(r.stderr)).toEqual([expect.stringMatching(re)]);
    });
  }
});
