/**
 * Edge attribution patching (EAP; Syed, Rager & Conmy 2023): a first-order estimate of the effect
 * of patching one edge of the computational graph. For an edge sender → receiver input,
 *
 *     score = Σ_{prompts, positions} (a_source − a_base)·W_O[sender]  ·  ∂M/∂(receiver input)
 *
 * where (a_source − a_base)·W_O is the sender's change to the residual stream (z difference of a
 * head times its W_O slice; the output difference for an MLP or the embedding) and the gradient is
 * taken on the base run. Noising (default, as in Syed et al.): base = clean, source = corrupt, and
 * scores divided by (M_clean − M_corrupt) estimate the path-patching effect (negative = the edge
 * matters). Denoising: base = corrupt, source = clean, same divisor (the PatchingSession
 * convention: positive = restores the clean behaviour).
 *
 * Receiver inputs:
 *  - head q / k / v: the residual stream read by that head's query (key, value) through ln1. The
 *    gradient w.r.t. ln1's output is shared by all heads and by q, k and v, so we take the gradient
 *    w.r.t. the head's slice of attn.hook_q / hook_k / hook_v and push it back by hand through
 *    that slice of W_Q / W_K / W_V and through ln1:
 *      · lnGrad 'exact' (default for AtP): the full LayerNorm / RMSNorm Jacobian at the cached
 *        input, g = (u − mean(u) − x̂·mean(u⊙x̂)) / σ (no mean(u) for RMSNorm), u = upstream ⊙ w.
 *        This is the true gradient of M through that one input, so edge scores telescope: the
 *        sum over all receivers of a sender (with MLP nodes on) equals its AtP score.
 *      · lnGrad 'frozen' (default when the RelP LN rule is on): σ is a constant (linearisation of
 *        the norm at its scale, x̂·mean term dropped), matching the LN rule used by the autodiff
 *        part of the same pass. With plain gradients this is an approximation of the true
 *        gradient — it ignores how the sender changes the receiver's norm scale.
 *  - MLP m{l} (optional nodes): its input through ln2, same treatment.
 *  - logits: the final residual stream (blocks.{L-1}.hook_resid_post), autodiff through ln_final.
 * RelP: the same with LRP-modified gradients (rules passed to model.gradients).
 *
 * Graph: senders are heads (+ MLPs + the embedding `input`, when asked); an edge exists from every
 * sender to every receiver downstream of it. Without MLP nodes, the paths through MLPs between a
 * sender and a receiver are not represented by any edge (they are in neither score), which is the
 * usual heads-only approximation.
 *
 * GQA / MQA: a k or v receiver is a key/value head shared by several query heads; its edge is
 * drawn into each of them with the shared score.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { DEFAULT_RELP_RULES, RELP_RULES, type RelpRule } from '../models/grad-rules.js';
import { metricPerPrompt, finalRow } from '../patching/metrics.js';
import type { PromptPair } from '../patching/pairs.js';
import { checkMetric, headId, hookName, mlpId, pairBatches, rowMetrics, sliceBatch, sliceTargets, type CircuitMetric } from './common.js';
import { INPUT_ID, LOGITS_ID, makeGraph, type CircuitEdge, type CircuitGraph, type CircuitNode, type EdgeKind } from './graph.js';

export interface EapOptions {
  method?: 'atp' | 'relp';
  /** RelP rules (default LN, Identity, Half). */
  rules?: readonly RelpRule[];
  direction?: 'noising' | 'denoising';
  /** How receiver gradients pass the norm (see the file comment). Default: 'frozen' when the LN rule is on, else 'exact'. */
  lnGrad?: 'exact' | 'frozen';
  /** MLP nodes (senders and receivers). Default false. */
  mlps?: boolean;
  /** The embedding as a sender node `input`. Default false. */
  input?: boolean;
  metric?: CircuitMetric;
  /** Hooks applied in every run. */
  fwdHooks?: FwdHook[];
  /**
   * Upper bound on tokens per gradient pass; prompts are processed in chunks (default 256). Peak
   * memory holds every sender's residual-stream change for one chunk: ≈ (L·H + …)·tokens·d floats.
   */
  maxBatchTokens?: number;
}

export interface EapSender {
  id: string;
  kind: 'head' | 'mlp' | 'input';
  layer?: number;
  head?: number;
}

