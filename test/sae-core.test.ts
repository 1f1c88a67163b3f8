/**
 * SAE core: SAELens cfg.json parsing, save/load (bit-exact, atomic), every architecture's
 * encode/decode against plain-JS arithmetic on tiny hand-written weights, normalisation modes,
 * and splicing into stories260K (hook_sae_* points, error term, ablation, no tensor leaks).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import { HooklensError } from '../src/errors.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import type { RawTensor } from '../src/io/raw-tensor.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import {
  loadSae,
  makeSaeConfig,
  parseSaelensCfg,
  runWithSae,
  runWithSaeCache,
  Sae,
  saveSae,
  spliceSae,
  toSaelensCfg,
  type SaeArchitecture,
  type SaeConfig,
} from '../src/sae/index.js';
import { mulberry32 } from '../src/util/random.js';
import { storiesGguf } from './helpers/fixtures.js';

let tmp = '';
beforeAll(async () => {
  await initBackend();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-sae-core-'));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The HooklensError message `fn` throws; it must be one line. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(HooklensError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected an error');
}

function raw(rows: number[][] | number[]): RawTensor {
  if (typeof rows[0] === 'number') return { shape: [rows.length], data: Float32Array.from(rows as number[]) };
  const r = rows as number[][];
  return { shape: [r.length, r[0].length], data: Float32Array.from(r.flat()) };
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, tol = 1e-5): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (Math.abs(got[i] - want[i]) > tol) throw new Error(`index ${i}: got ${got[i]}, want ${want[i]} (tol ${tol})`);
  }
}

// ---------------------------------------------------------------------------------------------
// cfg.json

describe('SAELens cfg.json', () => {
  it('parses the pre-6 flat layout (hook_point, boolean normalize, topk via activation_fn)', () => {
    const cfg = parseSaelensCfg(
      {
        d_in: 3,
        d_sae: 4,
        hook_point: 'blocks.0.hook_resid_pre',
        hook_point_layer: 0,
        hook_point_head_index: null,
        activation_fn_str: 'topk',
        activation_fn_kwargs: { k: 2 },
        normalize_activations: true,
        norm_scaling_factor: 1.5,
        model_name: 'stories260K',
        context_size: 128,
      },
      'old/cfg.json',
    );
    expect(cfg).toMatchObject({
      architecture: 'topk',
      k: 2,
      dIn: 3,
      dSae: 4,
      hookName: 'blocks.0.hook_resid_pre',
      hookLayer: 0,
      hookHeadIndex: undefined,
      applyBDecToInput: true,
      normalizeActivations: 'expected_average_only_in',
      scalingFactor: 1.5,
      modelName: 'stories260K',
    });
    const out = toSaelensCfg(cfg);
    expect(out.hook_name).toBe('blocks.0.hook_resid_pre');
    expect(out).not.toHaveProperty('hook_point');
    expect(out.context_size).toBe(128);
    expect(parseSaelensCfg(out, 'again').hookName).toBe('blocks.0.hook_resid_pre');
  });

  it('parses the SAELens 6 layout (metadata.hook_name) and writes hook fields back into metadata', () => {
    const json = {
      architecture: 'jumprelu',
      d_in: 64,
      d_sae: 256,
      dtype: 'float32',
      device: 'cpu',
      apply_b_dec_to_input: false,
      normalize_activations: 'none',
      reshape_activations: 'none',
      metadata: {
        model_name: 'gemma-2-2b',
        hook_name: 'blocks.3.hook_resid_post',
        hook_layer: 3,
        hook_head_index: null,
        prepend_bos: true,
        context_size: 1024,
        dataset_path: 'monology/pile-uncopyrighted',
        sae_lens_version: '6.5.1',
      },
      some_future_field: { nested: [1, 2, 3] },
    };
    const cfg = parseSaelensCfg(json, 'new/cfg.json');
    expect(cfg).toMatchObject({ architecture: 'jumprelu', hookName: 'blocks.3.hook_resid_post', hookLayer: 3, modelName: 'gemma-2-2b', applyBDecToInput: false });
    const out = toSaelensCfg(cfg);
    expect(out).not.toHaveProperty('hook_name');
    expect((out.metadata as Record<string, unknown>).hook_name).toBe('blocks.3.hook_resid_post');
    expect((out.metadata as Record<string, unknown>).sae_lens_version).toBe('6.5.1');
    expect(out.some_future_field).toEqual({ nested: [1, 2, 3] });
    // Idempotent, so save → load → save is byte-stable.
    expect(JSON.stringify(toSaelensCfg(parseSaelensCfg(out, 'x')))).toBe(JSON.stringify(out));
  });

  it('rejects bad configs with one line naming the file and field', () => {
    const base = { d_in: 3, d_sae: 4, hook_name: 'blocks.0.hook_resid_pre' };
    expect(errorOf(() => parseSaelensCfg({ ...base, architecture: 'transcoder' }, 'a/cfg.json'))).toMatch(/a\/cfg\.json.*architecture.*"transcoder"/);
    expect(errorOf(() => parseSaelensCfg({ d_in: 3, d_sae: 4 }, 'b/cfg.json'))).toMatch(/b\/cfg\.json.*hook_name/);
    expect(errorOf(() => parseSaelensCfg({ ...base, d_in: 0 }, 'c/cfg.json'))).toMatch(/c\/cfg\.json.*d_in/);
    expect(errorOf(() => parseSaelensCfg({ ...base, architecture: 'topk' }, 'd/cfg.json'))).toMatch(/d\/cfg\.json.*"k"/);
    expect(errorOf(() => parseSaelensCfg({ ...base, normalize_activations: 'whiten' }, 'e/cfg.json'))).toMatch(/e\/cfg\.json.*normalize_activations/);
    expect(errorOf(() => parseSaelensCfg([1], 'f/cfg.json'))).toMatch(/f\/cfg\.json/);
  });
});

// ---------------------------------------------------------------------------------------------
// Tiny hand-written SAE and a plain-JS reference

const W_ENC = [
  [1.0, -0.5, 0.25, 2.0],
  [0.5, 1.5, -1.0, 0.0],
  [-0.25, 0.75, 0.5, -1.0],
];
const B_ENC = [0.1, -0.2, 0.05, -0.3];
const W_DEC = [
  [1, 0, 0.5],
  [0, 1, -0.5],
  [0.25, 0.25, 1],
  [-1, 0.5, 0],
];
const B_DEC = [0.2, -0.1, 0.3];
const THRESHOLD = [0.5, 0.2, 1.0, 0.1];
const B_GATE = [-0.5, 0.1, 0, 0.2];
const R_MAG = [0, 0.5, -0.5, 0.1];
const B_MAG = [0.1, 0, -0.1, 0.2];
const X = [
  [1, 2, -1],
  [0.5, -1, 2],
  [-2, 0.3, 0.7],
];

interface RefOpts {
  arch: SaeArchitecture;
  applyBDec: boolean;
  k?: number;
  batchTopK?: boolean;
  threshold?: number[];
  norm?: 'none' | 'expected_average_only_in' | 'constant_norm_rescale' | 'layer_norm';
  scale?: number;
}

const relu = (v: number) => Math.max(0, v);

function matVec(row: number[], m: number[][]): number[] {
  return m[0].map((_, j) => row.reduce((s, v, i) => s + v * m[i][j], 0));
}

/** Plain-JS SAELens forward: normalise → centre → encode → activate → decode → de-normalise. */
function refForward(x: number[][], o: RefOpts): { acts: number[][]; recons: number[][] } {
  const d = x[0].length;
  const stats = x.map((r) => {
    const mu = r.reduce((a, b) => a + b, 0) / d;
    const std = Math.sqrt(r.reduce((a, b) => a + (b - mu) ** 2, 0) / (d - 1));
    const norm = Math.sqrt(r.reduce((a, b) => a + b * b, 0));
    return { mu, std, norm };
  });
  const xn = x.map((r, i) => {
    const { mu, std, norm } = stats[i];
    switch (o.norm ?? 'none') {
      case 'none':
        return r;
      case 'expected_average_only_in':
        return r.map((v) => v * o.scale!);
      case 'constant_norm_rescale':
        return r.map((v) => (v * Math.sqrt(d)) / norm);
      case 'layer_norm':
        return r.map((v) => (v - mu) / (std + 1e-5));
    }
  });
  const centred = xn.map((r) => r.map((v, j) => v - (o.applyBDec ? B_DEC[j] : 0)));
  let acts: number[][];
  if (o.arch === 'gated') {
    const wMag = W_ENC.map((row) => row.map((v, j) => v * Math.exp(R_MAG[j])));
    acts = centred.map((c) => {
      const gate = matVec(c, W_ENC).map((v, j) => v + B_GATE[j]);
      const mag = matVec(c, wMag).map((v, j) => v + B_MAG[j]);
      return mag.map((m, j) => (gate[j] > 0 ? relu(m) : 0));
    });
  } else {
    const pre = centred.map((c) => matVec(c, W_ENC).map((v, j) => v + B_ENC[j]));
    const thr = o.threshold;
    if (o.arch === 'standard') acts = pre.map((r) => r.map(relu));
    else if (o.arch === 'jumprelu' || (o.arch === 'batchtopk' && !o.batchTopK && thr)) acts = pre.map((r) => r.map((v, j) => (v > thr![j] ? relu(v) : 0)));
    else if (o.arch === 'topk' || (o.arch === 'batchtopk' && !o.batchTopK)) {
      const k = o.arch === 'topk' ? o.k! : Math.max(1, Math.round(o.k!));
      acts = pre.map((r) => {
        const kth = [...r].sort((a, b) => b - a)[k - 1];
        return r.map((v) => (v >= kth ? relu(v) : 0));
      });
    } else {
      // BatchTopK: the floor(k·n) largest ReLU'd values over the batch.
      const all = pre.flat().map(relu).sort((a, b) => b - a);
      const kth = all[Math.floor(o.k! * pre.length) - 1];
      acts = pre.map((r) => r.map((v) => (relu(v) >= kth && v > 0 ? v : 0)));
    }
  }
  const recons = acts.map((a, i) => {
    const y = matVec(a, W_DEC).map((v, j) => v + B_DEC[j]);
    const { mu, std, norm } = stats[i];
    switch (o.norm ?? 'none') {
      case 'none':
        return y;
      case 'expected_average_only_in':
        return y.map((v) => v / o.scale!);
      case 'constant_norm_rescale':
        return y.map((v) => (v * norm) / Math.sqrt(d));
      case 'layer_norm':
        return y.map((v) => v * std + mu);
    }
  });
  return { acts, recons };
}

