import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import type { Component } from '../src/patching/types.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { loadReference, modelPath } from './helpers/fixtures.js';

const ALL_RULES = ['LN', 'Identity', 'Half', 'AH'] as const;

function refPair(name: 'tiny-gpt2' | 'tiny-llama' | 'tiny-qwen2' | 'stories260K'): PromptPair {
  const p = loadReference(name).patching as unknown as PromptPair;
  return { clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong };
}

const flat = (g: { scores: number[][] | number[][][] }) => (g.scores as number[][]).flat(2) as number[];

describe.each(['tiny-gpt2', 'tiny-llama', 'stories260K'] as const)('%s: RelP rules', (name) => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it('leave forward values bit-identical', () => {
    const tokens = refPair(name).clean;
    const plain = model.run(tokens);
    const ruled = model.run(tokens, { rules: [...ALL_RULES] });
    expect(Array.from(ruled.dataSync())).toEqual(Array.from(plain.dataSync()));
    tf.dispose([plain, ruled]);
  });
});

// A bias-free Llama (no biases anywhere, RMSNorm without bias, untied/tied linear unembedding):
// with LN, Identity, Half and AH every layer passes relevance on unchanged, so at every residual
// stream cut Σ activation · modified-gradient equals the output logit.
describe.each(['tiny-llama', 'stories260K'] as const)('%s: LRP relevance is conserved', (name) => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  function relevanceAtCuts(rules: readonly (typeof ALL_RULES)[number][]) {
    const { clean, answer } = refPair(name);
    const T = clean.length;
    const cuts = ['hook_embed', ...Array.from({ length: model.cfg.nLayers }, (_, l) => `blocks.${l}.hook_resid_mid`), `blocks.${model.cfg.nLayers - 1}.hook_resid_post`];
    const metric = (logits: tf.Tensor3D) => logits.slice([0, T - 1, answer], [1, 1, 1]).sum().asScalar();
    const { value, grads, cache } = model.gradients(clean, cuts, metric, { rules: [...rules], cacheNames: cuts });
    const sums = cuts.map((n) => tf.tidy(() => tf.sum(tf.mul(cache!.get(n), grads.get(n)!)).dataSync()[0]));
    cache!.dispose();
    tf.dispose([...grads.values()]);
    return { value, sums };
  }

  it('with LN + Identity + Half + AH', () => {
    const { value, sums } = relevanceAtCuts(ALL_RULES);
    for (const s of sums) expect(Math.abs(s - value) / Math.abs(value)).toBeLessThan(1e-3);
  });

  it('but not with plain gradients', () => {
    const { value, sums } = relevanceAtCuts([]);
    expect(Math.max(...sums.map((s) => Math.abs(s - value) / Math.abs(value)))).toBeGreaterThan(1e-2);
  });
});

// Freezing the final norm's scale and zero-ablating the last MLP makes everything downstream of
// the last layer's attention linear, so there the first-order estimate is exact: AtP must equal
// activation patching.
describe.each(['tiny-gpt2', 'tiny-llama'] as const)('%s: AtP is exact where the model is linear in the patched activation', (name) => {
  let model: HookedModel;
  let session: PatchingSession;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    const last = model.cfg.nLayers - 1;
    const linearise: FwdHook[] = [
      ['ln_final.hook_scale', (s) => tf.fill(s.shape, 2.5)],
      [`blocks.${last}.hook_mlp_out`, (x) => tf.zerosLike(x)],
    ];
    session = new PatchingSession(model, [refPair(name)], { fwdHooks: linearise });
  });
  afterAll(() => {
    session?.dispose();
    model?.dispose();
  });

  const lastLayerRow = (g: { scores: number[][] | number[][][] }) => (g.scores as number[][])[model.cfg.nLayers - 1].flat() as number[];

  it.each(['attn_out', 'resid_mid', 'resid_post', 'head_out', 'head_out_pos', 'v', 'pattern'] as Component[])('%s (last layer)', (component) => {
    const act = lastLayerRow(session.grid(component, 'activation'));
    const atp = lastLayerRow(session.grid(component, 'atp'));
    expect(act.some((v) => Math.abs(v) > 1e-3)).toBe(true);
    atp.forEach((v, i) => expect(Math.abs(v - act[i]), `site ${i}`).toBeLessThan(1e-4));
  });

  it.each(['q', 'k'] as Component[])('%s with the AtP* QK fix (last layer), where plain AtP is not exact', (component) => {
    const act = lastLayerRow(session.grid(component, 'activation'));
    const fixed = lastLayerRow(session.grid(component, 'atp', { qkFix: true }));
    const plain = lastLayerRow(session.grid(component, 'atp'));
    fixed.forEach((v, i) => expect(Math.abs(v - act[i]), `site ${i}`).toBeLessThan(1e-4));
    expect(Math.max(...plain.map((v, i) => Math.abs(v - act[i])))).toBeGreaterThan(1e-4);
  });
});

