/**
 * Shared pieces of the circuit tools: head addressing ({layer, head} ↔ 'a{l}.h{h}'), hook names,
 * batch tiling, and the final-position metric over prompt pairs.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { padBatch } from '../hooks/token-batch.js';
import type { ModelConfig } from '../models/config.js';
import type { TokenBatch } from '../models/transformer.js';
import { finalRow, metricPerPrompt, type MetricKind, type MetricTargets } from '../patching/metrics.js';
import { commonLength, type PromptPair } from '../patching/pairs.js';

/** An attention head, TransformerLens style: layer and head index (both 0-based). */
export interface HeadRef {
  layer: number;
  head: number;
}

/** A head with a score (node attribution, path-patching effect, pattern score, …). */
export interface HeadScore extends HeadRef {
  score: number;
}

/** Metrics usable by the circuit tools (all need only the answer/wrong ids). */
export type CircuitMetric = Exclude<MetricKind, 'kl'>;

export const headId = (layer: number, head: number): string => `a${layer}.h${head}`;
export const mlpId = (layer: number): string => `m${layer}`;

/** A whole MLP layer as a circuit node (its hook_mlp_out at every position). */
export interface MlpRef {
  layer: number;
  mlp: true;
}

/** A circuit node: an attention head or an MLP layer. */
export type NodeRef = HeadRef | MlpRef;
export type NodeScore = NodeRef & { score: number };

export const isMlp = (n: NodeRef): n is MlpRef => (n as MlpRef).mlp === true;
export const nodeId = (n: NodeRef): string => (isMlp(n) ? mlpId(n.layer) : headId(n.layer, n.head));

/** Every MLP layer. */
export function allMlps(cfg: ModelConfig): MlpRef[] {
  return Array.from({ length: cfg.nLayers }, (_, layer) => ({ layer, mlp: true as const }));
}

/** Heads and MLPs in forward order (a0.h0 … a0.hH, m0, a1.h0 …). */
export function allNodes(cfg: ModelConfig): NodeRef[] {
  const out: NodeRef[] = [];
  for (let layer = 0; layer < cfg.nLayers; layer++) {
    for (let head = 0; head < cfg.nHeads; head++) out.push({ layer, head });
    out.push({ layer, mlp: true });
  }
  return out;
}

export function checkNode(cfg: ModelConfig, n: NodeRef, what = 'node'): void {
  if (!isMlp(n)) return checkHead(cfg, n, what);
  if (!Number.isInteger(n.layer) || n.layer < 0 || n.layer >= cfg.nLayers) fail(`${what} m${n.layer}: layer must be in 0..${cfg.nLayers - 1}`);
}

export function hookName(cfg: ModelConfig, layer: number, suffix: string): string {
  return `blocks.${layer}.${suffix}`;
}

export function allHeads(cfg: ModelConfig): HeadRef[] {
  const out: HeadRef[] = [];
  for (let layer = 0; layer < cfg.nLayers; layer++) for (let head = 0; head < cfg.nHeads; head++) out.push({ layer, head });
  return out;
}

export function checkHead(cfg: ModelConfig, h: HeadRef, what = 'head'): void {
  if (!Number.isInteger(h.layer) || h.layer < 0 || h.layer >= cfg.nLayers) fail(`${what} {layer: ${h.layer}, head: ${h.head}}: layer must be in 0..${cfg.nLayers - 1}`);
  if (!Number.isInteger(h.head) || h.head < 0 || h.head >= cfg.nHeads) fail(`${what} {layer: ${h.layer}, head: ${h.head}}: head must be in 0..${cfg.nHeads - 1}`);
}

/** Key/value head a query head reads under GQA/MQA (itself for MHA). */
export function kvHeadOf(cfg: ModelConfig, head: number): number {
  return Math.floor(head / (cfg.nHeads / cfg.nKvHeads));
}

/** [L][H] grid of `fill`. */
export function headGrid(cfg: ModelConfig, fill = 0): number[][] {
  return Array.from({ length: cfg.nLayers }, () => new Array<number>(cfg.nHeads).fill(fill));
}

