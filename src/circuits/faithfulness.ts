/**
 * Circuit faithfulness under mean ablation (Wang et al. 2022, §4): every node outside the circuit
 * — attention heads (their z) and, by default, MLP layers (their hook_mlp_out) — is replaced by
 * its mean over a reference distribution — by default the pairs' corrupted (ABC) prompts, mean
 * taken per position (so reference and evaluated prompts share one length; with `groups`, e.g.
 * the template of each prompt, each prompt gets the mean over its own group, as the IOI paper
 * does per template). Embeddings are always kept. With `mlps: 'kept'` MLPs are never ablated
 * (the IOI paper's convention for GPT-2 small, where MLPs are treated as part of every path);
 * on small models that do much of the task in MLPs that convention overstates faithfulness.
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
  allNodes,
  checkMetric,
  checkNode,
  isMlp,
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
  nodeId,
  type NodeRef,
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
  /** 'nodes' (default): MLP layers are circuit nodes, ablated when outside the circuit; 'kept': never ablated. */
  mlps?: 'nodes' | 'kept';
}

/** Ablation values per layer (one row per pair); owns its tensors. */
export interface AblationValues {
  kind: 'mean' | 'zero';
  /** z of every head, [N, T, H, dh] per layer. */
  perLayer: tf.Tensor[];
  /** hook_mlp_out, [N, T, d_model] per layer. */
  mlp: tf.Tensor[];
  dispose(): void;
}

function mlpsAreNodes(opts: Pick<AblationOptions, 'mlps'>): boolean {
  if (opts.mlps !== undefined && opts.mlps !== 'nodes' && opts.mlps !== 'kept') fail(`ablation: mlps must be 'nodes' or 'kept', got '${String(opts.mlps)}'`);
  return opts.mlps !== 'kept';
}

/** Per-position mean (or zero) z of every head and output of every MLP, laid out per pair (its group's mean). */
export function ablationValues(model: HookedModel, pairs: PromptPair[], opts: AblationOptions = {}): AblationValues {
  const { cfg } = model;
  const { T } = pairBatches(model, pairs);
  const N = pairs.length;
  const L = cfg.nLayers;
  const kind = opts.kind ?? 'mean';
  const zShape = [N, T, cfg.nHeads, cfg.dHead];
  const mlpShape = [N, T, cfg.dModel];
  if (kind === 'zero') {
    const perLayer = Array.from({ length: L }, () => tf.zeros(zShape));
    const mlp = Array.from({ length: L }, () => tf.zeros(mlpShape));
    return { kind, perLayer, mlp, dispose: () => tf.dispose([...perLayer, ...mlp]) };
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
  // Sums for every z hook, then every mlp_out hook, each flattened per prompt.
  const Fz = T * cfg.nHeads * cfg.dHead;
  const Fm = T * cfg.dModel;
  const names = [...Array.from({ length: L }, (_, l) => hookName(cfg, l, 'attn.hook_z')), ...Array.from({ length: L }, (_, l) => hookName(cfg, l, 'hook_mlp_out'))];
  const widths = names.map((_, i) => (i < L ? Fz : Fm));
  let sums: tf.Tensor[] = widths.map((F) => tf.zeros([G, F]));
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
      const next = sums.map((s, i) => tf.tidy(() => tf.add(s, tf.matMul(tf.tensor2d(A, [G, chunk.length]), cache.get(names[i]).reshape([chunk.length, widths[i]])))));
      cache.dispose();
      tf.dispose(sums);
      sums = next;
    }
    // Row n of the result is its group's mean: one-hot [N, G] · means [G, F].
    const oneHot = new Float32Array(N * G);
    pairGroups.forEach((g, n) => (oneHot[n * G + gIndex.get(g)!] = 1));
    const perPair = sums.map((s, i) => tf.tidy(() => tf.matMul(tf.tensor2d(oneHot, [N, G]), s).reshape(i < L ? zShape : mlpShape)));
    const perLayer = perPair.slice(0, L);
    const mlp = perPair.slice(L);
    return { kind, perLayer, mlp, dispose: () => tf.dispose(perPair) };
  } finally {
    tf.dispose(sums);
  }
}

/**
 * Mean metric on the clean prompts for each set of nodes (heads, MLPs) to ablate (an empty set =
 * the full model). Sets are packed into batched forwards, one block of N rows per set.
 */
