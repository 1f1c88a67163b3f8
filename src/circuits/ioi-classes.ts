/**
 * The IOI paper's tests of circuit classes that need interventions beyond one score grid
 * (Wang et al. 2022, §3.2–3.4):
 *  - S-inhibition: replace the candidate heads' output at END with its value on the corrupted
 *    (ABC) prompts, where no name is repeated; real S-inhibition heads then stop steering the
 *    name movers away from S, so the name movers' attention END → S rises and END → IO falls.
 *  - Backup name movers: mean-ablate the name movers and measure every other head's direct
 *    effect on the logit difference again; heads whose direct effect grows take over.
 *  - Duplicate-token / induction heads: path-patch their output into the S-inhibition heads'
 *    values only.
 * And one control the paper's circuit passes by construction but small trained models often do
 * not: whether an answer-writing head finds S by its repetition or by its place.
 */
import * as tf from '@tensorflow/tfjs';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import { headGrid, headId, hookName, pairBatches, type HeadRef, type HeadScore } from './common.js';
import { ablationValues, type AblationOptions } from './faithfulness.js';
import { pathPatching } from './path-patching.js';
import { endAttention, endAttentionTo, type IoiPositions } from './roles.js';

/** Hooks that replace the z of `heads` by `values[layer]` ([N, T, H, dh]) where the mask is 1 (positions × heads). */
function replaceZ(model: HookedModel, heads: readonly HeadRef[], values: readonly tf.Tensor[], positions?: readonly number[]): FwdHook[] {
  const { cfg } = model;
  const layers = [...new Set(heads.map((h) => h.layer))];
  return layers.map((l) => [
    hookName(cfg, l, 'attn.hook_z'),
    (z: tf.Tensor) =>
      tf.tidy(() => {
        // Batched runs (path patching) stack copies of the N pairs: row r is pair r mod N.
        const [R, T, H] = z.shape as number[];
        const N = values[l].shape[0]!;
        const m = new Uint8Array(R * T * H);
        for (let r = 0; r < R; r++)
          for (let t = 0; t < T; t++) {
            if (positions && positions[r % N] !== t) continue;
            for (const h of heads) if (h.layer === l) m[(r * T + t) * H + h.head] = 1;
          }
        const mask = tf.broadcastTo(tf.tensor(m, [R, T, H, 1], 'bool'), z.shape);
        const v = R === N ? values[l] : tf.tile(values[l], [R / N, 1, 1, 1]);
        return tf.where(mask, v, z);
      }),
  ]);
}

export interface SInhibitionAttentionTest {
  senders: HeadRef[];
  receivers: { id: string; layer: number; head: number; ioBefore: number; ioAfter: number; sBefore: number; sAfter: number }[];
  /** Mean over receivers of (attention to S − attention to IO) after minus before: > 0 = the senders steered attention away from S. */
  shift: number;
}

/**
 * The S-inhibition test: receivers' (name movers') attention from END on the clean prompts, with
 * and without the senders' z at END replaced by their z on the corrupted prompts.
 */
export function sInhibitionAttentionTest(model: HookedModel, pairs: PromptPair[], positions: readonly IoiPositions[], senders: readonly HeadRef[], receivers: readonly HeadRef[]): SInhibitionAttentionTest {
  const { corrupt } = pairBatches(model, pairs);
  const zNames = Array.from({ length: model.cfg.nLayers }, (_, l) => hookName(model.cfg, l, 'attn.hook_z'));
  const { logits, cache } = model.runWithCache(corrupt, { names: zNames, finalPositionOnly: true });
  logits.dispose();
  try {
    const corruptZ = zNames.map((n) => cache.get(n));
    const before = endAttention(model, pairs, positions);
    const after = endAttention(model, pairs, positions, replaceZ(model, senders, corruptZ, positions.map((p) => p.end)));
    const rows = receivers.map((r) => ({ id: headId(r.layer, r.head), layer: r.layer, head: r.head, ioBefore: before.io[r.layer][r.head], ioAfter: after.io[r.layer][r.head], sBefore: before.s[r.layer][r.head], sAfter: after.s[r.layer][r.head] }));
    const shift = rows.length ? rows.reduce((a, r) => a + (r.sAfter - r.ioAfter) - (r.sBefore - r.ioBefore), 0) / rows.length : NaN;
    return { senders: [...senders], receivers: rows, shift };
  } finally {
    cache.dispose();
  }
}

