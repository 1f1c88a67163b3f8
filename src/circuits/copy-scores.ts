/**
 * OV copy scores (Wang et al. 2022, §3.3, name movers and negative name movers): does a head, when
 * it attends to a name, write that name's unembedding (copy) or its negative (negative copy)?
 *
 * Measured on real residual streams instead of the paper's "embedding + MLP0" proxy, so the same
 * code works for any architecture: for each prompt and each name position p (IO and S1), the head's
 * value at p times its W_O is what it would write with all attention on p; that vector is put
 * through the final norm with the END position's scale (the norm's scale is a per-position
 * constant, as in direct logit attribution) and unembedded. The copy score is the fraction of
 * (prompt, position) cases where the name's own token is among the top k logits (over the names of
 * the pairs by default, or the whole vocabulary); the negative copy score uses the negated write.
 * Both lie in [0, 1]; with n candidate names, chance level is k/n.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import { headGrid, hookName, kvHeadOf, pairBatches } from './common.js';

export interface CopyScores {
  /** Fraction of cases with the attended name in the top k of the head's write. [L][H] */
  copy: number[][];
  /** The same for the negated write. [L][H] */
  negativeCopy: number[][];
  k: number;
  cases: number;
}

export interface CopyScoreOptions {
  /** Top-k cut (default 5, as in the paper). */
  k?: number;
  /** Name positions per pair (default: IO and S1, read from the tokens). */
  namePositions?: readonly (readonly number[])[];
  /**
   * Tokens the rank is taken among: 'vocab' (the paper's choice) or 'names' (default: every answer
   * and wrong token of the pairs) — on small vocabularies a head's write can favour or disfavour
   * the whole class of names, which a vocabulary-wide rank mistakes for copying.
   */
  rankAmong?: 'vocab' | 'names';
}

/** Positions of the answer (IO) and the first occurrence of the wrong token (S1). */
function defaultNamePositions(pairs: readonly PromptPair[]): number[][] {
  return pairs.map((p, i) => {
    const io = p.clean.indexOf(p.answer);
    const s1 = p.clean.indexOf(p.wrong);
    if (io < 0 || s1 < 0) fail(`copy scores: pair ${i + 1}: answer or wrong token does not occur in the clean prompt; pass namePositions`);
    return [io, s1];
  });
}

export function copyScores(model: HookedModel, pairs: PromptPair[], opts: CopyScoreOptions = {}): CopyScores {
  const { cfg } = model;
  const k = opts.k ?? 5;
  if (!Number.isInteger(k) || k < 1 || k > cfg.dVocab) fail(`copy scores: k must be an integer in 1..${cfg.dVocab}, got ${k}`);
  const { clean, T } = pairBatches(model, pairs);
  const positions = opts.namePositions ?? defaultNamePositions(pairs);
  if (positions.length !== pairs.length) fail(`copy scores: ${positions.length} position lists for ${pairs.length} pairs`);
  const { nLayers: L, nHeads: H, dHead: dh, dModel: d } = cfg;
  const vNames = Array.from({ length: L }, (_, l) => hookName(cfg, l, 'attn.hook_v'));
  const scaleName = 'ln_final.hook_scale';
  const { logits, cache } = model.runWithCache(clean, { names: [...vNames, scaleName] });
  logits.dispose();
  const among = opts.rankAmong ?? 'names';
  if (among !== 'vocab' && among !== 'names') fail(`copy scores: rankAmong must be vocab or names, got '${String(among)}'`);
  const candidates = among === 'names' ? [...new Set(pairs.flatMap((p) => [p.answer, p.wrong]))].sort((a, b) => a - b) : null;
  const copy = headGrid(cfg);
  const negativeCopy = headGrid(cfg);
  // Cases: (pair n, position p, token id) — the token whose copy we look for.
  const cases = positions.flatMap((ps, n) => ps.map((p) => ({ n, p, id: clean.ids[n * T + p] })));
  if (cases.length === 0) fail('copy scores: no name positions given');
  try {
    for (let l = 0; l < L; l++) {
      const ranks = tf.tidy(() => {
        const v = cache.get(vNames[l]); // [N, T, K, dh]
        const rows = cases.map((c) => c.n * T + c.p);
        const vAt = tf.gather(v.reshape([-1, cfg.nKvHeads, dh]), rows); // [C, K, dh]
        const endScale = tf.gather(cache.get(scaleName).reshape([-1, 1]), cases.map((c) => c.n * T + (T - 1))); // [C, 1]
        const W_O = model.weight(`blocks.${l}.attn.W_O`).reshape([H, dh, d]);
        const ids = tf.tensor1d(cases.map((c) => (candidates ? candidates.indexOf(c.id) : c.id)), 'int32');
        const out: tf.Tensor[] = [];
        for (let h = 0; h < H; h++) {
          const kv = kvHeadOf(cfg, h);
          const vh = vAt.slice([0, kv, 0], [-1, 1, -1]).reshape([-1, dh]);
          const write = tf.matMul(vh, W_O.slice([h, 0, 0], [1, -1, -1]).reshape([dh, d])) as tf.Tensor2D;
          // No b_U: a per-token constant is not part of the head's write.
          const all = tf.matMul(normLinearPart(model, write, endScale) as tf.Tensor2D, model.weight('unembed.W_U') as tf.Tensor2D); // [C, V]
          const lg = candidates ? tf.gather(all, candidates, 1) : all;
          const own = tf.sum(tf.mul(tf.gather(lg, ids, 1), tf.eye(cases.length)), 1, true); // [C, 1]: each case's own token
          // Rank of the own token = number of tokens with a strictly larger logit (same for −logits).
          out.push(tf.sum(tf.greater(lg, own).cast('int32'), 1), tf.sum(tf.less(lg, own).cast('int32'), 1));
        }
        return tf.stack(out); // [2H, C]
      });
      const r = ranks.arraySync() as number[][];
      ranks.dispose();
      for (let h = 0; h < H; h++) {
        copy[l][h] = r[2 * h].filter((x) => x < k).length / cases.length;
        negativeCopy[l][h] = r[2 * h + 1].filter((x) => x < k).length / cases.length;
      }
    }
  } finally {
    cache.dispose();
  }
  return { copy, negativeCopy, k, cases: cases.length };
}

/**
 * The final norm's linear part for a direct contribution: centring (LayerNorm), the END position's
 * scale, and the weight; the bias is not part of any one component's write.
 */
function normLinearPart(model: HookedModel, x: tf.Tensor2D, scale: tf.Tensor): tf.Tensor {
  const w = model.weight('ln_final.w');
  const centred = model.cfg.norm === 'layernorm' ? tf.sub(x, tf.mean(x, -1, true)) : x;
  return tf.mul(tf.div(centred, scale), w);
}
