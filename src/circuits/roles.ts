/**
 * IOI head roles (Wang et al. 2022), from evidence any model yields:
 *  - name movers: strong direct effect on the logits (path patching sender → logits, normalised
 *    effect ≤ −nameMoverEffect) and, from END, more attention to IO than to S with at least
 *    nameMoverAttention on IO;
 *  - negative name movers: the same attention, direct effect ≥ +nameMoverEffect (they write
 *    against the answer);
 *  - S-suppression heads: direct effect ≤ −nameMoverEffect with, from END, more attention to S
 *    than to IO (at least nameMoverAttention on S) and a negative copy score ≥ copyScore
 *    (copy-scores.ts): they write −S themselves instead of +IO. Small models trained on IOI text
 *    find this shortcut (suppress the most recent name) where GPT-2 small uses name movers;
 *  - S-inhibition heads: path patching into the answer-writing heads' (name movers' and
 *    S-suppression heads') queries at END (override with pathPatching.receiverPositions)
 *    ≤ −sInhibitionEffect;
 *  - duplicate-token / induction / previous-token heads: pattern scores (head-scores.ts) at or
 *    above their thresholds (duplicate and previous-token on the clean IOI prompts, induction on
 *    repeated random tokens).
 * A head may hold several roles. Scores are reported so that larger = stronger evidence.
 *
 * Positions (IO, S1, S2, END) are read from the token ids: IO = first occurrence of the answer
 * token, S1/S2 = first two occurrences of the wrong token, END = last position — pass `positions`
 * when a tokenizer writes names differently inside the prompt than as an answer.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import type { TokenBatch } from '../models/transformer.js';
import { headGrid, hookName, pairBatches, type HeadRef, type HeadScore } from './common.js';
import { patternScores, inductionScores, type RepeatedTokensOptions } from './head-scores.js';
import { pathPatching, type PathPatchingOptions } from './path-patching.js';
import { copyScores } from './copy-scores.js';

export type IoiRole = 'name_mover' | 'negative_name_mover' | 's_suppression' | 's_inhibition' | 'duplicate_token' | 'induction' | 'previous_token';

export interface HeadRole extends HeadScore {
  role: IoiRole;
}

export interface IoiPositions {
  io: number;
  s1: number;
  s2: number;
  end: number;
}

export interface RoleThresholds {
  /** |normalised direct effect| for (negative) name movers (default 0.05). */
  nameMoverEffect?: number;
  /** Minimum mean attention END → IO for (negative) name movers (default 0.15). */
  nameMoverAttention?: number;
  /** −effect of path patching into the name movers' queries (default 0.05). */
  sInhibitionEffect?: number;
  /** Negative copy score of S-suppression heads (default 0.3; chance is 5 / number of names). */
  copyScore?: number;
  duplicateToken?: number;
  induction?: number;
  previousToken?: number;
}

export const DEFAULT_ROLE_THRESHOLDS: Required<RoleThresholds> = {
  nameMoverEffect: 0.05,
  nameMoverAttention: 0.15,
  sInhibitionEffect: 0.05,
  copyScore: 0.3,
  duplicateToken: 0.3,
  induction: 0.3,
  previousToken: 0.4,
};

export interface IoiEvidenceOptions {
  thresholds?: RoleThresholds;
  positions?: readonly IoiPositions[];
  /** Prompts for previous-/duplicate-token scores (default: the clean prompts). */
  patternPrompts?: readonly (readonly number[])[];
  induction?: RepeatedTokensOptions;
  /** Passed to path patching (freezeMlps, fwdHooks, maxBatchTokens, metric). */
  pathPatching?: Omit<PathPatchingOptions, 'receivers' | 'senders'>;
}

export interface IoiEvidence {
  /** Path patching sender → logits, normalised (negative = supports the answer). [L][H] */
  directEffect: number[][];
  /** Mean attention from END to IO and to S (S1 + S2) on the clean prompts. [L][H] */
  attnToIo: number[][];
  attnToS: number[][];
  /** OV copy and negative copy scores of each head (top-5 among the pairs' names, at IO and S1). [L][H] */
  copy: number[][];
  negativeCopy: number[][];
  /** Name movers used as receivers for S-inhibition. */
  nameMovers: HeadRef[];
  /** S-suppression heads, the other receivers for S-inhibition. */
  sSuppression: HeadRef[];
  /** Path patching into the answer-writing heads' queries (NaN for heads not tested). [L][H] */
  sInhibition: number[][];
  previousToken: number[][];
  duplicateToken: number[][];
  induction: number[][];
  thresholds: Required<RoleThresholds>;
}

