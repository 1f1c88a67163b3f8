/**
 * Circuit faithfulness under mean ablation (Wang et al. 2022, §4): every head outside the circuit
 * has its z replaced by its mean over a reference distribution — by default the pairs' corrupted
 * (ABC) prompts, mean taken per position (so reference and evaluated prompts share one length;
 * with `groups`, e.g. the template of each prompt, each prompt gets the mean over its own group,
 * as the IOI paper does per template). MLPs and embeddings are always kept.
 *
 * faithfulness = LD_circuit / LD_full, with LD the mean final-position logit difference on the
 * clean prompts; LD of the fully mean-ablated model (every head ablated) is reported for context,
 * with the normalised (LD_circuit − LD_ablated) / (LD_full − LD_ablated).
 *
 * Ablation variants are evaluated in batched forwards (one block of N rows per variant); a head is
 * kept by selecting its own z (tf.where), so the full circuit reproduces the full model exactly.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { padBatch } from '../hooks/token-batch.js';
import type { PromptPair } from '../patching/pairs.js';
import {
  checkHead,
  checkMetric,
  copiesPerForward,
  headRowMask,
  hookName,
  mean,
  pairBatches,
  rowMetrics,
  tileBatch,
  tileRows,
  tileTargets,
  allHeads,
  type CircuitMetric,
  type HeadRef,
} from './common.js';

export interface AblationOptions {
  /** 'mean' (default): mean over the reference prompts per position; 'zero': z = 0. */
  kind?: 'mean' | 'zero';
  /** Reference prompts for the mean (default: the pairs' corrupt prompts). Must have the pairs' length. */
  reference?: readonly (readonly number[])[];
  /** Group id per reference prompt and per pair; each pair is ablated with its group's mean. */
  groups?: { reference: readonly number[]; pairs: readonly number[] };
  metric?: CircuitMetric;
  /** Hooks applied in every run (reference and evaluation). */
  fwdHooks?: FwdHook[];
  /** Upper bound on tokens per batched forward (default 2048). */
  maxBatchTokens?: number;
}

/** Ablation values per layer, [N, T, H, dh] each (one row per pair); owns its tensors. */
export interface AblationValues {
  kind: 'mean' | 'zero';
  perLayer: tf.Tensor[];
  dispose(): void;
}

/** Per-position mean (or zero) z of every head, laid out per pair (its group's mean). */
export function ablationValues(model: HookedModel, pairs: PromptPair[], opts: AblationOptions = {}): AblationValues {
  const { cfg } = model;
  const { T } = pairBatches(model, pairs);
  const N = pairs.length;
  const L = cfg.nLayers;
  const kind = opts.kind ?? 'mean';
  const zShape = [N, T, cfg.nHeads, cfg.dHead];
  if (kind === 'zero') {
    const perLayer = Array.from({ length: L }, () => tf.zeros(zShape));
    return { kind, perLayer, dispose: () => tf.dispose(perLayer) };
  }
  if (kind !== 'mean') fail(`ablation: kind must be mean or zero, got '${String(kind)}'`);
  const reference = opts.reference ?? pairs.map((p) => p.corrupt);
  if (reference.length === 0) fail('ablation: the reference distribution is empty');
  reference.forEach((r, i) => {
    if (r.length !== T) fail(`ablation: reference prompt ${i + 1} has ${r.length} tokens but the pairs have ${T}; the mean is taken per position`);
  });
  const refGroups = opts.groups?.reference ?? reference.map(() => 0);
  const pairGroups = opts.groups?.pairs ?? pairs.map(() => 0);
  if (refGroups.length !== reference.length) fail(`ablation: ${refGroups.length} reference group ids for ${reference.length} reference prompts`);
  if (pairGroups.length !== N) fail(`ablation: ${pairGroups.length} pair group ids for ${N} pairs`);
  const groupIds = [...new Set(refGroups)];
  const gIndex = new Map(groupIds.map((g, i) => [g, i]));
  const G = groupIds.length;
  const counts = new Array<number>(G).fill(0);
  refGroups.forEach((g) => counts[gIndex.get(g)!]++);
  pairGroups.forEach((g, i) => {
    if (!gIndex.has(g)) fail(`ablation: pair ${i + 1} is in group ${g}, which has no reference prompts`);
  });
  const F = T * cfg.nHeads * cfg.dHead;
  const names = Array.from({ length: L }, (_, l) => hookName(cfg, l, 'attn.hook_z'));
  let sums: tf.Tensor[] = Array.from({ length: L }, () => tf.zeros([G, F]));
  const rowsPer = Math.max(1, Math.floor((opts.maxBatchTokens ?? 2048) / T));
  try {
    for (let r0 = 0; r0 < reference.length; r0 += rowsPer) {
      const chunk = reference.slice(r0, r0 + rowsPer);
      // Averaging matrix: A[g, i] = 1 / count(g) for reference prompt i in group g.
      const A = new Float32Array(G * chunk.length);
      chunk.forEach((_, i) => {
        const g = gIndex.get(refGroups[r0 + i])!;
        A[g * chunk.length + i] = 1 / counts[g];
      });
      const { logits, cache } = model.runWithCache(padBatch(chunk), { names, finalPositionOnly: true, fwdHooks: opts.fwdHooks });
      logits.dispose();
      const next = sums.map((s, l) => tf.tidy(() => tf.add(s, tf.matMul(tf.tensor2d(A, [G, chunk.length]), cache.get(names[l]).reshape([chunk.length, F])))));
      cache.dispose();
      tf.dispose(sums);
      sums = next;
    }
    // Row n of the result is its group's mean: one-hot [N, G] · means [G, F].
    const oneHot = new Float32Array(N * G);
    pairGroups.forEach((g, n) => (oneHot[n * G + gIndex.get(g)!] = 1));
    const perLayer = sums.map((s) => tf.tidy(() => tf.matMul(tf.tensor2d(oneHot, [N, G]), s).reshape(zShape)));
    return { kind, perLayer, dispose: () => tf.dispose(perLayer) };
  } finally {
    tf.dispose(sums);
  }
}