export interface EapReceiver {
  /** Unique label: 'a{l}.h{h}.q', 'a{l}.h{h}.k' (MHA) or 'a{l}.kv{g}.k' (GQA), 'm{l}', 'logits'. */
  id: string;
  kind: EdgeKind;
  layer?: number;
  /** Query head (q), key/value head (k, v), absent for MLPs and logits. */
  head?: number;
  /** Graph nodes this input feeds: one head (or MLP / logits); every query head of the group for GQA k/v. */
  nodes: string[];
}

export interface EapResult {
  method: 'atp' | 'relp';
  rules: RelpRule[];
  direction: 'noising' | 'denoising';
  lnGrad: 'exact' | 'frozen';
  metric: CircuitMetric;
  ldClean: number;
  ldCorrupt: number;
  nLayers: number;
  nHeads: number;
  senders: EapSender[];
  receivers: EapReceiver[];
  /** Normalised edge scores [sender][receiver]; NaN where there is no edge (receiver not downstream). */
  scores: number[][];
}

export interface EdgeScore {
  from: string;
  /** Receiver label (EapReceiver.id). */
  to: string;
  kind: EdgeKind;
  score: number;
  /** Graph nodes the receiver input feeds (see EapReceiver.nodes). */
  nodes: string[];
}

export function edgeAttributionPatching(model: HookedModel, pairs: PromptPair[], opts: EapOptions = {}): EapResult {
  const { cfg } = model;
  const { nLayers: L, nHeads: H, nKvHeads: K, dHead: dh, dModel: d } = cfg;
  const method = opts.method ?? 'atp';
  if (method !== 'atp' && method !== 'relp') fail(`EAP: method must be atp or relp, got '${String(method)}'`);
  const rules = method === 'relp' ? [...(opts.rules ?? DEFAULT_RELP_RULES)] : [];
  for (const r of rules) if (!RELP_RULES.includes(r)) fail(`EAP: unknown RelP rule '${r}'`);
  if (method === 'atp' && opts.rules && opts.rules.length) fail('EAP: rules apply to method relp');
  const direction = opts.direction ?? 'noising';
  if (direction !== 'noising' && direction !== 'denoising') fail(`EAP: direction must be noising or denoising, got '${String(direction)}'`);
  const lnGrad = opts.lnGrad ?? (rules.includes('LN') ? 'frozen' : 'exact');
  const withMlps = opts.mlps ?? false;
  const withInput = opts.input ?? false;
  const metric = checkMetric(opts.metric ?? 'logit_diff');
  const userHooks = opts.fwdHooks ?? [];
  const layernorm = cfg.norm === 'layernorm';
  const rep = H / K;

  // ---- nodes
  const senders: EapSender[] = [];
  if (withInput) senders.push({ id: INPUT_ID, kind: 'input' });
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) senders.push({ id: headId(l, h), kind: 'head', layer: l, head: h });
    if (withMlps) senders.push({ id: mlpId(l), kind: 'mlp', layer: l });
  }
  /** Receivers of layer l's attention: q per query head, then k and v per kv head. */
  const attnReceivers = (l: number): EapReceiver[] => {
    const out: EapReceiver[] = [];
    for (let h = 0; h < H; h++) out.push({ id: `${headId(l, h)}.q`, kind: 'q', layer: l, head: h, nodes: [headId(l, h)] });
    for (const kind of ['k', 'v'] as const) {
      for (let g = 0; g < K; g++) {
        const nodes = Array.from({ length: rep }, (_, i) => headId(l, g * rep + i));
        out.push({ id: K === H ? `${headId(l, g)}.${kind}` : `a${l}.kv${g}.${kind}`, kind, layer: l, head: g, nodes });
      }
    }
    return out;
  };
  const receivers: EapReceiver[] = [];
  const attnStart: number[] = [];
  const mlpIndex: number[] = [];
  for (let l = 0; l < L; l++) {
    attnStart.push(receivers.length);
    // Layer-0 heads read only the embedding.
    if (l > 0 || withInput) receivers.push(...attnReceivers(l));
    mlpIndex.push(receivers.length);
    if (withMlps) receivers.push({ id: mlpId(l), kind: 'resid', layer: l, nodes: [mlpId(l)] });
  }
  const logitsIndex = receivers.length;
  receivers.push({ id: LOGITS_ID, kind: 'resid', nodes: [LOGITS_ID] });
  const senderIndex = new Map(senders.map((s, i) => [s.id, i]));

  // Which senders feed which receiver block.
  const feedsAttn = (s: EapSender, l: number) => s.kind === 'input' || s.layer! < l;
  const feedsMlp = (s: EapSender, l: number) => s.kind === 'input' || (s.kind === 'head' ? s.layer! <= l : s.layer! < l);
  const sums = senders.map(() => new Float64Array(receivers.length).fill(NaN));
  senders.forEach((s, i) => {
    for (let l = 0; l < L; l++) {
      if ((l > 0 || withInput) && feedsAttn(s, l)) for (let r = attnStart[l]; r < mlpIndex[l]; r++) sums[i][r] = 0;
      if (withMlps && feedsMlp(s, l)) sums[i][mlpIndex[l]] = 0;
    }
    sums[i][logitsIndex] = 0;
  });

  // ---- runs
  const { clean, corrupt, T, targets } = pairBatches(model, pairs);
  const N = pairs.length;
  const [base, source] = direction === 'noising' ? [clean, corrupt] : [corrupt, clean];
  const name = (l: number, s: string) => hookName(cfg, l, s);
  const layers = Array.from({ length: L }, (_, l) => l);
  const attnLayers = layers.filter((l) => l > 0 || withInput);
  const gradNames = [
    ...attnLayers.flatMap((l) => ['attn.hook_q', 'attn.hook_k', 'attn.hook_v'].map((s) => name(l, s))),
    ...(withMlps ? layers.map((l) => name(l, 'ln2.hook_normalized')) : []),
    name(L - 1, 'hook_resid_post'),
  ];
  const srcNames = [...layers.map((l) => name(l, 'attn.hook_z')), ...(withMlps ? layers.map((l) => name(l, 'hook_mlp_out')) : []), ...(withInput ? [name(0, 'hook_resid_pre')] : [])];
  const cacheNames = [
    ...new Set([
      ...srcNames,
      ...attnLayers.flatMap((l) => [name(l, 'hook_resid_pre'), name(l, 'ln1.hook_scale')]),
      ...(withMlps ? layers.flatMap((l) => [name(l, 'hook_resid_mid'), name(l, 'ln2.hook_scale')]) : []),
    ]),
  ];
  const rowsPerChunk = Math.max(1, Math.floor((opts.maxBatchTokens ?? 256) / T));
  let baseSum = 0;
  let sourceSum = 0;
  for (let n0 = 0; n0 < N; n0 += rowsPerChunk) {
    const n1 = Math.min(N, n0 + rowsPerChunk);
    const chunkTargets = sliceTargets(targets, n0, n1);
    const src = model.runWithCache(sliceBatch(source, n0, n1), { names: srcNames, finalPositionOnly: true, fwdHooks: userHooks });
    let grads: Map<string, tf.Tensor> | null = null;
    let cache: ReturnType<HookedModel['gradients']>['cache'] = null;
    try {
      sourceSum += rowMetrics(metric, src.logits, chunkTargets).reduce((a, b) => a + b, 0);
      // Sum over the chunk / N: the gradients of the full batch mean, whatever the chunking.
      const res = model.gradients(
        sliceBatch(base, n0, n1),
        gradNames,
        (logits) => tf.div(tf.sum(metricPerPrompt(metric, finalRow(logits), chunkTargets)), N).asScalar(),
        { cacheNames, rules, finalPositionOnly: true, fwdHooks: userHooks },
      );
      grads = res.grads;
      cache = res.cache!;
      baseSum += res.value * N;
      accumulateChunk(src.cache, cache, grads, n1 - n0);
    } finally {
      src.logits.dispose();
      src.cache.dispose();
      cache?.dispose();
      if (grads) tf.dispose([...grads.values()]);
    }
  }
  const mBase = baseSum / N;
  const mSource = sourceSum / N;
  const [ldClean, ldCorrupt] = direction === 'noising' ? [mBase, mSource] : [mSource, mBase];
  if (ldClean === ldCorrupt) fail(`EAP: the metric is the same on clean and corrupt runs (${ldClean}); scores cannot be normalised`);
  const scale = 1 / (ldClean - ldCorrupt);
  return {
    method,
    rules,
    direction,
    lnGrad,
    metric,
    ldClean,
    ldCorrupt,
    nLayers: L,
    nHeads: H,
    senders,
    receivers,
    scores: sums.map((row) => Array.from(row, (v) => v * scale)),
  };

  /** Add one chunk's Σ Δ·g to every edge. */
  function accumulateChunk(srcCache: { get(n: string): tf.Tensor }, baseCache: { get(n: string): tf.Tensor }, g: Map<string, tf.Tensor>, n: number): void {
    const M = n * T * d;
    /** Sender blocks: rows of [S_b, M] residual-stream changes, with their sender indices. */
    const blocks: { idx: number[]; layer: number; kind: 'head' | 'mlp' | 'input'; m: tf.Tensor2D }[] = [];
    try {
      if (withInput) {
        const p = name(0, 'hook_resid_pre');
        blocks.push({ idx: [senderIndex.get(INPUT_ID)!], layer: -1, kind: 'input', m: tf.tidy(() => tf.sub(srcCache.get(p), baseCache.get(p)).reshape([1, M])) as tf.Tensor2D });
      }
      for (let l = 0; l < L; l++) {
        const z = name(l, 'attn.hook_z');
        const m = tf.tidy(() => {
          const dz = tf.transpose(tf.sub(srcCache.get(z), baseCache.get(z)).reshape([n * T, H, dh]), [1, 0, 2]);
          const W_O = model.weight(`blocks.${l}.attn.W_O`).reshape([H, dh, d]);
          return tf.matMul(dz, W_O).reshape([H, M]);
        }) as tf.Tensor2D;
        blocks.push({ idx: Array.from({ length: H }, (_, h) => senderIndex.get(headId(l, h))!), layer: l, kind: 'head', m });
        if (withMlps) {
          const o = name(l, 'hook_mlp_out');
          blocks.push({ idx: [senderIndex.get(mlpId(l))!], layer: l, kind: 'mlp', m: tf.tidy(() => tf.sub(srcCache.get(o), baseCache.get(o)).reshape([1, M])) as tf.Tensor2D });
        }
      }
      const project = (recv: tf.Tensor2D, rIdx: number[], use: (b: (typeof blocks)[number]) => boolean) => {
        const recvT = tf.transpose(recv);
        try {
          for (const b of blocks) {
            if (!use(b)) continue;
            const out = tf.matMul(b.m, recvT);
            const v = out.dataSync();
            out.dispose();
            b.idx.forEach((si, i) => rIdx.forEach((ri, j) => (sums[si][ri] += v[i * rIdx.length + j])));
          }
        } finally {
          recvT.dispose();
        }
      };
      for (const l of attnLayers) {
        const recv = tf.tidy(() => attnReceiverGrads(baseCache, g, l, n)) as tf.Tensor2D;
        try {
          const rIdx = Array.from({ length: mlpIndex[l] - attnStart[l] }, (_, i) => attnStart[l] + i);
          project(recv, rIdx, (b) => b.kind === 'input' || b.layer < l);
        } finally {
          recv.dispose();
        }
      }
      if (withMlps) {
        for (let l = 0; l < L; l++) {
          const recv = tf.tidy(() => {
            const gn = g.get(name(l, 'ln2.hook_normalized'))!.reshape([1, n * T, d]);
            const u = layernorm ? tf.mul(gn, model.weight(`blocks.${l}.ln2.w`)) : gn;
            return normBackward(u, baseCache.get(name(l, 'hook_resid_mid')), baseCache.get(name(l, 'ln2.hook_scale')), n).reshape([1, M]);
          }) as tf.Tensor2D;
          try {
            project(recv, [mlpIndex[l]], (b) => b.kind === 'input' || (b.kind === 'head' ? b.layer <= l : b.layer < l));
          } finally {
            recv.dispose();
          }
        }
      }
      const final = tf.tidy(() => g.get(name(L - 1, 'hook_resid_post'))!.reshape([1, M])) as tf.Tensor2D;
      try {
        project(final, [logitsIndex], () => true);
      } finally {
        final.dispose();
      }
    } finally {
      tf.dispose(blocks.map((b) => b.m));
    }
  }

  /** Gradients w.r.t. the residual stream through each q / k / v input of layer l: [H + 2K, n·T·d]. */
  function attnReceiverGrads(baseCache: { get(n: string): tf.Tensor }, g: Map<string, tf.Tensor>, l: number, n: number): tf.Tensor {
    const parts = (['q', 'k', 'v'] as const).map((kind) => {
      const nh = kind === 'q' ? H : K;
      const W = model.weight(`blocks.${l}.attn.W_${kind.toUpperCase()}`); // [d, nh·dh]
      const gk = tf.transpose(g.get(name(l, `attn.hook_${kind}`))!.reshape([n * T, nh, dh]), [1, 0, 2]); // [nh, nT, dh]
      const Wt = tf.transpose(W.reshape([d, nh, dh]), [1, 2, 0]); // [nh, dh, d]
      return tf.matMul(gk, Wt); // [nh, nT, d]: gradient w.r.t. ln1's output through this head's input
    });
    const u = tf.mul(tf.concat(parts, 0), model.weight(`blocks.${l}.ln1.w`));
    const out = normBackward(u, baseCache.get(name(l, 'hook_resid_pre')), baseCache.get(name(l, 'ln1.hook_scale')), n);
    return out.reshape([H + 2 * K, n * T * d]);
  }

  /**
   * Upstream u [R, nT, d] (gradient w.r.t. the normalised, unweighted x̂) → gradient w.r.t. the norm's
   * input x [R, nT, d], at the cached input x [n, T, d] and scale σ [n, T, 1].
   */
  function normBackward(u: tf.Tensor, x: tf.Tensor, sigma: tf.Tensor, n: number): tf.Tensor {
    const s = sigma.reshape([n * T, 1]);
    let x2 = x.reshape([n * T, d]);
    if (layernorm) x2 = tf.sub(x2, tf.mean(x2, -1, true));
    let out = layernorm ? tf.sub(u, tf.mean(u, -1, true)) : u;
    if (lnGrad === 'exact') {
      const xhat = tf.div(x2, s);
      out = tf.sub(out, tf.mul(xhat, tf.mean(tf.mul(u, xhat), -1, true)));
    }
    return tf.div(out, s);
  }
}