function tinyTensors(arch: SaeArchitecture): Record<string, RawTensor> {
  if (arch === 'gated') return { W_enc: raw(W_ENC), W_dec: raw(W_DEC), b_dec: raw(B_DEC), b_gate: raw(B_GATE), r_mag: raw(R_MAG), b_mag: raw(B_MAG) };
  const t: Record<string, RawTensor> = { W_enc: raw(W_ENC), b_enc: raw(B_ENC), W_dec: raw(W_DEC), b_dec: raw(B_DEC) };
  if (arch === 'jumprelu') t.threshold = raw(THRESHOLD);
  return t;
}

function tinySae(arch: SaeArchitecture, extra: Partial<Parameters<typeof makeSaeConfig>[0]> = {}): Sae {
  const cfg = makeSaeConfig({ architecture: arch, dIn: 3, dSae: 4, hookName: 'blocks.0.hook_resid_pre', ...extra });
  return new Sae(cfg, tinyTensors(arch), 'tiny');
}

function runTiny(sae: Sae, opts: { batchTopK?: boolean } = {}): { acts: number[][]; recons: number[][] } {
  const x = tf.tensor2d(X);
  const { acts, recons } = sae.forward(x, opts);
  const out = { acts: acts.arraySync() as number[][], recons: recons.arraySync() as number[][] };
  tf.dispose([x, acts, recons]);
  return out;
}

