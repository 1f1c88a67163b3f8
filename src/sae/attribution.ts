/**
 * Attribution to SAE latents (the sparse-feature-circuit setting, Marks et al. 2024): which latents
 * of an SAE at one hook carry a behaviour measured on prompt pairs, on the patching suite's scale
 * (denoising, normalised by M_clean − M_corrupt; 1 = restores the clean behaviour).
 *
 * The SAE is spliced with its error term, so the forward pass is the model's own:
 *     x = decode(acts) + err,   err = x − decode(encode(x)).
 * Patching latent f means acts_corrupt[f] → acts_clean[f] at every position while err stays the
 * corrupt run's (the error is its own node, as in Marks et al.).
 *
 *  - activation: that patch, exactly (batched forwards); use it on the latents worth checking.
 *  - atp:  Σ_{prompt, pos} (a_clean − a_corrupt)_f · ∂M/∂a_f on the corrupt run, where
 *          ∂M/∂a = ∂M/∂x · ∂decode/∂a (decode is affine in a). ∂M/∂x comes from one backward pass
 *          of the plain model (the spliced forward is identical), so every latent costs nothing extra.
 *  - relp: the same with the LRP-modified gradient (RelP rules) in place of ∂M/∂x.
 * The error term gets the same estimate (`error`), so Σ_f score_f + error = the AtP (RelP) score
 * of the whole hook activation at all positions — a conservation the tests check.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { DEFAULT_RELP_RULES, type RelpRule } from '../models/grad-rules.js';
import type { TokenBatch } from '../models/transformer.js';
import { finalRow, metricPerPrompt, normalise } from '../patching/metrics.js';
import type { PromptPair } from '../patching/pairs.js';
import { copiesPerForward, mean, pairBatches, rowMetrics, tileBatch, tileTargets, type CircuitMetric } from '../circuits/common.js';
import type { Sae } from './sae.js';
import { replaceAtSaeHook, saeHookLayout, toSaeRows } from './splice.js';

export type LatentMethod = 'activation' | 'atp' | 'relp';

export interface LatentAttributionOptions {
  metric?: CircuitMetric;
  /** RelP rules (default LN, Identity, Half). */
  rules?: readonly RelpRule[];
  /** Upper bound on tokens per batched forward for activation patching (default 2048). */
  maxBatchTokens?: number;
}

export interface LatentAttribution {
  method: LatentMethod;
  hook: string;
  /** Mean metric on the clean and corrupt prompts. */
  mClean: number;
  mCorrupt: number;
  /** Normalised score per latent (activation: NaN for latents not patched). [d_sae] */
  scores: Float32Array;
  /** Same estimate for the error term (atp/relp; NaN for activation). */
  error: number;
  /** Latents active (> 0) anywhere in the clean or corrupt prompts. */
  active: number[];
}

function meanMetric(model: HookedModel, tokens: TokenBatch, targets: ReturnType<typeof pairBatches>['targets'], metric: CircuitMetric, hooks: FwdHook[] = []): number {
  const logits = model.run(tokens, { finalPositionOnly: true, fwdHooks: hooks });
  const m = rowMetrics(metric, logits, targets);
  logits.dispose();
  return mean(m);
}

/** The hook's SAE rows for a batch, [N·T, d_in] (caller disposes). */
function hookRows(model: HookedModel, sae: Sae, tokens: TokenBatch): tf.Tensor2D {
  const layout = saeHookLayout(model, sae);
  const { logits, cache } = model.runWithCache(tokens, { names: [layout.hook], ...model.graph.stopFor([layout.hook]) });
  logits.dispose();
  try {
    return tf.tidy(() => toSaeRows(cache.get(layout.hook), layout));
  } finally {
    cache.dispose();
  }
}

/** Latents with a non-zero activation in either acts matrix. */
function activeLatents(a: tf.Tensor2D, b: tf.Tensor2D): number[] {
  const any = tf.tidy(() => tf.greater(tf.max(tf.maximum(a, b), 0), 0));
  const flags = any.dataSync();
  any.dispose();
  const out: number[] = [];
  flags.forEach((f, i) => f && out.push(i));
  return out;
}