/** IO / S1 / S2 / END positions of a pair from its token ids. */
export function ioiPositions(pair: PromptPair, index = 0): IoiPositions {
  const ids = pair.clean;
  const io = ids.indexOf(pair.answer);
  const s1 = ids.indexOf(pair.wrong);
  const s2 = s1 >= 0 ? ids.indexOf(pair.wrong, s1 + 1) : -1;
  if (io < 0 || s1 < 0 || s2 < 0) {
    fail(`IOI roles: pair ${index + 1}: cannot find IO (answer ${pair.answer}) once and S (wrong ${pair.wrong}) twice in the clean tokens; pass positions explicitly`);
  }
  return { io, s1, s2, end: ids.length - 1 };
}

function isNameMover(ev: Pick<IoiEvidence, 'attnToIo' | 'attnToS'>, t: Required<RoleThresholds>, l: number, h: number): boolean {
  return ev.attnToIo[l][h] >= t.nameMoverAttention && ev.attnToIo[l][h] > ev.attnToS[l][h];
}

function isSSuppression(ev: Pick<IoiEvidence, 'attnToIo' | 'attnToS' | 'negativeCopy' | 'directEffect'>, t: Required<RoleThresholds>, l: number, h: number): boolean {
  return -ev.directEffect[l][h] >= t.nameMoverEffect && ev.attnToS[l][h] >= t.nameMoverAttention && ev.attnToS[l][h] > ev.attnToIo[l][h] && ev.negativeCopy[l][h] >= t.copyScore;
}

/**
 * Mean attention from END to each key set's positions (summed within a set), of every head on
 * `tokens` (one row per entry of `positions`, T tokens each) with `fwdHooks` applied. [L][H] per set.
 */
export function endAttentionTo<K extends string>(model: HookedModel, tokens: TokenBatch, positions: readonly IoiPositions[], keys: Record<K, (p: IoiPositions) => number[]>, fwdHooks?: FwdHook[]): Record<K, number[][]> {
  const { cfg } = model;
  const T = tokens.seqLen;
  const N = positions.length;
  const names = Array.from({ length: cfg.nLayers }, (_, l) => hookName(cfg, l, 'attn.hook_pattern'));
  const { logits, cache } = model.runWithCache(tokens, { names, finalPositionOnly: true, fwdHooks });
  logits.dispose();
  const attn = (keysOf: (p: IoiPositions) => number[]): number[][] => {
    const m = new Float32Array(N * T * T);
    positions.forEach((p, n) => {
      for (const k of keysOf(p)) m[(n * T + p.end) * T + k] += 1 / N;
    });
    const v = tf.tidy(() => {
      const mask = tf.tensor4d(m, [N, 1, T, T]);
      return tf.stack(names.map((n) => tf.sum(tf.mul(cache.get(n), mask), [0, 2, 3])));
    });
    const flat = v.dataSync();
    v.dispose();
    return headGrid(cfg).map((row, l) => row.map((_, h) => flat[l * cfg.nHeads + h]));
  };
  try {
    return Object.fromEntries(Object.entries<(p: IoiPositions) => number[]>(keys).map(([k, f]) => [k, attn(f)])) as Record<K, number[][]>;
  } finally {
    cache.dispose();
  }
}

/** Mean attention from END to IO and to S (S1 + S2) of every head on the clean prompts, with `fwdHooks` applied. [L][H] each. */
export function endAttention(model: HookedModel, pairs: PromptPair[], positions: readonly IoiPositions[], fwdHooks?: FwdHook[]): { io: number[][]; s: number[][] } {
  return endAttentionTo(model, pairBatches(model, pairs).clean, positions, { io: (p) => [p.io], s: (p) => [p.s1, p.s2] }, fwdHooks);
}

