/**
 * Per-head scores read off attention patterns (TransformerLens `detect_head` style), and per-head
 * attribution scores from a PatchingSession.
 *
 *  - previous-token: mean over query positions t ≥ 1 of attention(t → t−1);
 *  - duplicate-token: over query positions whose token occurred earlier, the attention mass on
 *    those earlier occurrences (mean over such positions);
 *  - induction: over query positions whose token x occurred earlier at s (s + 1 < t), the
 *    attention mass on the tokens right after those earlier occurrences (s + 1). `inductionScores`
 *    measures it on seeded repeated random sequences [prefix, x₁..xₙ, x₁..xₙ], where the target of
 *    the second xᵢ is the first xᵢ₊₁.
 *
 * Every score is a mean of attention masses, so it lies in [0, 1]. Results are [n_layers][n_heads];
 * a kind with no qualifying position in the prompts gives NaN. Positions are those of the real
 * (unpadded) tokens; ragged prompts are right-padded.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { padBatch } from '../hooks/token-batch.js';
import type { PatchingSession, GridOptions } from '../patching/session.js';
import type { Method, PatchingGrid } from '../patching/types.js';
import { mulberry32 } from '../util/random.js';
import { hookName } from './common.js';

export type PatternKind = 'previous_token' | 'duplicate_token' | 'induction';
export const PATTERN_KINDS: readonly PatternKind[] = ['previous_token', 'duplicate_token', 'induction'];

export interface PatternScoreOptions {
  /** Prompts per forward (default 16). */
  batchSize?: number;
  /** Hooks applied during the runs (e.g. an ablation); the scores read the hooked patterns. */
  fwdHooks?: FwdHook[];
}

/** Where one query position's attention counts for a kind: the key positions, or null if it does not count. */
function targetsOf(kind: PatternKind, ids: readonly number[], t: number): number[] | null {
  switch (kind) {
    case 'previous_token':
      return t >= 1 ? [t - 1] : null;
    case 'duplicate_token': {
      const s: number[] = [];
      for (let j = 0; j < t; j++) if (ids[j] === ids[t]) s.push(j);
      return s.length ? s : null;
    }
    case 'induction': {
      const s: number[] = [];
      for (let j = 0; j + 1 < t; j++) if (ids[j] === ids[t]) s.push(j + 1);
      return s.length ? [...new Set(s)] : null;
    }
  }
}

/** Scores of the given kinds over prompts (token id arrays), each [n_layers][n_heads]. */
export function patternScores(
  model: HookedModel,
  prompts: readonly (readonly number[])[],
  kinds: readonly PatternKind[] = PATTERN_KINDS,
  opts: PatternScoreOptions = {},
): Record<PatternKind, number[][]> {
  const { cfg } = model;
  if (prompts.length === 0) fail('pattern scores: no prompts given');
  for (const k of kinds) if (!PATTERN_KINDS.includes(k)) fail(`pattern scores: unknown kind '${k}' (choose from ${PATTERN_KINDS.join(', ')})`);
  const L = cfg.nLayers;
  const H = cfg.nHeads;
  const sums = new Map(kinds.map((k) => [k, Array.from({ length: L }, () => new Float64Array(H))]));
  const counts = new Map(kinds.map((k) => [k, 0]));
  const names = Array.from({ length: L }, (_, l) => hookName(cfg, l, 'attn.hook_pattern'));
  const bs = Math.max(1, opts.batchSize ?? 16);
  for (let start = 0; start < prompts.length; start += bs) {
    const chunk = prompts.slice(start, start + bs);
    const tokens = padBatch(chunk);
    const T = tokens.seqLen;
    const masks = new Map<PatternKind, Float32Array>();
    for (const kind of kinds) {
      const m = new Float32Array(chunk.length * T * T);
      let n = 0;
      chunk.forEach((ids, b) => {
        for (let t = 0; t < ids.length; t++) {
          const targets = targetsOf(kind, ids, t);
          if (!targets) continue;
          n++;
          for (const s of targets) m[(b * T + t) * T + s] = 1;
        }
      });
      masks.set(kind, m);
      counts.set(kind, counts.get(kind)! + n);
    }
    const { logits, cache } = model.runWithCache(tokens, { names, finalPositionOnly: true, fwdHooks: opts.fwdHooks });
    logits.dispose();
    try {
      for (const kind of kinds) {
        const perLayer = tf.tidy(() => {
          const mask = tf.tensor4d(masks.get(kind)!, [chunk.length, 1, T, T]);
          return tf.stack(names.map((n) => tf.sum(tf.mul(cache.get(n), mask), [0, 2, 3])));
        });
        const v = perLayer.dataSync();
        perLayer.dispose();
        const acc = sums.get(kind)!;
        for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) acc[l][h] += v[l * H + h];
      }
    } finally {
      cache.dispose();
    }
  }
  const out = {} as Record<PatternKind, number[][]>;
  for (const kind of kinds) {
    const n = counts.get(kind)!;
    out[kind] = sums.get(kind)!.map((row) => Array.from(row, (s) => (n > 0 ? s / n : NaN)));
  }
  return out;
}

