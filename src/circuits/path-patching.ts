/**
 * Path patching (Wang et al. 2022, "Interpretability in the Wild", §3): the effect of a sender
 * head's output, taken from the corrupted (e.g. ABC) run, when it may act **only along the paths
 * into the given receivers** — the logits (the residual path to the unembedding) or the q / k / v
 * inputs of receiver heads — while every other head is frozen at its clean value.
 *
 * Three runs, all on the clean prompts:
 *  1. clean and corrupt runs cache every head's z (and the clean residual stream / MLP outputs);
 *  2. the sender's z is set to its corrupt value and every other head's z to its clean value
 *     (MLPs are recomputed unless `freezeMlps`, as in the IOI paper). For receivers = logits the
 *     metric of this run is the answer. Otherwise the receivers' hook_q / hook_k / hook_v are
 *     recorded — the receiver's q is W_Q applied to ln1 of the residual stream, so this is exactly
 *     "splicing" the sender's path into that head's query input and nowhere else;
 *  3. a fresh clean run with only the receivers' q / k / v (those heads' slices) replaced by the
 *     values from run 2, everything else free; its metric is the answer.
 *
 * Effect (IOI paper normalisation, noising direction): (M_patched − M_clean) / (M_clean − M_corrupt),
 * so 0 = no effect, −1 = the whole clean–corrupt gap; negative means the sender's clean output
 * along those paths supports the answer. Senders are batched (several per forward, each a block of
 * N rows) and every run resumes from the cached clean residual stream at the first layer it changes.
 *
 * GQA / MQA: a k or v receiver is the key/value head its query head reads, so patching the k input
 * of query head h changes the keys of every query head sharing that kv head.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import {
  allHeads,
  checkHead,
  checkMetric,
  copiesPerForward,
  headGrid,
  headRowMask,
  hookName,
  kvHeadOf,
  mean,
  pairBatches,
  rowMetrics,
  tileBatch,
  tileRows,
  tileTargets,
  type CircuitMetric,
  type HeadRef,
} from './common.js';

export type ReceiverInput = 'q' | 'k' | 'v';

export interface Receiver extends HeadRef {
  input: ReceiverInput;
}

export interface PathPatchingOptions {
  /** 'logits' (direct path to the unembedding) or a list of receiver head inputs. */
  receivers: 'logits' | readonly Receiver[];
  /** Heads to score (default every head). */
  senders?: readonly HeadRef[];
  /** Freeze every non-sender head at its clean z in run 2 (default true; false = ordinary patching). */
  freezeHeads?: boolean;
  /** Freeze MLP outputs at their clean values in run 2 (default false, as in the IOI paper). */
  freezeMlps?: boolean;
  /**
   * Positions at which receivers' q / k / v are patched in run 3: 'all' (default) or 'end', the
   * final position only (e.g. name-mover queries at END, as the IOI paper reads them).
   */
  receiverPositions?: 'all' | 'end';
  metric?: CircuitMetric;
  /** Hooks applied in every run (e.g. a fixed ablation). */
  fwdHooks?: FwdHook[];
  /** Upper bound on tokens per batched forward (default 2048). */
  maxBatchTokens?: number;
}

export interface PathPatchingResult {
  receivers: 'logits' | Receiver[];
  senders: HeadRef[];
  receiverPositions: 'all' | 'end';
  freezeHeads: boolean;
  freezeMlps: boolean;
  metric: CircuitMetric;
  ldClean: number;
  ldCorrupt: number;
  shape: [number, number];
  /** Normalised effect per head [L][H]; NaN for heads that were not senders. */
  scores: number[][];
  /** Metric after patching per head [L][H] (NaN for non-senders). */
  patched: number[][];
}

const INPUT_SUFFIX: Record<ReceiverInput, string> = { q: 'attn.hook_q', k: 'attn.hook_k', v: 'attn.hook_v' };