/** AtP / RelP scores of every latent (and of the error term) from one backward pass. */
export function latentAttribution(model: HookedModel, sae: Sae, pairs: PromptPair[], method: 'atp' | 'relp', opts: LatentAttributionOptions = {}): LatentAttribution {
  const metric = opts.metric ?? 'logit_diff';
  const layout = saeHookLayout(model, sae);
  const { clean, corrupt, targets } = pairBatches(model, pairs);
  const mClean = meanMetric(model, clean, targets, metric);
  const rules = method === 'relp' ? [...(opts.rules ?? DEFAULT_RELP_RULES)] : [];
  // Pairs share one length, so the final position is the last one for every row. The same
  // forward caches the corrupt activation the SAE reads.
  const g = model.gradients(corrupt, [layout.hook], (logits) => tf.mean(metricPerPrompt(metric, finalRow(logits), targets)), {
    rules,
    finalPositionOnly: true,
    cacheNames: [layout.hook],
  });
  const mCorrupt = g.value;
  const grad = g.grads.get(layout.hook)!;
  const xCorrupt = tf.tidy(() => toSaeRows(g.cache!.get(layout.hook), layout));
  g.cache!.dispose();
  const xClean = hookRows(model, sae, clean);
  const aClean = tf.tidy(() => sae.encode(xClean));
  const aCorrupt = tf.tidy(() => sae.encode(xCorrupt));
  try {
    // The metric is a mean over pairs, so Σ over all rows of Δa·∂M/∂a is already the first-order ΔM.
    const denom = mClean - mCorrupt;
    const [perLatent, err] = tf.tidy(() => {
      const gRows = toSaeRows(grad, layout); // ∂M/∂x per row
      // ∂M/∂a = ∂(Σ g ⊙ decode(a))/∂a at the corrupt acts (decode is affine in a).
      const dMda = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(gRows, sae.decode(a as tf.Tensor2D, xCorrupt))))(aCorrupt);
      // Error term: Δerr · ∂M/∂x, with err = x − decode(encode(x)).
      const errDelta = tf.sub(tf.sub(xClean, sae.decode(aClean, xClean)), tf.sub(xCorrupt, sae.decode(aCorrupt, xCorrupt)));
      return [tf.sum(tf.mul(tf.sub(aClean, aCorrupt), dMda), 0), tf.sum(tf.mul(errDelta, gRows))];
    });
    const scores = Float32Array.from(perLatent.dataSync(), (x: number) => x / denom);
    const error = err.dataSync()[0] / denom;
    tf.dispose([perLatent, err]);
    return { method, hook: layout.hook, mClean, mCorrupt, scores, error, active: activeLatents(aClean, aCorrupt) };
  } finally {
    tf.dispose([grad, xClean, xCorrupt, aClean, aCorrupt]);
  }
}

/**
 * Exact activation patching of the given latents, one at a time (denoising, error term of the
 * corrupt run kept). Returns normalised scores in a [d_sae] array, NaN for latents not patched.
 */
export function latentActivationPatching(model: HookedModel, sae: Sae, pairs: PromptPair[], latents: readonly number[], opts: LatentAttributionOptions = {}): LatentAttribution {
  const metric = opts.metric ?? 'logit_diff';
  const layout = saeHookLayout(model, sae);
  const { dSae } = sae.cfg;
  latents.forEach((f) => {
    if (!Number.isInteger(f) || f < 0 || f >= dSae) fail(`SAE latent ${f} is out of range (d_sae ${dSae})`);
  });
  const { clean, corrupt, targets, N, T } = { ...pairBatches(model, pairs), N: pairs.length };
  const mClean = meanMetric(model, clean, targets, metric);
  const mCorrupt = meanMetric(model, corrupt, targets, metric);
  const xClean = hookRows(model, sae, clean);
  const aClean = tf.tidy(() => sae.encode(xClean));
  const scores = new Float32Array(dSae).fill(NaN);
  const C = copiesPerForward(opts.maxBatchTokens ?? 2048, N, T);
  try {
    for (let i0 = 0; i0 < latents.length; i0 += C) {
      const chunk = latents.slice(i0, i0 + C);
      const S = chunk.length;
      // Block s (N·T rows) patches latent chunk[s]: a += (a_clean[f] − a[f]) ⊗ e_f.
      const hook = replaceAtSaeHook(model, sae, (rows) =>
        tf.tidy(() => {
          const a = sae.encode(rows);
          const err = tf.sub(rows, sae.decode(a, rows));
          const R = N * T;
          const blocks = chunk.map((f, s) => {
            const aS = a.slice([s * R, 0], [R, dSae]);
            const delta = tf.sub(aClean.slice([0, f], [R, 1]), aS.slice([0, f], [R, 1]));
            return tf.add(aS, tf.matMul(delta, tf.oneHot(tf.tensor1d([f], 'int32'), dSae).toFloat()));
          });
          const patched = (blocks.length === 1 ? blocks[0] : tf.concat(blocks, 0)) as tf.Tensor2D;
          return tf.add(sae.decode(patched, rows), err) as tf.Tensor2D;
        }),
      );
      const logits = model.run(tileBatch(corrupt, S), { finalPositionOnly: true, fwdHooks: [hook] });
      const m = rowMetrics(metric, logits, tileTargets(targets, S));
      logits.dispose();
      chunk.forEach((f, s) => (scores[f] = normalise(mean(m.slice(s * N, (s + 1) * N)), mClean, mCorrupt)));
    }
    const xCorrupt = hookRows(model, sae, corrupt);
    const aCorrupt = tf.tidy(() => sae.encode(xCorrupt));
    const active = activeLatents(aClean, aCorrupt);
    tf.dispose([xCorrupt, aCorrupt]);
    return { method: 'activation', hook: layout.hook, mClean, mCorrupt, scores, error: NaN, active };
  } finally {
    tf.dispose([xClean, aClean]);
  }
}

/** Latents by |score|, largest first (NaN dropped). */
export function topLatents(a: LatentAttribution, k: number): { latent: number; score: number }[] {
  const out: { latent: number; score: number }[] = [];
  a.scores.forEach((score, latent) => Number.isNaN(score) || out.push({ latent, score }));
  return out.sort((x, y) => Math.abs(y.score) - Math.abs(x.score) || x.latent - y.latent).slice(0, k);
}