/**
 * Mean metric on the clean prompts for each set of heads to ablate (an empty set = the full
 * model). Sets are packed into batched forwards, one block of N rows per set.
 */
export function evaluateAblations(
  model: HookedModel,
  pairs: PromptPair[],
  ablated: readonly (readonly HeadRef[])[],
  values: AblationValues,
  opts: Pick<AblationOptions, 'metric' | 'fwdHooks' | 'maxBatchTokens'> = {},
): number[] {
  const { cfg } = model;
  const { clean, T, targets } = pairBatches(model, pairs);
  const N = pairs.length;
  const metric = checkMetric(opts.metric ?? 'logit_diff');
  ablated.forEach((set) => set.forEach((h) => checkHead(cfg, h, 'ablated head')));
  const C = copiesPerForward(opts.maxBatchTokens ?? 2048, N, T);
  const out: number[] = [];
  for (let c0 = 0; c0 < ablated.length; c0 += C) {
    const sets = ablated.slice(c0, c0 + C);
    const s = sets.length;
    const hooks: FwdHook[] = [...(opts.fwdHooks ?? [])];
    for (let l = 0; l < cfg.nLayers; l++) {
      const perBlock = sets.map((set) => [...new Set(set.filter((h) => h.layer === l).map((h) => h.head))]);
      if (perBlock.every((b) => b.length === 0)) continue;
      const vals = values.perLayer[l];
      hooks.push([hookName(cfg, l, 'attn.hook_z'), (x) => tf.where(tf.broadcastTo(headRowMask(perBlock, N, cfg.nHeads), x.shape), tileRows(vals, s), x)]);
    }
    const logits = model.run(tileBatch(clean, s), { fwdHooks: hooks, finalPositionOnly: true });
    const m = rowMetrics(metric, logits, tileTargets(targets, s));
    logits.dispose();
    for (let b = 0; b < s; b++) out.push(mean(m.slice(b * N, (b + 1) * N)));
  }
  return out;
}

export interface FaithfulnessResult {
  /** LD of the full model (nothing ablated). */
  ldFull: number;
  /** LD with every head outside the circuit ablated. */
  ldCircuit: number;
  /** LD with every head ablated. */
  ldAblated: number;
  /** ldCircuit / ldFull. */
  fraction: number;
  /** (ldCircuit − ldAblated) / (ldFull − ldAblated). */
  normalized: number;
  circuitSize: number;
  kind: 'mean' | 'zero';
}

/** Heads of the model not in `circuit`. */
export function complement(model: HookedModel, circuit: readonly HeadRef[]): HeadRef[] {
  const keep = new Set(circuit.map((h) => `${h.layer}.${h.head}`));
  return allHeads(model.cfg).filter((h) => !keep.has(`${h.layer}.${h.head}`));
}

/** Faithfulness of a circuit of heads (everything else mean-ablated). */
export function faithfulness(model: HookedModel, pairs: PromptPair[], circuit: readonly HeadRef[], opts: AblationOptions & { values?: AblationValues } = {}): FaithfulnessResult {
  circuit.forEach((h) => checkHead(model.cfg, h, 'circuit head'));
  const values = opts.values ?? ablationValues(model, pairs, opts);
  try {
    const [ldFull, ldCircuit, ldAblated] = evaluateAblations(model, pairs, [[], complement(model, circuit), allHeads(model.cfg)], values, opts);
    return {
      ldFull,
      ldCircuit,
      ldAblated,
      fraction: ldCircuit / ldFull,
      // + 0: an empty circuit gives 0, not −0.
      normalized: (ldCircuit - ldAblated) / (ldFull - ldAblated) + 0,
      circuitSize: new Set(circuit.map((h) => `${h.layer}.${h.head}`)).size,
      kind: values.kind,
    };
  } finally {
    if (!opts.values) values.dispose();
  }
}

export interface AblationResult {
  ldBefore: number;
  ldAfter: number;
  /** ldBefore − ldAfter. */
  drop: number;
  /** ldAfter / ldBefore. */
  fractionKept: number;
  kind: 'mean' | 'zero';
}

/** LD before and after ablating the given heads (mean ablation by default). */
export function ablateHeads(model: HookedModel, pairs: PromptPair[], heads: readonly HeadRef[], opts: AblationOptions & { values?: AblationValues } = {}): AblationResult {
  heads.forEach((h) => checkHead(model.cfg, h, 'ablated head'));
  const values = opts.values ?? ablationValues(model, pairs, opts);
  try {
    const [ldBefore, ldAfter] = evaluateAblations(model, pairs, [[], heads], values, opts);
    return { ldBefore, ldAfter, drop: ldBefore - ldAfter, fractionKept: ldAfter / ldBefore, kind: values.kind };
  } finally {
    if (!opts.values) values.dispose();
  }
}