describe('tiny-qwen2: grids are consistent across components, pairs and batching', () => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-qwen2'));
  });
  afterAll(() => model?.dispose());

  it('per-head attributions add up to attn_out (AtP and RelP)', () => {
    const s = new PatchingSession(model, [refPair('tiny-qwen2')]);
    for (const method of ['atp', 'relp'] as const) {
      const byHeadPos = s.grid('head_out_pos', method).scores as number[][][]; // [L, T, H]
      const attn = s.grid('attn_out', method).scores as number[][]; // [L, T]
      const heads = s.grid('head_out', method).scores as number[][]; // [L, H]
      byHeadPos.forEach((layer, l) => {
        layer.forEach((row, p) => expect(Math.abs(row.reduce((a, b) => a + b, 0) - attn[l][p])).toBeLessThan(1e-4));
        heads[l].forEach((v, h) => expect(Math.abs(layer.reduce((a, row) => a + row[h], 0) - v)).toBeLessThan(1e-4));
      });
    }
    s.dispose();
  });

  it('several pairs: the grid is the pair-mean effect, identical however sites are packed into batches', () => {
    const base = refPair('tiny-qwen2');
    const pairs: PromptPair[] = [
      base,
      { ...base, clean: base.clean.map((t, i) => (i === 2 ? 60 : t)), corrupt: base.corrupt.map((t, i) => (i === 2 ? 60 : t)) },
      { ...base, answer: 30, wrong: 31 },
    ];
    const big = new PatchingSession(model, pairs);
    const small = new PatchingSession(model, pairs, { maxBatchTokens: 16 });
    const gBig = big.grid('mlp_out', 'activation');
    const gSmall = small.grid('mlp_out', 'activation');
    flat(gBig).forEach((v, i) => expect(Math.abs(v - flat(gSmall)[i])).toBeLessThan(1e-5));
    // Un-normalise and compare with per-pair sessions: mean of per-pair patched metrics.
    const singles = pairs.map((p) => new PatchingSession(model, [p]));
    const effect = (g: ReturnType<PatchingSession['grid']>) => flat(g).map((v) => v * (g.ld_clean - g.ld_corrupt) + g.ld_corrupt);
    const perPair = singles.map((s) => effect(s.grid('mlp_out', 'activation')));
    effect(gBig).forEach((v, i) => expect(Math.abs(v - perPair.reduce((a, e) => a + e[i], 0) / pairs.length)).toBeLessThan(1e-4));
    const atpMulti = flat(big.grid('attn_out', 'atp')).map((v) => v * (gBig.ld_clean - gBig.ld_corrupt));
    const atpSingles = singles.map((s) => {
      const g = s.grid('attn_out', 'atp');
      return flat(g).map((v) => v * (g.ld_clean - g.ld_corrupt));
    });
    atpMulti.forEach((v, i) => expect(Math.abs(v - atpSingles.reduce((a, e) => a + e[i], 0) / pairs.length)).toBeLessThan(1e-4));
    [big, small, ...singles].forEach((s) => s.dispose());
  });

  it('noising: patching the corrupted token back in at layer 0 moves all the way to the corrupt run', () => {
    const p = refPair('tiny-qwen2');
    const pos = p.clean.findIndex((t, i) => t !== p.corrupt[i]);
    const s = new PatchingSession(model, [p], { direction: 'noising' });
    const g = s.grid('resid_pre', 'activation').scores as number[][];
    expect(g[0][pos]).toBeCloseTo(1, 5);
    g[0].forEach((v, i) => i !== pos && expect(Math.abs(v)).toBeLessThan(1e-6));
    s.dispose();
  });

  it('GradDrop gives non-negative magnitudes of the grid shape', () => {
    const s = new PatchingSession(model, [refPair('tiny-qwen2')]);
    const g = s.grid('attn_out', 'atp', { gradDrop: true });
    expect(g.variant).toEqual(['graddrop']);
    expect(g.shape).toEqual([3, 8]);
    expect(flat(g).every((v) => v >= 0)).toBe(true);
    expect(flat(g).some((v) => v > 0)).toBe(true);
    expect(() => s.grid('attn_out', 'atp', { qkFix: true })).toThrow(/q and k/);
    s.dispose();
  });
});