export interface BackupTest {
  ablated: HeadRef[];
  /** Direct effect (path to logits) per head in units of the unablated clean − corrupt gap; negative supports the answer. [L][H] */
  before: number[][];
  after: number[][];
  /** Heads outside `ablated` whose direct effect grew in support of the answer by ≥ threshold, strongest first. */
  backup: HeadScore[];
  /** Clean logit difference before and after the ablation. */
  ldBefore: number;
  ldAfter: number;
}

/** The backup test: mean-ablate `ablated` (z over the corrupted prompts, per position) and measure every head's direct effect again. */
export function backupNameMoverTest(model: HookedModel, pairs: PromptPair[], ablated: readonly HeadRef[], opts: AblationOptions & { threshold?: number } = {}): BackupTest {
  const values = ablationValues(model, pairs, opts);
  try {
    const hooks = replaceZ(model, ablated, values.perLayer);
    const plain = pathPatching(model, pairs, { receivers: 'logits', metric: opts.metric });
    const ablatedRun = pathPatching(model, pairs, { receivers: 'logits', metric: opts.metric, fwdHooks: hooks });
    const gap = plain.ldClean - plain.ldCorrupt;
    const raw = (r: typeof plain) => r.patched.map((row) => row.map((v) => (v - r.ldClean) / gap));
    const before = raw(plain);
    const after = raw(ablatedRun);
    const isAblated = (l: number, h: number) => ablated.some((a) => a.layer === l && a.head === h);
    const threshold = opts.threshold ?? 0.05;
    const backup: HeadScore[] = [];
    headGrid(model.cfg).forEach((row, l) =>
      row.forEach((_, h) => {
        const grew = before[l][h] - after[l][h];
        if (!isAblated(l, h) && grew >= threshold) backup.push({ layer: l, head: h, score: grew });
      }),
    );
    backup.sort((a, b) => b.score - a.score);
    return { ablated: [...ablated], before, after, backup, ldBefore: plain.ldClean, ldAfter: ablatedRun.ldClean };
  } finally {
    values.dispose();
  }
}

export interface DuplicateTokenPathTest {
  senders: HeadRef[];
  receivers: HeadRef[];
  /** Path patching sender → receivers' values (normalised; negative = the path carries the behaviour), per sender. */
  effects: { id: string; layer: number; head: number; effect: number }[];
}

/**
 * Duplicate-token and induction heads feed the S-inhibition heads (IOI paper §3.3): path-patch
 * each candidate's output into the receivers' values only (everything else frozen at clean).
 */
export function duplicateTokenPathTest(model: HookedModel, pairs: PromptPair[], senders: readonly HeadRef[], receivers: readonly HeadRef[]): DuplicateTokenPathTest {
  const r = pathPatching(model, pairs, { senders, receivers: receivers.map((h) => ({ ...h, input: 'v' as const })) });
  return {
    senders: [...senders],
    receivers: [...receivers],
    effects: senders.map((h) => ({ id: headId(h.layer, h.head), layer: h.layer, head: h.head, effect: r.scores[h.layer][h.head] })),
  };
}

export interface RepeatSensitivityTest {
  /** Per head: mean attention END → the S2 position on the clean prompts and on the corrupted ones (where that name is not repeated). */
  heads: { id: string; layer: number; head: number; clean: number; corrupt: number; ratio: number }[];
}

/**
 * Does a head find S because S is repeated, or because of where S2 stands? On the corrupted
 * (ABC) prompts the S2 position holds a name said only once: a head that detects the repeat
 * attends there much less (ratio corrupt / clean ≪ 1); one that tracks the position or the
 * syntax (the last clause's subject, the latest name) attends as before (ratio ≈ 1) — the
 * shortcut the shipped models' S-suppression heads take.
 */
export function repeatSensitivityTest(model: HookedModel, pairs: PromptPair[], positions: readonly IoiPositions[], heads: readonly HeadRef[]): RepeatSensitivityTest {
  const { clean, corrupt } = pairBatches(model, pairs);
  const toS2 = { s2: (p: IoiPositions) => [p.s2] };
  const c = endAttentionTo(model, clean, positions, toS2).s2;
  const x = endAttentionTo(model, corrupt, positions, toS2).s2;
  return {
    heads: heads.map(({ layer, head }) => ({ id: headId(layer, head), layer, head, clean: c[layer][head], corrupt: x[layer][head], ratio: x[layer][head] / c[layer][head] })),
  };
}