export function evaluateAblations(
  model: HookedModel,
  pairs: PromptPair[],
  ablated: readonly (readonly NodeRef[])[],
  values: AblationValues,
  opts: Pick<AblationOptions, 'metric' | 'fwdHooks' | 'maxBatchTokens'> = {},
): number[] {
  const { cfg } = model;
  const { clean, T, targets } = pairBatches(model, pairs);
  const N = pairs.length;
  const metric = checkMetric(opts.metric ?? 'logit_diff');
  ablated.forEach((set) => set.forEach((n) => checkNode(cfg, n, 'ablated node')));
  const C = copiesPerForward(opts.maxBatchTokens ?? 2048, N, T);
  const out: number[] = [];
  for (let c0 = 0; c0 < ablated.length; c0 += C) {
    const sets = ablated.slice(c0, c0 + C);
    const s = sets.length;
    const hooks: FwdHook[] = [...(opts.fwdHooks ?? [])];
    for (let l = 0; l < cfg.nLayers; l++) {
      const perBlock = sets.map((set) => [...new Set(set.filter((n) => n.layer === l && !isMlp(n)).map((h) => (h as { head: number }).head))]);
      if (perBlock.some((b) => b.length > 0)) {
        const vals = values.perLayer[l];
        hooks.push([hookName(cfg, l, 'attn.hook_z'), (x) => tf.where(tf.broadcastTo(headRowMask(perBlock, N, cfg.nHeads), x.shape), tileRows(vals, s), x)]);
      }
      // An MLP is one "head" of a [rows, T, 1, d] view: reuse the row mask with nHeads = 1.
      const mlpBlocks = sets.map((set) => (set.some((n) => n.layer === l && isMlp(n)) ? [0] : []));
      if (mlpBlocks.some((b) => b.length > 0)) {
        const vals = values.mlp[l];
        hooks.push([
          hookName(cfg, l, 'hook_mlp_out'),
          (x) => tf.where(tf.broadcastTo(headRowMask(mlpBlocks, N, 1).reshape([s * N, 1, 1]), x.shape), tileRows(vals, s), x),
        ]);
      }
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
  /** LD with every node outside the circuit ablated. */
  ldCircuit: number;
  /** LD with every node ablated (heads, and MLPs when they are nodes). */
  ldAblated: number;
  /** ldCircuit / ldFull. */
  fraction: number;
  /** (ldCircuit − ldAblated) / (ldFull − ldAblated). */
  normalized: number;
  /** Distinct nodes in the circuit (heads + MLPs). */
  circuitSize: number;
  circuitHeads: number;
  circuitMlps: number;
  /** Whether MLPs were nodes (ablated outside the circuit) or always kept. */
  mlps: 'nodes' | 'kept';
  kind: 'mean' | 'zero';
}

/** Every ablatable node: heads, plus MLP layers unless opts.mlps is 'kept'. */
export function ablatableNodes(model: HookedModel, opts: Pick<AblationOptions, 'mlps'> = {}): NodeRef[] {
  return mlpsAreNodes(opts) ? allNodes(model.cfg) : allHeads(model.cfg);
}

/** Ablatable nodes of the model not in `circuit`. */
export function complement(model: HookedModel, circuit: readonly NodeRef[], opts: Pick<AblationOptions, 'mlps'> = {}): NodeRef[] {
  const keep = new Set(circuit.map(nodeId));
  return ablatableNodes(model, opts).filter((n) => !keep.has(nodeId(n)));
}

/** Faithfulness of a circuit of heads and MLPs (every other node mean-ablated). */
export function faithfulness(model: HookedModel, pairs: PromptPair[], circuit: readonly NodeRef[], opts: AblationOptions & { values?: AblationValues } = {}): FaithfulnessResult {
  circuit.forEach((n) => checkNode(model.cfg, n, 'circuit node'));
  const values = opts.values ?? ablationValues(model, pairs, opts);
  try {
    const [ldFull, ldCircuit, ldAblated] = evaluateAblations(model, pairs, [[], complement(model, circuit, opts), ablatableNodes(model, opts)], values, opts);
    const ids = new Set(circuit.map(nodeId));
    const nMlps = [...ids].filter((id) => id.startsWith('m')).length;
    return {
      ldFull,
      ldCircuit,
      ldAblated,
      fraction: ldCircuit / ldFull,
      // + 0: an empty circuit gives 0, not −0.
      normalized: (ldCircuit - ldAblated) / (ldFull - ldAblated) + 0,
      circuitSize: ids.size,
      circuitHeads: ids.size - nMlps,
      circuitMlps: nMlps,
      mlps: mlpsAreNodes(opts) ? 'nodes' : 'kept',
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

/** LD before and after ablating the given heads and/or MLPs (mean ablation by default). */
export function ablateHeads(model: HookedModel, pairs: PromptPair[], heads: readonly NodeRef[], opts: AblationOptions & { values?: AblationValues } = {}): AblationResult {
  heads.forEach((n) => checkNode(model.cfg, n, 'ablated node'));
  const values = opts.values ?? ablationValues(model, pairs, opts);
  try {
    const [ldBefore, ldAfter] = evaluateAblations(model, pairs, [[], heads], values, opts);
    return { ldBefore, ldAfter, drop: ldBefore - ldAfter, fractionKept: ldAfter / ldBefore, kind: values.kind };
  } finally {
    if (!opts.values) values.dispose();
  }
}