export function pathPatching(model: HookedModel, pairs: PromptPair[], opts: PathPatchingOptions): PathPatchingResult {
  const { cfg } = model;
  const L = cfg.nLayers;
  const H = cfg.nHeads;
  const metric = checkMetric(opts.metric ?? 'logit_diff');
  const freezeHeads = opts.freezeHeads ?? true;
  const freezeMlps = opts.freezeMlps ?? false;
  const receiverPositions = opts.receiverPositions ?? 'all';
  if (receiverPositions !== 'all' && receiverPositions !== 'end') fail(`path patching: receiverPositions must be all or end, got '${String(receiverPositions)}'`);
  const userHooks = opts.fwdHooks ?? [];
  const senders = [...(opts.senders ?? allHeads(cfg))];
  senders.forEach((s) => checkHead(cfg, s, 'sender'));
  let receivers: 'logits' | Receiver[];
  if (opts.receivers === 'logits') receivers = 'logits';
  else {
    if (!Array.isArray(opts.receivers) || opts.receivers.length === 0) fail("path patching: receivers must be 'logits' or a non-empty list of {layer, head, input}");
    receivers = opts.receivers.map((r) => {
      checkHead(cfg, r, 'receiver');
      if (r.input !== 'q' && r.input !== 'k' && r.input !== 'v') fail(`receiver {layer: ${r.layer}, head: ${r.head}}: input must be q, k or v, got '${String(r.input)}'`);
      return { layer: r.layer, head: r.head, input: r.input };
    });
  }
  const { clean, corrupt, T, targets } = pairBatches(model, pairs);
  const N = pairs.length;
  const zName = (l: number) => hookName(cfg, l, 'attn.hook_z');
  const preName = (l: number) => hookName(cfg, l, 'hook_resid_pre');
  const mlpName = (l: number) => hookName(cfg, l, 'hook_mlp_out');
  const layers = Array.from({ length: L }, (_, l) => l);

  const cleanRun = model.runWithCache(clean, {
    names: [...layers.map(zName), ...layers.map(preName), ...(freezeMlps ? layers.map(mlpName) : [])],
    finalPositionOnly: true,
    fwdHooks: userHooks,
  });
  let corruptRun: ReturnType<HookedModel['runWithCache']> | null = null;
  try {
    const ldClean = mean(rowMetrics(metric, cleanRun.logits, targets));
    corruptRun = model.runWithCache(corrupt, { names: layers.map(zName), finalPositionOnly: true, fwdHooks: userHooks });
    const ldCorrupt = mean(rowMetrics(metric, corruptRun.logits, targets));
    if (ldClean === ldCorrupt) fail(`path patching: the metric is the same on clean and corrupt runs (${ldClean}); the effect cannot be normalised`);
    const zClean = layers.map((l) => cleanRun.cache.get(zName(l)));
    const zCorrupt = layers.map((l) => corruptRun!.cache.get(zName(l)));
    const residPre = layers.map((l) => cleanRun.cache.get(preName(l)));
    const mlpClean = freezeMlps ? layers.map((l) => cleanRun.cache.get(mlpName(l))) : [];

    const patched = headGrid(cfg, NaN);
    const S = copiesPerForward(opts.maxBatchTokens ?? 2048, N, T);
    for (let ls = 0; ls < L; ls++) {
      const inLayer = senders.filter((s) => s.layer === ls);
      if (inLayer.length === 0) continue;
      const downstream = receivers === 'logits' ? null : receivers.filter((r) => r.layer > ls);
      if (downstream && downstream.length === 0) {
        // No receiver reads the residual stream after this layer: no path, no effect.
        for (const s of inLayer) patched[s.layer][s.head] = ldClean;
        continue;
      }
      for (let i = 0; i < inLayer.length; i += S) {
        const chunk = inLayer.slice(i, i + S);
        const values = patchChunk(chunk, ls, downstream);
        chunk.forEach((s, j) => (patched[s.layer][s.head] = values[j]));
      }
    }

    const scores = patched.map((row) => row.map((v) => (Number.isNaN(v) ? NaN : (v - ldClean) / (ldClean - ldCorrupt) + 0)));
    return {
      receivers,
      senders,
      receiverPositions,
      freezeHeads,
      freezeMlps,
      metric,
      ldClean,
      ldCorrupt,
      shape: [L, H],
      scores,
      patched,
    };

    /** Metric of each sender in `chunk` (all at layer ls) patched along the paths to `downstream`. */
    function patchChunk(chunk: HeadRef[], ls: number, downstream: Receiver[] | null): number[] {
      const s = chunk.length;
      const rows = tileBatch(clean, s);
      const rowTargets = tileTargets(targets, s);
      const senderMask = (x: tf.Tensor) => tf.broadcastTo(headRowMask(chunk.map((c) => [c.head]), N, H), x.shape);
      const run2Hooks: FwdHook[] = [...userHooks];
      for (let l = ls; l < L; l++) {
        if (freezeHeads) {
          run2Hooks.push([
            zName(l),
            (x) => {
              const frozen = tileRows(zClean[l], s);
              return l === ls ? tf.where(senderMask(x), tileRows(zCorrupt[ls], s), frozen) : frozen;
            },
          ]);
        } else if (l === ls) {
          run2Hooks.push([zName(l), (x) => tf.where(senderMask(x), tileRows(zCorrupt[ls], s), x)]);
        }
        if (freezeMlps) run2Hooks.push([mlpName(l), () => tileRows(mlpClean[l], s)]);
      }
      const resume2 = { layer: ls, residPre: tileRows(residPre[ls], s) };
      try {
        if (!downstream) {
          const logits = model.run(rows, { fwdHooks: run2Hooks, finalPositionOnly: true, resume: resume2 });
          const m = rowMetrics(metric, logits, rowTargets);
          logits.dispose();
          return blockMeans(m, s, N);
        }
        // Run 2: record the receivers' inputs under the sender patch and the freeze.
        const groups = receiverGroups(downstream);
        const run2 = model.runWithCache(rows, { names: groups.map((g) => g.name), fwdHooks: run2Hooks, finalPositionOnly: true, resume: resume2 });
        run2.logits.dispose();
        try {
          // Run 3: clean run with only the receivers' q/k/v slices replaced.
          const run3Hooks: FwdHook[] = [...userHooks];
          for (const g of groups) {
            run3Hooks.push([
              g.name,
              (x) => {
                let cond: tf.Tensor = headRowMask([g.heads], 1, x.shape[2]!);
                if (receiverPositions === 'end') {
                  // Pairs share one length, so END is the last column.
                  const pos = new Uint8Array(T);
                  pos[T - 1] = 1;
                  cond = tf.logicalAnd(cond, tf.tensor4d(pos, [1, T, 1, 1], 'bool'));
                }
                return tf.where(tf.broadcastTo(cond, x.shape), run2.cache.get(g.name), x);
              },
            ]);
          }
          const first = Math.min(...groups.map((g) => g.layer));
          const residFirst = tileRows(residPre[first], s);
          try {
            const logits = model.run(rows, { fwdHooks: run3Hooks, finalPositionOnly: true, resume: { layer: first, residPre: residFirst } });
            const m = rowMetrics(metric, logits, rowTargets);
            logits.dispose();
            return blockMeans(m, s, N);
          } finally {
            if (residFirst !== residPre[first]) residFirst.dispose();
          }
        } finally {
          run2.cache.dispose();
        }
      } finally {
        if (resume2.residPre !== residPre[ls]) resume2.residPre.dispose();
      }
    }

    /** Receivers grouped by hook: per (layer, input), the head indices (kv heads for k/v) to patch. */
    function receiverGroups(rs: Receiver[]): { name: string; layer: number; heads: number[] }[] {
      const byName = new Map<string, { name: string; layer: number; heads: number[] }>();
      for (const r of rs) {
        const name = hookName(cfg, r.layer, INPUT_SUFFIX[r.input]);
        const idx = r.input === 'q' ? r.head : kvHeadOf(cfg, r.head);
        if (!byName.has(name)) byName.set(name, { name, layer: r.layer, heads: [] });
        const g = byName.get(name)!;
        if (!g.heads.includes(idx)) g.heads.push(idx);
      }
      return [...byName.values()];
    }
  } finally {
    cleanRun.logits.dispose();
    cleanRun.cache.dispose();
    if (corruptRun) {
      corruptRun.logits.dispose();
      corruptRun.cache.dispose();
    }
  }
}

/** Mean of each block of N consecutive values. */
function blockMeans(values: number[], blocks: number, N: number): number[] {
  return Array.from({ length: blocks }, (_, s) => mean(values.slice(s * N, (s + 1) * N)));
}

/** Every head's q, k and v as receivers (convenience for "all receivers"). */
export function allReceivers(model: HookedModel, inputs: readonly ReceiverInput[] = ['q', 'k', 'v']): Receiver[] {
  return allHeads(model.cfg).flatMap((h) => inputs.map((input) => ({ ...h, input })));
}