// mlp_post: one MLP neuron at every position. hook_mlp_out is linear in hook_post (W_out, b_out),
// so per-neuron AtP/RelP scores of a layer add up to that layer's mlp_out scores over positions;
// a neuron's activation-patching score equals a brute-force run with that neuron's clean value.
describe.each(['tiny-gpt2', 'tiny-llama'] as const)('%s: per-neuron grids (mlp_post)', (name) => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it('attributions add up to mlp_out over positions (AtP and RelP)', () => {
    const s = new PatchingSession(model, [refPair(name)]);
    for (const method of ['atp', 'relp'] as const) {
      const neurons = s.grid('mlp_post', method);
      expect(neurons.shape).toEqual([model.cfg.nLayers, model.cfg.dMlp]);
      const byPos = s.grid('mlp_out', method).scores as number[][];
      (neurons.scores as number[][]).forEach((row, l) => expect(Math.abs(row.reduce((a, b) => a + b, 0) - byPos[l].reduce((a, b) => a + b, 0)), `${method} layer ${l}`).toBeLessThan(1e-4));
    }
    s.dispose();
  });

  it('activation patching of a neuron equals a brute-force patched run', () => {
    const pair = refPair(name);
    const s = new PatchingSession(model, [pair]);
    const grid = s.grid('mlp_post', 'activation').scores as number[][];
    const l = model.cfg.nLayers - 1;
    // The neuron with the largest |score| in the last layer.
    const j = grid[l].reduce((best, v, i) => (Math.abs(v) > Math.abs(grid[l][best]) ? i : best), 0);
    const hook = `blocks.${l}.mlp.hook_post`;
    const { logits: cl, cache } = model.runWithCache([pair.clean], { names: [hook] });
    const cleanPost = cache.get(hook);
    const ld = (x: tf.Tensor) => { const v = x.dataSync(); const V = model.cfg.dVocab; const o = (x.shape[1]! - 1) * V; return v[o + pair.answer] - v[o + pair.wrong]; };
    const patched = model.run([pair.corrupt], {
      fwdHooks: [[hook, (x) => tf.tidy(() => { const m = tf.oneHot([j], model.cfg.dMlp).reshape([1, 1, model.cfg.dMlp]); return tf.add(tf.mul(x, tf.sub(1, m)), tf.mul(cleanPost, m)); })]],
    });
    const base = model.run([pair.corrupt]);
    const want = (ld(patched) - ld(base)) / (ld(cl) - ld(base));
    expect(Math.abs(grid[l][j]) ).toBeGreaterThan(1e-3);
    expect(Math.abs(grid[l][j] - want)).toBeLessThan(1e-4);
    tf.dispose([cl, patched, base]);
    cache.dispose();
    s.dispose();
  });
});