export function previousTokenScores(model: HookedModel, prompts: readonly (readonly number[])[], opts: PatternScoreOptions = {}): number[][] {
  return patternScores(model, prompts, ['previous_token'], opts).previous_token;
}

export function duplicateTokenScores(model: HookedModel, prompts: readonly (readonly number[])[], opts: PatternScoreOptions = {}): number[][] {
  return patternScores(model, prompts, ['duplicate_token'], opts).duplicate_token;
}

export interface RepeatedTokensOptions {
  /** Length n of the random block (the sequence is prefix + 2n tokens). Default 20, capped to fit the context. */
  seqLen?: number;
  /** Number of sequences (default 10). */
  nSeqs?: number;
  seed?: number;
  /** Tokens before the block; default [BOS] when the model has one, else []. */
  prefix?: number[];
  /** Token ids to draw from: [lo, hi) (default the whole vocabulary minus BOS/EOS/PAD). */
  vocabRange?: [number, number];
}

/**
 * Seeded repeated random sequences prefix + x + x. Tokens inside x are distinct (drawn without
 * replacement) so each second-half token has exactly one earlier occurrence.
 */
export function repeatedRandomTokens(model: HookedModel, opts: RepeatedTokensOptions = {}): number[][] {
  const { cfg } = model;
  const prefix = opts.prefix ?? (cfg.bosTokenId !== null ? [cfg.bosTokenId] : []);
  const [lo, hi] = opts.vocabRange ?? [0, cfg.dVocab];
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && hi <= cfg.dVocab && lo < hi)) fail(`induction: vocabRange [${lo}, ${hi}) must lie within 0..${cfg.dVocab}`);
  const special = new Set([cfg.bosTokenId, cfg.eosTokenId, cfg.padTokenId].filter((x): x is number => x !== null));
  const pool: number[] = [];
  for (let id = lo; id < hi; id++) if (!special.has(id)) pool.push(id);
  const maxLen = Math.floor((cfg.nCtx - prefix.length) / 2);
  const n = Math.min(opts.seqLen ?? 20, maxLen, pool.length);
  if (n < 2) fail(`induction: cannot fit a repeated random sequence (context ${cfg.nCtx}, prefix ${prefix.length}, ${pool.length} usable tokens)`);
  const rand = mulberry32(opts.seed ?? 0);
  const nSeqs = opts.nSeqs ?? 10;
  if (!Number.isInteger(nSeqs) || nSeqs < 1) fail(`induction: nSeqs must be a positive integer, got ${nSeqs}`);
  return Array.from({ length: nSeqs }, () => {
    const p = [...pool];
    const x: number[] = [];
    for (let i = 0; i < n; i++) {
      const j = i + Math.floor(rand() * (p.length - i));
      [p[i], p[j]] = [p[j]!, p[i]!];
      x.push(p[i]!);
    }
    return [...prefix, ...x, ...x];
  });
}

/** Induction scores on seeded repeated random sequences, [n_layers][n_heads]. */
export function inductionScores(model: HookedModel, opts: RepeatedTokensOptions & PatternScoreOptions = {}): number[][] {
  return patternScores(model, repeatedRandomTokens(model, opts), ['induction'], opts).induction;
}

/**
 * Per-head attribution scores: the session's head_out grid (activation patching, AtP or RelP),
 * [n_layers][n_heads] with the session's normalisation and direction.
 */
export function headAttributionScores(session: PatchingSession, method: Method, opts: GridOptions = {}): { scores: number[][]; grid: PatchingGrid } {
  const grid = session.grid('head_out', method, opts);
  return { scores: (grid.scores as number[][]).map((r) => [...r]), grid };
}