describe('SAE architectures on hand-written weights (d_in 3, d_sae 4)', () => {
  it('standard: matches hand-computed values and the plain-JS reference', () => {
    const sae = tinySae('standard', { applyBDecToInput: false });
    const got = runTiny(sae);
    // Row 0 by hand: pre = x·W_enc + b_enc = [2.35, 1.55, −2.2, 2.7]; recons = acts·W_dec + b_dec.
    expectClose(got.acts[0], [2.35, 1.55, 0, 2.7]);
    expectClose(got.recons[0], [-0.15, 2.8, 0.7]);
    const ref = refForward(X, { arch: 'standard', applyBDec: false });
    expectClose(got.acts.flat(), ref.acts.flat());
    expectClose(got.recons.flat(), ref.recons.flat());
    sae.dispose();
  });

  it.each([true, false])('standard with apply_b_dec_to_input=%s', (applyBDec) => {
    const sae = tinySae('standard', { applyBDecToInput: applyBDec });
    const got = runTiny(sae);
    const ref = refForward(X, { arch: 'standard', applyBDec });
    expectClose(got.acts.flat(), ref.acts.flat());
    expectClose(got.recons.flat(), ref.recons.flat());
    sae.dispose();
  });

  it('apply_b_dec_to_input changes the pre-activations by exactly −b_dec·W_enc', () => {
    const on = tinySae('standard', { applyBDecToInput: true });
    const off = tinySae('standard', { applyBDecToInput: false });
    const x = tf.tensor2d(X);
    const [a, b] = [on.encodePre(x), off.encodePre(x)];
    const shift = matVec(B_DEC, W_ENC);
    const diff = (a.arraySync() as number[][]).map((r, i) => r.map((v, j) => v - (b.arraySync() as number[][])[i][j]));
    for (const r of diff) expectClose(r, shift.map((s) => -s));
    tf.dispose([x, a, b]);
    on.dispose();
    off.dispose();
  });

  it('topk keeps the k largest pre-activations per row (ReLU applied)', () => {
    const sae = tinySae('topk', { k: 2 });
    const got = runTiny(sae);
    const ref = refForward(X, { arch: 'topk', applyBDec: true, k: 2 });
    expectClose(got.acts.flat(), ref.acts.flat());
    expectClose(got.recons.flat(), ref.recons.flat());
    for (const r of got.acts) expect(r.filter((v) => v !== 0).length).toBeLessThanOrEqual(2);
    // apply_b_dec off, row 0 by hand: pre [2.35, 1.55, −2.2, 2.7] → keep 2.7 and 2.35.
    const off = tinySae('topk', { k: 2, applyBDecToInput: false });
    expectClose(runTiny(off).acts[0], [2.35, 0, 0, 2.7]);
    sae.dispose();
    off.dispose();
  });

  it('batchtopk: floor(k·n) over the batch when training; per-row top-k, or the threshold, at inference', () => {
    const sae = tinySae('batchtopk', { k: 1.5 });
    const train = runTiny(sae, { batchTopK: true });
    const refTrain = refForward(X, { arch: 'batchtopk', applyBDec: true, k: 1.5, batchTopK: true });
    expectClose(train.acts.flat(), refTrain.acts.flat());
    expectClose(train.recons.flat(), refTrain.recons.flat());
    expect(train.acts.flat().filter((v) => v !== 0).length).toBe(4); // floor(1.5 × 3)
    const inf = runTiny(sae);
    expectClose(inf.acts.flat(), refForward(X, { arch: 'batchtopk', applyBDec: true, k: 1.5 }).acts.flat());
    sae.setThreshold(Float32Array.from(THRESHOLD));
    const thr = runTiny(sae);
    expectClose(thr.acts.flat(), refForward(X, { arch: 'batchtopk', applyBDec: true, k: 1.5, threshold: THRESHOLD }).acts.flat());
    expect(Object.keys(sae.tensors())).toContain('threshold');
    sae.dispose();
  });

  it('jumprelu: ReLU(pre) where pre > threshold, else 0', () => {
    const sae = tinySae('jumprelu');
    const got = runTiny(sae);
    const ref = refForward(X, { arch: 'jumprelu', applyBDec: true, threshold: THRESHOLD });
    expectClose(got.acts.flat(), ref.acts.flat());
    expectClose(got.recons.flat(), ref.recons.flat());
    sae.dispose();
  });

  it('gated: (gate pre > 0) · ReLU(magnitude pre) with W_enc·exp(r_mag) and b_mag', () => {
    const sae = tinySae('gated');
    const got = runTiny(sae);
    const ref = refForward(X, { arch: 'gated', applyBDec: true });
    expectClose(got.acts.flat(), ref.acts.flat());
    expectClose(got.recons.flat(), ref.recons.flat());
    expect(() => sae.b_enc).toThrow(/no "b_enc"/);
    sae.dispose();
  });

  it.each([
    ['expected_average_only_in', { scalingFactor: 0.5 }],
    ['constant_norm_rescale', {}],
    ['layer_norm', {}],
  ] as const)('normalize_activations=%s normalises the input and undoes it on the output', (mode, extra) => {
    const sae = tinySae('standard', { normalizeActivations: mode, ...extra });
    const got = runTiny(sae);
    const ref = refForward(X, { arch: 'standard', applyBDec: true, norm: mode, scale: 0.5 });
    expectClose(got.acts.flat(), ref.acts.flat(), 1e-4);
    expectClose(got.recons.flat(), ref.recons.flat(), 1e-4);
    sae.dispose();
  });

  it.each(['standard', 'topk', 'batchtopk', 'jumprelu', 'gated'] as const)('%s is differentiable w.r.t. its variables (masks are constants)', (arch) => {
    const sae = tinySae(arch, { k: 2 });
    const x = tf.tensor2d(X);
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => {
      const { acts, recons } = sae.forward(x, { batchTopK: arch === 'batchtopk' });
      return tf.add(tf.mean(tf.square(tf.sub(recons, x))), tf.mul(0.01, tf.sum(acts))) as tf.Scalar;
    }, Object.values(sae.variables()));
    expect(Number.isFinite(value.dataSync()[0])).toBe(true);
    expect(Object.keys(grads).length).toBe(Object.keys(sae.variables()).length);
    for (const g of Object.values(grads)) expect([...g.dataSync()].every(Number.isFinite)).toBe(true);
    // The decoder gradient is non-zero (the reconstruction depends on it).
    const gDec = grads[sae.W_dec.name].dataSync();
    expect(gDec.some((v) => v !== 0)).toBe(true);
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    sae.dispose();
  });

  it('topk passes gradient only to the kept latents', () => {
    const sae = tinySae('topk', { k: 1 });
    const x = tf.tensor2d([X[0]]);
    const { grads } = tf.variableGrads(() => tf.sum(sae.encode(x)) as tf.Scalar, [sae.b_enc]);
    // Row 0 with b_dec applied: the single kept latent gets gradient 1, the others 0.
    const ref = refForward([X[0]], { arch: 'topk', applyBDec: true, k: 1 }).acts[0];
    expect([...grads[sae.b_enc.name].dataSync()]).toEqual(ref.map((v) => (v > 0 ? 1 : 0)));
    tf.dispose([x, ...Object.values(grads)]);
    sae.dispose();
  });
});