export function ioiHeadEvidence(model: HookedModel, pairs: PromptPair[], opts: IoiEvidenceOptions = {}): IoiEvidence {
  const { cfg } = model;
  const t = { ...DEFAULT_ROLE_THRESHOLDS, ...(opts.thresholds ?? {}) };
  const N = pairs.length;
  const positions = opts.positions ?? pairs.map((p, i) => ioiPositions(p, i));
  if (positions.length !== N) fail(`IOI roles: ${positions.length} positions for ${N} pairs`);

  const { io: attnToIo, s: attnToS } = endAttention(model, pairs, positions, opts.pathPatching?.fwdHooks);

  const pp = opts.pathPatching ?? {};
  const directEffect = pathPatching(model, pairs, { ...pp, receivers: 'logits' }).scores;
  const copies = copyScores(model, pairs, { namePositions: positions.map((p) => [p.io, p.s1]) });
  const nameMovers: HeadRef[] = [];
  const sSuppression: HeadRef[] = [];
  const partial = { attnToIo, attnToS, directEffect, negativeCopy: copies.negativeCopy };
  for (let l = 0; l < cfg.nLayers; l++) {
    for (let h = 0; h < cfg.nHeads; h++) {
      if (-directEffect[l][h] >= t.nameMoverEffect && isNameMover(partial, t, l, h)) nameMovers.push({ layer: l, head: h });
      if (isSSuppression(partial, t, l, h)) sSuppression.push({ layer: l, head: h });
    }
  }
  let sInhibition = headGrid(cfg, NaN);
  const writers = [...nameMovers, ...sSuppression];
  if (writers.length > 0) {
    const top = Math.max(...writers.map((h) => h.layer));
    const senders = headGrid(cfg)
      .flatMap((row, layer) => row.map((_, head) => ({ layer, head })))
      .filter((h) => h.layer < top);
    if (senders.length > 0) {
      sInhibition = pathPatching(model, pairs, { receiverPositions: 'end', ...pp, senders, receivers: writers.map((h) => ({ ...h, input: 'q' as const })) }).scores;
    }
  }

  const pat = patternScores(model, opts.patternPrompts ?? pairs.map((p) => p.clean), ['previous_token', 'duplicate_token'], { fwdHooks: pp.fwdHooks });
  const induction = inductionScores(model, { ...(opts.induction ?? {}), fwdHooks: pp.fwdHooks });
  return {
    directEffect,
    attnToIo,
    attnToS,
    copy: copies.copy,
    negativeCopy: copies.negativeCopy,
    nameMovers,
    sSuppression,
    sInhibition,
    previousToken: pat.previous_token,
    duplicateToken: pat.duplicate_token,
    induction,
    thresholds: t,
  };
}

/** Roles from precomputed evidence; thresholds override the ones the evidence was built with (except the name movers used as S-inhibition receivers). */
export function rolesFromEvidence(ev: IoiEvidence, thresholds: RoleThresholds = {}): HeadRole[] {
  const t = { ...ev.thresholds, ...thresholds };
  const out: HeadRole[] = [];
  const L = ev.directEffect.length;
  const H = ev.directEffect[0]?.length ?? 0;
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      const de = ev.directEffect[l][h];
      if (isNameMover(ev, t, l, h)) {
        if (-de >= t.nameMoverEffect) out.push({ role: 'name_mover', layer: l, head: h, score: -de });
        else if (de >= t.nameMoverEffect) out.push({ role: 'negative_name_mover', layer: l, head: h, score: de });
      }
      if (isSSuppression(ev, t, l, h)) out.push({ role: 's_suppression', layer: l, head: h, score: -de });
      const si = ev.sInhibition[l][h];
      if (!Number.isNaN(si) && -si >= t.sInhibitionEffect) out.push({ role: 's_inhibition', layer: l, head: h, score: -si });
      if (ev.duplicateToken[l][h] >= t.duplicateToken) out.push({ role: 'duplicate_token', layer: l, head: h, score: ev.duplicateToken[l][h] });
      if (ev.induction[l][h] >= t.induction) out.push({ role: 'induction', layer: l, head: h, score: ev.induction[l][h] });
      if (ev.previousToken[l][h] >= t.previousToken) out.push({ role: 'previous_token', layer: l, head: h, score: ev.previousToken[l][h] });
    }
  }
  const order: IoiRole[] = ['name_mover', 'negative_name_mover', 's_suppression', 's_inhibition', 'induction', 'duplicate_token', 'previous_token'];
  return out.sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role) || b.score - a.score || a.layer - b.layer || a.head - b.head);
}

/** Classify heads for IOI: `{ role, layer, head, score }[]`, grouped by role, strongest first. */
export function classifyIoiHeads(model: HookedModel, pairs: PromptPair[], opts: IoiEvidenceOptions = {}): HeadRole[] {
  return rolesFromEvidence(ioiHeadEvidence(model, pairs, opts));
}
