/**
 * Relevance conservation of a RelP rule set: at a residual-stream cut, Σ activation · modified
 * gradient of the logit difference, over the logit difference itself. LRP's conservation
 * property says this is 1 at every cut when each layer passes relevance on unchanged — on a
 * bias-free model with LN + Identity + Half + AH (tested). Biases absorb relevance, and so does
 * the softmax under AttnHalf; the default rules count both factors of Q·Kᵀ and pattern·V in full.
 */
import * as tf from '@tensorflow/tfjs';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { RelpRule } from '../models/grad-rules.js';

export interface Conservation {
  rules: RelpRule[];
  /** The logit difference (answer − wrong) at the final position. */
  output: number;
  /** The ratio at blocks.0.hook_resid_pre (the model's input). */
  input: number;
  /** The ratio at each block's hook_resid_pre and after the last block. */
  perCut: { hook: string; ratio: number }[];
}

export function relevanceConservation(model: HookedModel, prompt: number[], answer: number, wrong: number, rules: readonly RelpRule[]): Conservation {
  const L = model.cfg.nLayers;
  const T = prompt.length;
  const cuts = [...Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_pre`), `blocks.${L - 1}.hook_resid_post`];
  const metric = (logits: tf.Tensor3D) => tf.tidy(() => tf.sub(logits.slice([0, T - 1, answer], [1, 1, 1]).sum(), logits.slice([0, T - 1, wrong], [1, 1, 1]).sum()).asScalar());
  const { value, grads, cache } = model.gradients(prompt, cuts, metric, { rules: [...rules], cacheNames: cuts });
  try {
    const perCut = cuts.map((hook) => ({ hook, ratio: tf.tidy(() => tf.sum(tf.mul(cache!.get(hook), grads.get(hook)!)).dataSync()[0]) / value }));
    return { rules: [...rules], output: value, input: perCut[0].ratio, perCut };
  } finally {
    cache?.dispose();
    tf.dispose([...grads.values()]);
  }
}