describe('Sae.init, decoder norms', () => {
  const cfg = () => makeSaeConfig({ architecture: 'jumprelu', dIn: 6, dSae: 10, hookName: 'blocks.0.hook_resid_post' });
  it('is deterministic per seed, with unit-norm decoder rows, W_enc = W_decᵀ, zero biases', () => {
    const [a, b, c] = [Sae.init(cfg(), 7), Sae.init(cfg(), 7), Sae.init(cfg(), 8)];
    const [ta, tb, tc] = [a.tensors(), b.tensors(), c.tensors()];
    expect(Buffer.from(ta.W_dec.data.buffer).equals(Buffer.from(tb.W_dec.data.buffer))).toBe(true);
    expect(Buffer.from(ta.W_dec.data.buffer).equals(Buffer.from(tc.W_dec.data.buffer))).toBe(false);
    const norms = a.decoderNorms();
    expectClose(norms.dataSync(), new Array(10).fill(1), 1e-6);
    norms.dispose();
    for (let r = 0; r < 10; r++) for (let j = 0; j < 6; j++) expect(ta.W_enc.data[j * 10 + r]).toBe(ta.W_dec.data[r * 6 + j]);
    expect([...ta.b_enc.data, ...ta.b_dec.data].every((v) => v === 0)).toBe(true);
    expect([...ta.threshold.data].every((v) => Math.abs(v - 0.001) < 1e-9)).toBe(true);
    [a, b, c].forEach((s) => s.dispose());
  });

  it('normalizeDecoder rescales rows to unit norm in place', () => {
    const sae = Sae.init(cfg(), 1);
    sae.W_dec.assign(tf.mul(sae.W_dec, tf.range(1, 11).reshape([10, 1])));
    const n0 = sae.decoderNorms();
    expectClose(n0.dataSync(), Array.from({ length: 10 }, (_, i) => i + 1), 1e-5);
    sae.normalizeDecoder();
    const n1 = sae.decoderNorms();
    expectClose(n1.dataSync(), new Array(10).fill(1), 1e-6);
    tf.dispose([n0, n1]);
    sae.dispose();
  });
});

