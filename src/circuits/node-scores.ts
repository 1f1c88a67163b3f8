/**
 * Node scores for MLP layers, on the same scale as the head_out grid: patching a whole layer's
 * hook_mlp_out at every position (denoising, normalised (LD_patched − LD_corrupt) /
 * (LD_clean − LD_corrupt)). Heads get theirs from the patching suite (head_out); MLPs need this
 * because the suite's mlp_out grid is per position, and activation patching is not additive over
 * positions. AtP and RelP are linear in the patch, so their whole-layer score is exactly the sum
 * of the per-position grid (mlpScoresFromGrid).
 */
import * as tf from '@tensorflow/tfjs';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { normalise } from '../patching/metrics.js';
import type { PromptPair } from '../patching/pairs.js';
import type { PatchingGrid } from '../patching/types.js';
import { fail } from '../errors.js';
import { copiesPerForward, headRowMask, hookName, mean, pairBatches, rowMetrics, tileBatch, tileRows, tileTargets, type CircuitMetric, type NodeScore } from './common.js';

export interface MlpScoreOptions {
  metric?: CircuitMetric;
  maxBatchTokens?: number;
  fwdHooks?: FwdHook[];
}

/** Activation patching of each MLP layer (all positions at once), normalised. [L] */
export function mlpActivationScores(model: HookedModel, pairs: PromptPair[], opts: MlpScoreOptions = {}): number[] {
  const { cfg } = model;
  const { clean, corrupt, T, targets } = pairBatches(model, pairs);
  const N = pairs.length;
  const L = cfg.nLayers;
  const metric = opts.metric ?? 'logit_diff';
  const names = Array.from({ length: L }, (_, l) => hookName(cfg, l, 'hook_mlp_out'));
  const meanOf = (tokens: typeof clean, hooks: FwdHook[] = []) => {
    const logits = model.run(tokens, { finalPositionOnly: true, fwdHooks: [...(opts.fwdHooks ?? []), ...hooks] });
    const m = rowMetrics(metric, logits, targets);
    logits.dispose();
    return mean(m);
  };
  const { logits, cache } = model.runWithCache(clean, { names, finalPositionOnly: true, fwdHooks: opts.fwdHooks });
  logits.dispose();
  try {
    const mClean = meanOf(clean);
    const mCorrupt = meanOf(corrupt);
    const out: number[] = [];
    const C = copiesPerForward(opts.maxBatchTokens ?? 2048, N, T);
    for (let l0 = 0; l0 < L; l0 += C) {
      const layers = Array.from({ length: Math.min(C, L - l0) }, (_, i) => l0 + i);
      const s = layers.length;
      // Block b of N rows patches layer layers[b]; every block sees every hook, masked to its own layer.
      const hooks: FwdHook[] = layers.map((l, b) => [
        names[l],
        (x: tf.Tensor) => {
          const rows = layers.map((_, j) => (j === b ? [0] : []));
          return tf.where(tf.broadcastTo(headRowMask(rows, N, 1).reshape([s * N, 1, 1]), x.shape), tileRows(cache.get(names[l]), s), x);
        },
      ]);
      const logitsP = model.run(tileBatch(corrupt, s), { finalPositionOnly: true, fwdHooks: [...(opts.fwdHooks ?? []), ...hooks] });
      const m = rowMetrics(metric, logitsP, tileTargets(targets, s));
      logitsP.dispose();
      for (let b = 0; b < s; b++) out.push(normalise(mean(m.slice(b * N, (b + 1) * N)), mClean, mCorrupt));
    }
    return out;
  } finally {
    cache.dispose();
  }
}

/** Whole-layer MLP scores from a per-position mlp_out grid (exact for AtP/RelP, which are linear). [L] */
export function mlpScoresFromGrid(grid: PatchingGrid): number[] {
  if (grid.component !== 'mlp_out') fail(`mlp node scores need an mlp_out grid, got ${grid.component}`);
  if (grid.method === 'activation') fail('mlp node scores: activation patching is not additive over positions; use mlpActivationScores');
  return (grid.scores as number[][]).map((row) => row.reduce((a, b) => a + b, 0));
}

/** Head grid [L][H] and MLP scores [L] as one node list (heads then the MLP, per layer). */
export function nodeScoreList(heads: readonly (readonly number[])[], mlps: readonly number[]): NodeScore[] {
  const out: NodeScore[] = [];
  heads.forEach((row, layer) => {
    row.forEach((score, head) => out.push({ layer, head, score }));
    if (layer < mlps.length) out.push({ layer, mlp: true, score: mlps[layer] });
  });
  return out;
}