/** The k edges with the largest |score| (or most positive / most negative). */
export function topEdges(result: EapResult, k: number, by: 'abs' | 'positive' | 'negative' = 'abs'): EdgeScore[] {
  const all: EdgeScore[] = [];
  result.scores.forEach((row, si) =>
    row.forEach((score, ri) => {
      if (Number.isNaN(score)) return;
      const r = result.receivers[ri];
      all.push({ from: result.senders[si].id, to: r.id, kind: r.kind, score, nodes: r.nodes });
    }),
  );
  const key = (e: EdgeScore) => (by === 'abs' ? Math.abs(e.score) : by === 'positive' ? e.score : -e.score);
  all.sort((a, b) => key(b) - key(a) || a.from.localeCompare(b.from) || a.to.localeCompare(b.to));
  return all.slice(0, Math.max(0, k));
}

/** Every edge with |score| ≥ threshold. */
export function edgesAbove(result: EapResult, threshold: number): EdgeScore[] {
  return topEdges(result, Number.MAX_SAFE_INTEGER).filter((e) => Math.abs(e.score) >= threshold);
}

/** Sum of a sender's edge scores over every receiver it feeds. */
export function senderTotals(result: EapResult): Map<string, number> {
  return new Map(result.senders.map((s, i) => [s.id, result.scores[i].reduce((a, v) => (Number.isNaN(v) ? a : a + v), 0)]));
}

/** A circuit graph of the given edges (e.g. topEdges(result, 50)); GQA k/v edges fan out to their query heads. */
export function eapGraph(result: EapResult, edges: readonly EdgeScore[], meta: Record<string, unknown> = {}): CircuitGraph {
  const graphEdges: CircuitEdge[] = edges.flatMap((e) => e.nodes.map((to) => ({ from: e.from, to, kind: e.kind, weight: e.score })));
  const nodes: CircuitNode[] = [];
  return makeGraph(nodes, graphEdges, {
    method: `eap-${result.method}`,
    rules: result.rules,
    direction: result.direction,
    lnGrad: result.lnGrad,
    metric: result.metric,
    ldClean: result.ldClean,
    ldCorrupt: result.ldCorrupt,
    nLayers: result.nLayers,
    nHeads: result.nHeads,
    ...meta,
  });
}