// ---------------------------------------------------------------------------------------------
// save / load

function randomTensors(cfg: SaeConfig, seed: number): Record<string, RawTensor> {
  const rand = mulberry32(seed);
  const shapes: Record<string, number[]> = { W_enc: [cfg.dIn, cfg.dSae], W_dec: [cfg.dSae, cfg.dIn], b_dec: [cfg.dIn] };
  const names = cfg.architecture === 'gated' ? ['b_gate', 'r_mag', 'b_mag'] : ['b_enc', ...(cfg.architecture === 'jumprelu' ? ['threshold'] : [])];
  for (const n of names) shapes[n] = [cfg.dSae];
  return Object.fromEntries(
    Object.entries(shapes).map(([n, s]) => [n, { shape: s, data: Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => rand() * 2 - 1) }]),
  );
}

function dirBytes(dir: string): Record<string, Buffer> {
  return Object.fromEntries(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f))]));
}

describe('SAE directories (cfg.json + sae_weights.safetensors [+ sparsity.safetensors])', () => {
  it.each(['jumprelu', 'gated', 'topk'] as const)('%s: save → load → save is bit-exact, sparsity included', (arch) => {
    const cfg = parseSaelensCfg(
      {
        architecture: arch,
        d_in: 5,
        d_sae: 7,
        k: 3,
        hook_name: 'blocks.1.hook_mlp_out',
        hook_layer: 1,
        model_name: 'stories260K',
        context_size: 64,
        prepend_bos: true,
        dataset_path: 'datasets/stories',
        an_unknown_field: { keep: ['me'] },
      },
      'test',
    );
    const sae = new Sae(cfg, randomTensors(cfg, 3));
    const sparsity = Float32Array.from({ length: 7 }, (_, i) => -i - 0.5);
    const d1 = path.join(tmp, `rt-${arch}-1`);
    const d2 = path.join(tmp, `rt-${arch}-2`);
    saveSae(sae, d1, { sparsity });
    const loaded = loadSae(d1);
    const [t0, t1] = [sae.tensors(), loaded.sae.tensors()];
    expect(Object.keys(t1)).toEqual(Object.keys(t0));
    for (const k of Object.keys(t0)) {
      expect(t1[k].shape).toEqual(t0[k].shape);
      expect(Buffer.from(t1[k].data.buffer).equals(Buffer.from(t0[k].data.buffer))).toBe(true);
    }
    expect(Buffer.from(loaded.sparsity!.buffer).equals(Buffer.from(sparsity.buffer))).toBe(true);
    saveSae(loaded.sae, d2, { sparsity: loaded.sparsity });
    const [b1, b2] = [dirBytes(d1), dirBytes(d2)];
    expect(Object.keys(b1)).toEqual(['cfg.json', 'sae_weights.safetensors', 'sparsity.safetensors']);
    for (const f of Object.keys(b1)) expect(b2[f].equals(b1[f]), f).toBe(true);
    const cfgJson = JSON.parse(b1['cfg.json'].toString('utf8'));
    expect(cfgJson.an_unknown_field).toEqual({ keep: ['me'] });
    expect(cfgJson.hook_name).toBe('blocks.1.hook_mlp_out');
    sae.dispose();
    loaded.sae.dispose();
  });

  it('loads F16 and BF16 weights', () => {
    const dir = path.join(tmp, 'half');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'cfg.json'), JSON.stringify({ architecture: 'standard', d_in: 2, d_sae: 2, hook_name: 'blocks.0.hook_resid_pre' }));
    // Values exactly representable in both half formats.
    const vals = { W_enc: [0.5, -1.25, 2, 0.125], b_enc: [1, -0.5], W_dec: [0.25, 3, -2, 1.5], b_dec: [-0.75, 0] };
    const f16 = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeFloatLE(v);
      const bits = b.readUInt32LE();
      const sign = (bits >>> 16) & 0x8000;
      if (v === 0) return sign;
      const exp = ((bits >>> 23) & 0xff) - 127 + 15;
      return sign | (exp << 10) | ((bits >>> 13) & 0x3ff);
    };
    const bf16 = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeFloatLE(v);
      return b.readUInt32LE() >>> 16;
    };
    const header: Record<string, unknown> = {};
    const parts: Buffer[] = [];
    let off = 0;
    Object.entries(vals).forEach(([name, data], i) => {
      const dtype = i % 2 === 0 ? 'F16' : 'BF16';
      const buf = Buffer.alloc(data.length * 2);
      data.forEach((v, j) => buf.writeUInt16LE(dtype === 'F16' ? f16(v) : bf16(v), j * 2));
      header[name] = { dtype, shape: name.startsWith('W') ? [2, 2] : [2], data_offsets: [off, off + buf.length] };
      off += buf.length;
      parts.push(buf);
    });
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    fs.writeFileSync(path.join(dir, 'sae_weights.safetensors'), Buffer.concat([len, h, ...parts]));
    const { sae, sparsity } = loadSae(dir);
    expect(sparsity).toBeUndefined();
    const t = sae.tensors();
    for (const [name, data] of Object.entries(vals)) expect([...t[name].data]).toEqual(data);
    sae.dispose();
  });

  it('saving over an existing directory keeps other files, drops a stale sparsity file, and is all-or-nothing', () => {
    const cfg = makeSaeConfig({ architecture: 'standard', dIn: 4, dSae: 6, hookName: 'blocks.0.hook_resid_post' });
    const a = new Sae(cfg, randomTensors(cfg, 1));
    const b = new Sae(cfg, randomTensors(cfg, 2));
    const dir = path.join(tmp, 'replace');
    saveSae(a, dir, { sparsity: new Float32Array(6).fill(-2) });
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    saveSae(b, dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['cfg.json', 'notes.txt', 'sae_weights.safetensors']);
    const loaded = loadSae(dir);
    expect(Buffer.from(loaded.sae.tensors().W_enc.data.buffer).equals(Buffer.from(b.tensors().W_enc.data.buffer))).toBe(true);
    loaded.sae.dispose();
    // A save that fails midway (weights cannot be read) leaves the directory as it was and no temp files.
    const before = dirBytes(dir);
    a.dispose();
    expect(errorOf(() => saveSae(a, dir))).toMatch(/disposed/);
    expect(dirBytes(dir)).toEqual(before);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('.'))).toEqual([]);
    b.dispose();
  });

  it('load errors are one line naming the problem', () => {
    const good = path.join(tmp, 'good');
    const cfg = makeSaeConfig({ architecture: 'jumprelu', dIn: 4, dSae: 6, hookName: 'blocks.0.hook_resid_post' });
    const sae = new Sae(cfg, randomTensors(cfg, 5));
    saveSae(sae, good);
    sae.dispose();
    const copy = (name: string) => {
      const d = path.join(tmp, name);
      fs.cpSync(good, d, { recursive: true });
      return d;
    };
    expect(errorOf(() => loadSae(path.join(tmp, 'missing')))).toMatch(/missing.*does not exist/);
    const noWeights = copy('no-weights');
    fs.rmSync(path.join(noWeights, 'sae_weights.safetensors'));
    expect(errorOf(() => loadSae(noWeights))).toMatch(/sae_weights\.safetensors/);
    const noCfg = copy('no-cfg');
    fs.rmSync(path.join(noCfg, 'cfg.json'));
    expect(errorOf(() => loadSae(noCfg))).toMatch(/cfg\.json/);
    const badArch = copy('bad-arch');
    const j = JSON.parse(fs.readFileSync(path.join(badArch, 'cfg.json'), 'utf8'));
    fs.writeFileSync(path.join(badArch, 'cfg.json'), JSON.stringify({ ...j, architecture: 'crosscoder' }));
    expect(errorOf(() => loadSae(badArch))).toMatch(/cfg\.json.*architecture.*crosscoder/);
    // d_in in cfg.json disagrees with the stored weights (W_dec [6, 4] is checked first).
    const badShape = copy('bad-shape');
    fs.writeFileSync(path.join(badShape, 'cfg.json'), JSON.stringify({ ...j, d_in: 5 }));
    expect(errorOf(() => loadSae(badShape))).toMatch(/sae_weights\.safetensors.*"W_dec".*\[6, 4\].*expected \[6, 5\]/);
    // jumprelu without its threshold; a gated SAE without its gate.
    const noThr = copy('no-threshold');
    const st = readSafetensors(path.join(good, 'sae_weights.safetensors')).tensors;
    st.delete('threshold');
    writeSafetensors(path.join(noThr, 'sae_weights.safetensors'), st);
    expect(errorOf(() => loadSae(noThr))).toMatch(/sae_weights\.safetensors.*missing tensor "threshold"/);
    const asGated = copy('as-gated');
    fs.writeFileSync(path.join(asGated, 'cfg.json'), JSON.stringify({ ...j, architecture: 'gated' }));
    expect(errorOf(() => loadSae(asGated))).toMatch(/missing tensor "b_gate"/);
    const asStandard = copy('as-standard');
    fs.writeFileSync(path.join(asStandard, 'cfg.json'), JSON.stringify({ ...j, architecture: 'standard' }));
    expect(errorOf(() => loadSae(asStandard))).toMatch(/unexpected tensor "threshold" for a standard SAE/);
    const badSparsity = copy('bad-sparsity');
    fs.writeFileSync(path.join(badSparsity, 'sparsity.safetensors'), 'garbage');
    expect(errorOf(() => loadSae(badSparsity))).toMatch(/sparsity\.safetensors/);
  });
});

