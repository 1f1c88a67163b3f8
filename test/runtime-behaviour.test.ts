import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { padBatch } from '../src/hooks/token-batch.js';
import { HooklensError } from '../src/errors.js';
import { loadReference, maxScaledDiff, modelPath } from './helpers/fixtures.js';

const MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'stories260K'] as const;

function logitDiffMetric(answer: number, wrong: number) {
  return (logits: tf.Tensor3D) => {
    const [, T] = logits.shape;
    const last = logits.slice([0, T - 1, 0], [-1, 1, -1]);
    return tf.mean(tf.sub(last.slice([0, 0, answer], [-1, 1, 1]), last.slice([0, 0, wrong], [-1, 1, 1]))).asScalar();
  };
}

describe.each(MODELS)('%s runtime behaviour', (name) => {
  const ref = loadReference(name);
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it.each(['right', 'left'] as const)('a %s-padded batch gives each prompt the logits it gets alone', (side) => {
    const prompts = [ref.tokens, ref.tokens.slice(0, 3), ref.tokens.slice(2, 7), [ref.tokens[1]]];
    const batch = padBatch(prompts, side, 0);
    const logits = model.run(batch);
    const all = logits.dataSync();
    const V = model.cfg.dVocab;
    prompts.forEach((p, b) => {
      const alone = model.run([p]);
      const offset = side === 'left' ? batch.seqLen - p.length : 0;
      const got = all.slice((b * batch.seqLen + offset) * V, (b * batch.seqLen + offset + p.length) * V);
      expect(maxScaledDiff(got, alone.dataSync())).toBeLessThan(1e-5);
      alone.dispose();
    });
    logits.dispose();
  });

  it('zero-ablating attn_out leaves upstream alone and makes resid_mid equal resid_pre', () => {
    const names = ['hook_embed', 'blocks.0.attn.hook_z', 'blocks.0.hook_resid_pre', 'blocks.0.hook_resid_mid', 'blocks.0.hook_mlp_out'];
    const clean = model.runWithCache(ref.tokens, { names });
    const ablated = model.runWithCache(ref.tokens, { names, fwdHooks: [['blocks.0.hook_attn_out', (x) => tf.zerosLike(x)]] });
    const arr = (c: typeof clean, n: string) => Array.from(c.cache.get(n).dataSync());
    expect(arr(ablated, 'hook_embed')).toEqual(arr(clean, 'hook_embed'));
    expect(arr(ablated, 'blocks.0.attn.hook_z')).toEqual(arr(clean, 'blocks.0.attn.hook_z'));
    expect(arr(ablated, 'blocks.0.hook_resid_mid')).toEqual(arr(ablated, 'blocks.0.hook_resid_pre'));
    expect(maxScaledDiff(arr(ablated, 'blocks.0.hook_mlp_out'), arr(clean, 'blocks.0.hook_mlp_out'))).toBeGreaterThan(1e-3);
    expect(maxScaledDiff(ablated.logits.dataSync(), clean.logits.dataSync())).toBeGreaterThan(1e-3);
    for (const r of [clean, ablated]) (r.cache.dispose(), r.logits.dispose());
  });

  it('ablating one head through hook_z removes exactly that head’s result from attn_out', () => {
    const l = model.cfg.nLayers - 1;
    const h = 1;
    const names = [`blocks.${l}.attn.hook_z`, `blocks.${l}.hook_attn_out`];
    const clean = model.runWithCache(ref.tokens, { names });
    const ablate = (z: tf.Tensor) => {
      const mask = tf.oneHot([h], model.cfg.nHeads).reshape([1, 1, model.cfg.nHeads, 1]);
      return tf.mul(z, tf.sub(1, mask));
    };
    const ablated = model.runWithCache(ref.tokens, { names, fwdHooks: [[`blocks.${l}.attn.hook_z`, ablate]] });
    const results = clean.cache.headResults(l);
    const expected = tf.tidy(() => tf.sub(clean.cache.get(`blocks.${l}.hook_attn_out`), results.slice([0, 0, h, 0], [-1, -1, 1, -1]).squeeze([2])));
    expect(maxScaledDiff(ablated.cache.get(`blocks.${l}.hook_attn_out`).dataSync(), expected.dataSync())).toBeLessThan(1e-5);
    tf.dispose([results, expected]);
    for (const r of [clean, ablated]) (r.cache.dispose(), r.logits.dispose());
  });

  it('scaling the final residual leaves logits almost unchanged (final norm is scale-invariant)', () => {
    const L = model.cfg.nLayers - 1;
    const plain = model.run(ref.tokens);
    const scaled = model.runWithHooks(ref.tokens, [[`blocks.${L}.hook_resid_post`, (x) => tf.mul(x, 3)]]);
    expect(maxScaledDiff(scaled.dataSync(), plain.dataSync())).toBeLessThan(1e-3);
    tf.dispose([plain, scaled]);
  });

  it('gradients at several hooks in one backward pass match finite differences', () => {
    const metric = logitDiffMetric(10, 20);
    const hooks = ['blocks.0.hook_resid_pre', `blocks.${model.cfg.nLayers - 1}.hook_resid_mid`, 'blocks.0.attn.hook_pattern', 'blocks.1.mlp.hook_post'];
    const { value, grads } = model.gradients(ref.tokens, hooks, metric);
    const base = model.run(ref.tokens);
    const baseValue = metric(base).dataSync()[0];
    base.dispose();
    expect(value).toBeCloseTo(baseValue, 5);
    for (const hook of hooks) {
      const g = grads.get(hook)!;
      // Unit-norm random direction: a small step stays in the linear regime.
      const dir = tf.tidy(() => {
        const r = tf.randomNormal(g.shape, 0, 1, 'float32', 7);
        return tf.div(r, tf.norm(r));
      });
      const eps = 1e-2;
      const f = (s: number) => {
        const out = model.runWithHooks(ref.tokens, [[hook, (x) => tf.add(x, tf.mul(dir, s))]]);
        const v = metric(out).dataSync()[0];
        out.dispose();
        return v;
      };
      const fd = (f(eps) - f(-eps)) / (2 * eps);
      const analytic = tf.sum(tf.mul(g, dir)).dataSync()[0];
      expect(Math.abs(fd - analytic), `${hook}: fd ${fd} vs grad ${analytic}`).toBeLessThan(1e-3 * Math.max(1, Math.abs(fd)));
      dir.dispose();
    }
    for (const g of grads.values()) g.dispose();
  });

  it('logit lens of the final residual reproduces the logits; head results sum to attn_out', () => {
    const { logits, cache } = model.runWithCache(ref.tokens);
    const lens = cache.logitLens();
    expect(lens.labels.at(-1)).toBe('final_post');
    expect(lens.labels[0]).toBe('0_pre');
    const last = lens.logits.slice([lens.labels.length - 1], [1]);
    expect(maxScaledDiff(last.dataSync(), logits.dataSync())).toBeLessThan(1e-5);
    const { results, labels } = cache.stackHeadResults();
    expect(labels.length).toBe(model.cfg.nLayers * model.cfg.nHeads);
    const H = model.cfg.nHeads;
    const sum0 = tf.tidy(() => {
      const s = tf.sum(results.slice([0], [H]), 0);
      const b = model.hasWeight('blocks.0.attn.b_O') ? model.weight('blocks.0.attn.b_O') : tf.scalar(0);
      return tf.add(s, b);
    });
    expect(maxScaledDiff(sum0.dataSync(), cache.get('blocks.0.hook_attn_out').dataSync())).toBeLessThan(1e-5);
    const stack = cache.stack('hook_resid_post');
    expect(stack.shape).toEqual([model.cfg.nLayers, 1, ref.tokens.length, model.cfg.dModel]);
    tf.dispose([last, results, sum0, stack, lens.logits, logits]);
    cache.dispose();
  });

  it('opt-in hook_result equals per-head results recomputed from hook_z', () => {
    const { logits, cache } = model.runWithCache(ref.tokens, { names: ['blocks.1.attn.hook_result', 'blocks.1.attn.hook_z'] });
    const plain = model.run(ref.tokens);
    expect(maxScaledDiff(logits.dataSync(), plain.dataSync())).toBeLessThan(1e-5);
    const cached = cache.get('blocks.1.attn.hook_result');
    const { nHeads: H, dHead: dh, dModel: d } = model.cfg;
    const recomputed = tf.tidy(() => {
      const z = cache.get('blocks.1.attn.hook_z');
      const T = z.shape[1]!;
      const W_O = model.weight('blocks.1.attn.W_O').reshape([H, dh, d]);
      return tf.transpose(tf.matMul(tf.transpose(z.reshape([T, H, dh]), [1, 0, 2]), W_O), [1, 0, 2]).reshape([1, T, H, d]);
    });
    expect(maxScaledDiff(cached.dataSync(), recomputed.dataSync())).toBeLessThan(1e-5);
    tf.dispose([logits, plain, recomputed]);
    cache.dispose();
  });

  it('resuming at a layer from its cached resid_pre reproduces the full run', () => {
    const l = model.cfg.nLayers - 1;
    const { logits, cache } = model.runWithCache(ref.tokens, { names: [`blocks.${l}.hook_resid_pre`] });
    const resumed = model.run(ref.tokens, { resume: { layer: l, residPre: cache.get(`blocks.${l}.hook_resid_pre`) } });
    expect(maxScaledDiff(resumed.dataSync(), logits.dataSync())).toBeLessThan(1e-6);
    tf.dispose([logits, resumed]);
    cache.dispose();
  });

  it('stopAtLayer: disposing the returned residual leaves the cached copy of the same activation usable', () => {
    const name = 'blocks.0.hook_resid_post';
    const { logits: resid, cache } = model.runWithCache(ref.tokens, { names: [name], stopAtLayer: 0 });
    const expected = Float32Array.from(resid.dataSync());
    resid.dispose();
    expect(Array.from(cache.get(name).dataSync())).toEqual(Array.from(expected));
    cache.dispose();
  });

  it('position slices keep only the requested positions', () => {
    const { logits, cache } = model.runWithCache(ref.tokens, { names: ['blocks.0.hook_resid_post', 'blocks.0.attn.hook_pattern'], posSlice: -1 });
    const full = model.runWithCache(ref.tokens, { names: ['blocks.0.hook_resid_post'] });
    const T = ref.tokens.length;
    expect(cache.get('blocks.0.hook_resid_post').shape).toEqual([1, 1, model.cfg.dModel]);
    expect(cache.get('blocks.0.attn.hook_pattern').shape).toEqual([1, model.cfg.nHeads, 1, T]);
    const lastRow = full.cache.get('blocks.0.hook_resid_post').slice([0, T - 1, 0], [1, 1, -1]);
    expect(Array.from(cache.get('blocks.0.hook_resid_post').dataSync())).toEqual(Array.from(lastRow.dataSync()));
    tf.dispose([logits, lastRow, full.logits]);
    cache.dispose();
    full.cache.dispose();
  });

  it('does not leak tensors over 50 repeated calls', () => {
    const warm = () => {
      model.run(ref.tokens).dispose();
      const r = model.runWithCache(ref.tokens);
      r.cache.dispose();
      r.logits.dispose();
      const g = model.gradients(ref.tokens, ['blocks.0.hook_resid_post', 'blocks.0.attn.hook_result'], logitDiffMetric(3, 4), { cacheNames: 'blocks.*.hook_resid_pre' });
      for (const t of g.grads.values()) t.dispose();
      g.cache?.dispose();
      model.generate(ref.tokens.slice(0, 3), 2);
    };
    warm();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) warm();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects unknown hooks, bad replacements, out-of-vocab ids and over-long prompts with clear errors', () => {
    expect(() => model.runWithCache(ref.tokens, { names: ['blocks.0.hook_nope'] })).toThrow(/unknown hook 'blocks\.0\.hook_nope'/);
    expect(() => model.runWithCache(ref.tokens, { names: ['blocks.99.hook_resid_post'] })).toThrow(/has \d+ layers/);
    expect(() => model.runWithHooks(ref.tokens, [['blocks.0.hook_resid_pre', (x) => tf.zeros([1, 1, x.shape[2]!])]])).toThrow(/returned shape/);
    expect(() => model.run([0, model.cfg.dVocab])).toThrow(HooklensError);
    expect(() => model.run([0, model.cfg.dVocab])).toThrow(/outside the vocabulary/);
    expect(() => model.run(new Array(model.cfg.nCtx + 1).fill(1))).toThrow(/context length/);
    expect(() => model.runWithCache(ref.tokens, { names: 'nothing.*' })).toThrow(/matches no hook/);
  });
});