/** Validate pairs (one shared length, answer/wrong in vocabulary) and build the clean/corrupt batches. */
export function pairBatches(model: HookedModel, pairs: PromptPair[]): { clean: TokenBatch; corrupt: TokenBatch; T: number; targets: MetricTargets } {
  if (pairs.length === 0) fail('circuits: need at least one prompt pair');
  const T = commonLength(pairs);
  const V = model.cfg.dVocab;
  pairs.forEach((p, i) => {
    if (p.corrupt.length !== T) fail(`pair ${i + 1}: clean has ${T} tokens but corrupt has ${p.corrupt.length}`);
    for (const [k, id] of [['answer', p.answer], ['wrong', p.wrong]] as const) {
      if (!Number.isInteger(id) || id < 0 || id >= V) fail(`pair ${i + 1}: ${k} token ${id} is outside the vocabulary (0..${V - 1})`);
    }
  });
  return {
    clean: padBatch(pairs.map((p) => p.clean)),
    corrupt: padBatch(pairs.map((p) => p.corrupt)),
    T,
    targets: { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) },
  };
}

/** Rows [start, end) of a batch. */
export function sliceBatch(tokens: TokenBatch, start: number, end: number): TokenBatch {
  const T = tokens.seqLen;
  return { ids: tokens.ids.slice(start * T, end * T), mask: tokens.mask.slice(start * T, end * T), batch: end - start, seqLen: T };
}

export { tileBatch } from '../hooks/token-batch.js';

export function tileTargets(t: MetricTargets, times: number): MetricTargets {
  const rep = (xs: number[]) => Array.from({ length: times }, () => xs).flat();
  return { answer: rep(t.answer), wrong: rep(t.wrong) };
}

export function sliceTargets(t: MetricTargets, start: number, end: number): MetricTargets {
  return { answer: t.answer.slice(start, end), wrong: t.wrong.slice(start, end) };
}

/** Per-row metric of final-position logits [b, 1, V] as a JS array. Disposes nothing it did not make. */
export function rowMetrics(kind: CircuitMetric, logits: tf.Tensor3D, targets: MetricTargets): number[] {
  const v = tf.tidy(() => metricPerPrompt(kind, finalRow(logits), targets));
  const out = Array.from(v.dataSync());
  v.dispose();
  return out;
}

/** Accuracy (logit difference > 0) and mean final-position logit difference of a batch. */
export function logitDiffScore(model: HookedModel, tokens: TokenBatch, targets: MetricTargets): { n: number; accuracy: number; meanLogitDiff: number } {
  const logits = model.run(tokens, { finalPositionOnly: true });
  const lds = rowMetrics('logit_diff', logits, targets);
  logits.dispose();
  return { n: lds.length, accuracy: lds.filter((x) => x > 0).length / lds.length, meanLogitDiff: mean(lds) };
}

/** Mean metric of a plain (hooked) run over the batch. */
export function meanMetric(model: HookedModel, tokens: TokenBatch, targets: MetricTargets, kind: CircuitMetric, fwdHooks: FwdHook[] = []): number {
  const logits = model.run(tokens, { finalPositionOnly: true, fwdHooks });
  const m = rowMetrics(kind, logits, targets);
  logits.dispose();
  return mean(m);
}

export function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Number of copies of an N-row batch of length T that fit into `maxTokens` (at least 1). */
export function copiesPerForward(maxTokens: number, N: number, T: number): number {
  return Math.max(1, Math.floor(maxTokens / (N * T)));
}

export function checkMetric(kind: string): CircuitMetric {
  if (kind !== 'logit_diff' && kind !== 'logprob_diff' && kind !== 'prob') fail(`circuits: metric must be logit_diff, logprob_diff or prob, got '${kind}'`);
  return kind;
}

/**
 * Boolean mask broadcastable over a [rows, T, nHeads, d] activation: rows block s (of N rows each)
 * selects the heads in `perBlock[s]`.
 */
export function headRowMask(perBlock: readonly (readonly number[])[], N: number, nHeads: number): tf.Tensor4D {
  const m = new Uint8Array(perBlock.length * N * nHeads);
  perBlock.forEach((heads, s) => {
    for (let n = 0; n < N; n++) for (const h of heads) m[(s * N + n) * nHeads + h] = 1;
  });
  return tf.tensor4d(m, [perBlock.length * N, 1, nHeads, 1], 'bool');
}

/** Tile a cached [N, ...] activation to [S·N, ...]. */
export function tileRows(x: tf.Tensor, S: number): tf.Tensor {
  return S === 1 ? x : tf.tile(x, [S, ...x.shape.slice(1).map(() => 1)]);
}