// ---------------------------------------------------------------------------------------------
// Splicing into stories260K

describe('splicing an SAE into stories260K', () => {
  let model: HookedModel;
  let sae: Sae;
  let tokens: number[];
  const HOOK = 'blocks.1.hook_resid_post';
  const P = `${HOOK}.`;
  beforeAll(async () => {
    model = await loadModel(storiesGguf());
    sae = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 96, hookName: HOOK }), 11);
    sae.b_dec.assign(tf.fill([64], 0.05));
    sae.b_enc.assign(tf.fill([96], -0.02));
    tokens = model.encode('Once upon a time, there was a little dog named Max.');
  });
  afterAll(() => {
    sae?.dispose();
    model?.dispose();
  });

  const maxDiff = (a: tf.Tensor, b: tf.Tensor) => {
    const [x, y] = [a.dataSync(), b.dataSync()];
    let m = 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
    return m;
  };

  it('with the error term the logits equal the un-spliced logits; without it they differ', () => {
    const base = model.run([tokens]);
    const withErr = runWithSae(model, [tokens], sae, { useErrorTerm: true });
    const without = runWithSae(model, [tokens], sae);
    expect(maxDiff(withErr, base)).toBeLessThanOrEqual(1e-6);
    expect(maxDiff(without, base)).toBeGreaterThan(1e-2);
    tf.dispose([base, withErr, without]);
  });

  it('hook_sae_* points are cacheable, in forward order, with SAELens values', () => {
    const clean = model.runWithCache([tokens], { names: [HOOK] });
    const { logits, cache } = runWithSaeCache(model, [tokens], sae, { names: [`${HOOK}.*`], useErrorTerm: true });
    expect(cache.names).toEqual(['input', 'acts_pre', 'acts_post', 'recons', 'error', 'output'].map((s) => `${P}hook_sae_${s}`));
    const T = tokens.length;
    expect(cache.get(`${P}hook_sae_acts_post`).shape).toEqual([1, T, 96]);
    const x = cache.get(`${P}hook_sae_input`);
    expect(maxDiff(x, clean.cache.get(HOOK))).toBe(0);
    // Plain JS: acts = ReLU((x − b_dec)·W_enc + b_enc), recons = acts·W_dec + b_dec, error = x − recons.
    const t = sae.tensors();
    const xs = x.dataSync();
    const acts = cache.get(`${P}hook_sae_acts_post`).dataSync();
    const recons = cache.get(`${P}hook_sae_recons`).dataSync();
    const error = cache.get(`${P}hook_sae_error`).dataSync();
    for (let p = 0; p < T; p++) {
      for (let j = 0; j < 96; j++) {
        let pre = t.b_enc.data[j];
        for (let i = 0; i < 64; i++) pre += (xs[p * 64 + i] - t.b_dec.data[i]) * t.W_enc.data[i * 96 + j];
        expect(Math.abs(acts[p * 96 + j] - Math.max(0, pre))).toBeLessThan(1e-4);
      }
      for (let i = 0; i < 64; i++) {
        let r = t.b_dec.data[i];
        for (let j = 0; j < 96; j++) r += acts[p * 96 + j] * t.W_dec.data[j * 64 + i];
        expect(Math.abs(recons[p * 64 + i] - r)).toBeLessThan(1e-4);
        expect(Math.abs(error[p * 64 + i] - (xs[p * 64 + i] - recons[p * 64 + i]))).toBeLessThan(1e-5);
      }
    }
    expect(maxDiff(cache.get(`${P}hook_sae_output`), x)).toBe(0);
    tf.dispose([logits, clean.logits]);
    cache.dispose();
    clean.cache.dispose();
  });

  it('ablating a latent on hook_sae_acts_post changes hook_sae_recons by exactly −act × W_dec row (error term unchanged)', () => {
    const names = [`${P}hook_sae_acts_post`, `${P}hook_sae_recons`, `${P}hook_sae_error`, `${P}hook_sae_output`];
    const clean = runWithSaeCache(model, [tokens], sae, { names, useErrorTerm: true });
    const acts = clean.cache.get(`${P}hook_sae_acts_post`).dataSync();
    const T = tokens.length;
    // The latent firing most, so the ablation is visible.
    let latent = 3;
    let best = -1;
    for (let j = 0; j < 96; j++) {
      let s = 0;
      for (let p = 0; p < T; p++) s += acts[p * 96 + j];
      if (s > best) (best = s), (latent = j);
    }
    expect(best).toBeGreaterThan(0);
    const mask = tf.oneHot([latent], 96).reshape([1, 1, 96]);
    const ablated = runWithSaeCache(model, [tokens], sae, {
      names,
      useErrorTerm: true,
      fwdHooks: [[`${P}hook_sae_acts_post`, (a) => tf.mul(a, tf.sub(1, mask))]],
    });
    const row = sae.tensors().W_dec.data.subarray(latent * 64, latent * 64 + 64);
    const r0 = clean.cache.get(`${P}hook_sae_recons`).dataSync();
    const r1 = ablated.cache.get(`${P}hook_sae_recons`).dataSync();
    const o0 = clean.cache.get(`${P}hook_sae_output`).dataSync();
    const o1 = ablated.cache.get(`${P}hook_sae_output`).dataSync();
    for (let p = 0; p < T; p++) {
      for (let i = 0; i < 64; i++) {
        const want = -acts[p * 96 + latent] * row[i];
        expect(Math.abs(r1[p * 64 + i] - r0[p * 64 + i] - want)).toBeLessThan(1e-5);
        expect(Math.abs(o1[p * 64 + i] - o0[p * 64 + i] - want)).toBeLessThan(1e-5);
      }
    }
    expect(maxDiff(ablated.cache.get(`${P}hook_sae_error`), clean.cache.get(`${P}hook_sae_error`))).toBe(0);
    expect(maxDiff(ablated.logits, clean.logits)).toBeGreaterThan(1e-4);
    for (const r of [clean, ablated]) (r.logits.dispose(), r.cache.dispose());
    mask.dispose();
  });

  it('the error term is a constant in the backward pass (SAELens computes it under no_grad)', () => {
    // A decoder of zeros reconstructs nothing: the spliced output is all error, so no gradient
    // reaches activations upstream of the hook, while the forward value is unchanged.
    const zero = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 16, hookName: HOOK }), 2);
    zero.W_dec.assign(tf.zeros([16, 64]));
    const metric = (l: tf.Tensor3D) => tf.sum(l.slice([0, tokens.length - 1, 0], [1, 1, 5])) as tf.Scalar;
    const plain = model.gradients([tokens], 'blocks.1.hook_resid_pre', metric);
    const spliced = model.gradients([tokens], 'blocks.1.hook_resid_pre', metric, { fwdHooks: spliceSae(model, zero, { useErrorTerm: true }) });
    expect(spliced.value).toBe(plain.value);
    const g = spliced.grads.get('blocks.1.hook_resid_pre')!;
    expect(g.dataSync().every((v) => v === 0)).toBe(true);
    expect(plain.grads.get('blocks.1.hook_resid_pre')!.dataSync().some((v) => v !== 0)).toBe(true);
    for (const r of [plain, spliced]) for (const t of r.grads.values()) t.dispose();
    zero.dispose();
  });

  it('splices hook_z SAEs over flattened heads, or over one head with hook_head_index', () => {
    const zHook = 'blocks.0.attn.hook_z';
    const { nHeads, dHead } = model.cfg;
    const flat = Sae.init(makeSaeConfig({ architecture: 'topk', k: 8, dIn: nHeads * dHead, dSae: 32, hookName: zHook }), 3);
    const base = model.run([tokens]);
    const same = runWithSae(model, [tokens], flat, { useErrorTerm: true });
    expect(maxDiff(same, base)).toBeLessThanOrEqual(1e-6);
    const c = runWithSaeCache(model, [tokens], flat, { names: [`${zHook}.hook_sae_acts_post`] });
    expect(c.cache.get(`${zHook}.hook_sae_acts_post`).shape).toEqual([1, tokens.length, 32]);
    c.logits.dispose();
    c.cache.dispose();
    // One head: only head 2 of hook_z is replaced by the reconstruction.
    const one = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: dHead, dSae: 16, hookName: zHook, hookHeadIndex: 2 }), 4);
    const clean = model.runWithCache([tokens], { names: [zHook] });
    const spliced = runWithSaeCache(model, [tokens], one, { names: [zHook, `${zHook}.hook_sae_recons`] });
    const z0 = clean.cache.get(zHook).dataSync();
    const z1 = spliced.cache.get(zHook).dataSync();
    const rec = spliced.cache.get(`${zHook}.hook_sae_recons`).dataSync();
    for (let p = 0; p < tokens.length; p++)
      for (let h = 0; h < nHeads; h++)
        for (let i = 0; i < dHead; i++) {
          const k = (p * nHeads + h) * dHead + i;
          expect(z1[k]).toBe(h === 2 ? rec[p * dHead + i] : z0[k]);
        }
    for (const r of [clean, spliced]) (r.logits.dispose(), r.cache.dispose());
    tf.dispose([base, same]);
    flat.dispose();
    one.dispose();
  });

  it('does not leak tensors over repeated calls', () => {
    const once = () => {
      runWithSae(model, [tokens], sae, { useErrorTerm: true }).dispose();
      runWithSae(model, [tokens], sae, { fwdHooks: [[`${P}hook_sae_acts_post`, (a) => tf.relu(tf.sub(a, 0.1))]] }).dispose();
      const r = runWithSaeCache(model, [tokens], sae, { useErrorTerm: true, fwdHooks: [[`${P}hook_sae_recons`, (a) => tf.mul(a, 0.5)]] });
      r.logits.dispose();
      r.cache.dispose();
    };
    once();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) once();
    expect(tf.memory().numTensors).toBe(n);
  });

  it('rejects SAEs that do not fit the model, and unknown hook_sae_* names, in one line', () => {
    const wrongHook = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 8, hookName: 'blocks.9.hook_resid_post' }), 1);
    expect(errorOf(() => spliceSae(model, wrongHook))).toMatch(/blocks\.9\.hook_resid_post.*5 layers/);
    const wrongDim = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 32, dSae: 8, hookName: HOOK }), 1);
    expect(errorOf(() => spliceSae(model, wrongDim))).toMatch(/d_in 32.*blocks\.1\.hook_resid_post.*\[64\]/);
    const pattern = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 8, hookName: 'blocks.0.attn.hook_pattern' }), 1);
    expect(errorOf(() => spliceSae(model, pattern))).toMatch(/attention-pattern/);
    expect(errorOf(() => runWithSae(model, [tokens], sae, { fwdHooks: [[`${P}hook_sae_error`, () => {}]] }))).toMatch(/useErrorTerm/);
    expect(errorOf(() => runWithSae(model, [tokens], sae, { fwdHooks: [['blocks.2.hook_resid_post.hook_sae_acts_post', () => {}]] }))).toMatch(/no SAE is spliced/);
    expect(errorOf(() => runWithSae(model, [tokens], [sae, sae]))).toMatch(/two SAEs/);
    [wrongHook, wrongDim, pattern].forEach((s) => s.dispose());
  });
});
