import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { finalRow, metricPerPrompt, normalise } from '../src/patching/metrics.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { PatchingSession } from '../src/patching/session.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { makeSaeConfig } from '../src/sae/config.js';
import { Sae } from '../src/sae/sae.js';
import { latentActivationPatching, latentAttribution, topLatents } from '../src/sae/attribution.js';
import { runWithSaeCache, saeGradients } from '../src/sae/splice.js';
import { modelPath } from './helpers/fixtures.js';

// stories260K: 5 layers, d_model 64. The SAE reads blocks.2.hook_resid_post = blocks.3.hook_resid_pre.
const HOOK = 'blocks.2.hook_resid_post';

function ld(model: HookedModel, pairs: PromptPair[], tokens: number[][], hooks: [string, (x: tf.Tensor) => tf.Tensor][] = []): number {
  return tf.tidy(() => {
    const logits = model.run(tokens, { fwdHooks: hooks, finalPositionOnly: true });
    return tf.mean(metricPerPrompt('logit_diff', finalRow(logits), { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) })).dataSync()[0];
  });
}

describe.each(['standard', 'topk'] as const)('SAE latent attribution (%s SAE on stories260K)', (architecture) => {
  let model: HookedModel;
  let sae: Sae;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(modelPath('stories260K'));
    sae = Sae.init(makeSaeConfig({ architecture, dIn: 64, dSae: 96, hookName: HOOK, k: architecture === 'topk' ? 8 : undefined }), 3);
    // A non-zero b_enc / b_dec so the affine parts are exercised.
    sae.b_dec.assign(tf.randomNormal([64], 0, 0.1, 'float32', 1));
    sae.b_enc.assign(tf.randomNormal([96], 0, 0.1, 'float32', 2));
    pairs = syntheticIoiPairs(model, { n: 5, seed: 4 }).pairs;
  });
  afterAll(() => {
    sae?.dispose();
    model?.dispose();
  });

  it.each(['atp', 'relp'] as const)('%s: latents + error term add up to the score of the whole hook activation', (method) => {
    const a = latentAttribution(model, sae, pairs, method);
    expect(a.scores).toHaveLength(96);
    expect(a.active.length).toBeGreaterThan(0);
    let total = a.error;
    a.scores.forEach((s) => (total += s));
    // The suite's resid_pre grid of layer 3 is the same activation, per position.
    const session = new PatchingSession(model, pairs);
    const grid = session.grid('resid_pre', method);
    session.dispose();
    const wholeHook = (grid.scores as number[][])[3].reduce((x, y) => x + y, 0);
    expect(Math.abs(total - wholeHook)).toBeLessThan(1e-4 * Math.max(1, Math.abs(wholeHook)));
    expect(Math.abs(a.mClean - grid.ld_clean)).toBeLessThan(1e-4);
    expect(Math.abs(a.mCorrupt - grid.ld_corrupt)).toBeLessThan(1e-4);
    // Inactive latents (zero in both runs) get exactly zero.
    const inactive = new Set(a.active);
    a.scores.forEach((s, f) => inactive.has(f) || expect(s).toBe(0));
  });

  it('activation patching of a latent = the hand-built patch x_corrupt + (a_clean − a_corrupt)_f · W_dec[f], batched or not', () => {
    const atp = latentAttribution(model, sae, pairs, 'atp');
    const latents = topLatents(atp, 3).map((t) => t.latent);
    // maxBatchTokens small enough to need several forwards.
    const act = latentActivationPatching(model, sae, pairs, latents, { maxBatchTokens: pairs.length * pairs[0].clean.length * 2 });
    const clean = pairs.map((p) => p.clean);
    const corrupt = pairs.map((p) => p.corrupt);
    const { logits, cache } = model.runWithCache(clean, { names: [HOOK] });
    logits.dispose();
    const xClean = cache.get(HOOK).reshape([-1, 64]) as tf.Tensor2D;
    for (const f of latents) {
      const hook: [string, (x: tf.Tensor) => tf.Tensor] = [
        HOOK,
        (x) => {
          const rows = x.reshape([-1, 64]) as tf.Tensor2D;
          const delta = tf.sub(sae.encode(xClean).slice([0, f], [-1, 1]), sae.encode(rows).slice([0, f], [-1, 1]));
          return tf.add(rows, tf.matMul(delta, sae.W_dec.slice([f, 0], [1, 64]))).reshape(x.shape);
        },
      ];
      const expected = normalise(ld(model, pairs, corrupt, [hook]), ld(model, pairs, clean), ld(model, pairs, corrupt));
      expect(Math.abs(act.scores[f] - expected)).toBeLessThan(1e-4);
    }
    cache.dispose();
    // Latents not asked for are NaN; AtP is a first-order estimate of the same quantity.
    expect(act.scores.filter((s) => !Number.isNaN(s))).toHaveLength(latents.length);
    for (const f of latents) expect(Math.sign(act.scores[f])).toBe(Math.sign(atp.scores[f]));
  });

  it.each(['atp', 'relp'] as const)('%s: saeGradients at hook_sae_acts_post (autodiff through the spliced SAE) give the same latent scores', (method) => {
    const a = latentAttribution(model, sae, pairs, method);
    const name = `${HOOK}.hook_sae_acts_post`;
    const acts = (tokens: number[][]) => {
      const { logits, cache } = runWithSaeCache(model, tokens, sae, { names: name, useErrorTerm: true });
      logits.dispose();
      const t = cache.get(name).clone();
      cache.dispose();
      return t;
    };
    const aClean = acts(pairs.map((p) => p.clean));
    const aCorrupt = acts(pairs.map((p) => p.corrupt));
    const T = pairs[0].clean.length;
    const targets = { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) };
    const rules = method === 'relp' ? (['LN', 'Identity', 'Half'] as const) : [];
    const g = saeGradients(model, pairs.map((p) => p.corrupt), sae, [name], (logits) => tf.mean(metricPerPrompt('logit_diff', finalRow(logits.slice([0, T - 1, 0], [-1, 1, -1])), targets)), {
      useErrorTerm: true,
      rules: [...rules],
    });
    expect(Math.abs(g.value - a.mCorrupt)).toBeLessThan(1e-4);
    const grad = g.grads.get(name)!;
    expect(grad.shape).toEqual([pairs.length, T, 96]);
    const scores = tf.tidy(() => tf.div(tf.sum(tf.mul(tf.sub(aClean, aCorrupt), grad), [0, 1]), a.mClean - a.mCorrupt).dataSync());
    const scale = Math.max(...Array.from(a.scores, Math.abs));
    scores.forEach((x, f) => expect(Math.abs(x - a.scores[f])).toBeLessThan(1e-4 * Math.max(1, scale)));
    tf.dispose([aClean, aCorrupt, grad]);
  });

  it('saeGradients: unknown SAE points are one-line errors', () => {
    expect(() => saeGradients(model, [pairs[0].clean], sae, [`${HOOK}.hook_sae_nope`], (l) => tf.sum(l) as tf.Scalar)).toThrow(/unknown hook/);
    expect(() => saeGradients(model, [pairs[0].clean], sae, [`${HOOK}.hook_sae_error`], (l) => tf.sum(l) as tf.Scalar)).toThrow(/only with useErrorTerm/);
  });

  it('does not leak tensors', () => {
    latentAttribution(model, sae, pairs, 'relp');
    latentActivationPatching(model, sae, pairs, [0, 1]);
    const before = tf.memory().numTensors;
    const gradOnce = () => saeGradients(model, [pairs[0].clean], sae, [`${HOOK}.hook_sae_acts_pre`], (l) => tf.sum(l) as tf.Scalar).grads.forEach((t) => t.dispose());
    gradOnce();
    for (let i = 0; i < 3; i++) {
      gradOnce();
      latentAttribution(model, sae, pairs, 'atp');
      latentActivationPatching(model, sae, pairs, [0, 1]);
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects out-of-range latents in one line', () => {
    expect(() => latentActivationPatching(model, sae, pairs, [96])).toThrow(/SAE latent 96 is out of range \(d_sae 96\)/);
  });
});
