/**
 * SAE evaluation on prompts: reconstruction quality at the hook and the downstream effect of
 * splicing the reconstruction into the model (SAELens-style metrics).
 *
 * Every position of every prompt counts. Prompts are sorted by length and batched with right
 * padding (causal attention: real positions never see the padding), and padded positions are left
 * out of every sum. Sums are accumulated in float64 on the host.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { padBatch, promptBatches } from '../hooks/token-batch.js';
import { concatImages, type ImageBatch } from '../models/image-batch.js';
import type { Sae } from './sae.js';
import { replaceAtSaeHook, runWithSae, saeHookLayout, spliceSae, toSaeRows } from './splice.js';
import type { HookFn } from '../hooks/hooked-model.js';
import type { TokenBatch } from '../models/transformer.js';
import type { OnnxForward } from '../onnx/onnx-forward.js';

/** The keys `hooklens sae eval --json` prints, in order. */
export const SAE_EVAL_KEYS = ['l0', 'explained_variance', 'mse', 'cosine', 'ce_orig', 'ce_sae', 'ce_zero', 'ce_loss_score', 'kl_div'] as const;
export type SaeEvalMetrics = Record<(typeof SAE_EVAL_KEYS)[number], number>;

/**
 * A latent is "dense" when it fires on more than 10% of tokens, the cut-off of Sun et al. 2025,
 * "Dense SAE Latents Are Features, Not Bugs" (arXiv:2506.15679).
 */
export const DENSE_THRESHOLD = 0.1;
/** log10 density histogram: SAELens' log10(density + 1e-10), bins of 0.5 from −10 to 0. */
const LOG_EPS = 1e-10;
const HIST_EDGES = Array.from({ length: 21 }, (_, i) => -10 + i * 0.5);

export interface SaeEvalResult extends SaeEvalMetrics {
  /** Fraction of variance unexplained = 1 − explained_variance. */
  fvu: number;
  /** Latents that never fire on the eval tokens. */
  dead_fraction: number;
  /** Latents firing on more than DENSE_THRESHOLD of the eval tokens. */
  dense_fraction: number;
  n_tokens: number;
  /** Positions with a next token (CE and KL are averaged over these). */
  n_ce_positions: number;
  /** Per latent: fraction of eval tokens where it is non-zero. */
  feature_density: number[];
  /** Histogram of log10(density + 1e-10); dead latents land in the first bin. */
  log10_density_histogram: { edges: number[]; counts: number[] };
}

export interface EvaluateSaeOptions {
  /** Upper bound on padded tokens per forward pass (default 512). */
  batchTokens?: number;
  /** A VLM's images per prompt (one per placeholder run; prompts already expanded). */
  images?: (ImageBatch | undefined)[];
  /** Called after each batch with tokens done / total. */
  onProgress?: (done: number, total: number) => void;
}

class Sums {
  n = 0;
  l0 = 0;
  sqErr = 0;
  cos = 0;
  ceN = 0;
  ceOrig = 0;
  ceSae = 0;
  ceZero = 0;
  kl = 0;
  constructor(
    readonly sumX: Float64Array,
    readonly sumX2: Float64Array,
    readonly fires: Float64Array,
  ) {}
}

/** Log-probabilities [B·(T−1), V] of positions 0..T−2 of logits [B, T, V]. */
function nextTokenLogProbs(logits: tf.Tensor3D): tf.Tensor2D {
  const [B, T, V] = logits.shape;
  return tf.tidy(() => tf.logSoftmax(logits.slice([0, 0, 0], [B, T - 1, V]).reshape([B * (T - 1), V]))) as tf.Tensor2D;
}

/** Host copy of a tensor computed inside a tidy; the tensor is freed. */
function read(fn: () => tf.Tensor): Float32Array {
  const t = tf.tidy(fn);
  const data = t.dataSync() as Float32Array;
  t.dispose();
  return data;
}

/** lp[i, targets[i]] for each row i. */
function pickTargets(lp: tf.Tensor2D, targets: Int32Array): Float32Array {
  const V = lp.shape[1];
  const idx = Int32Array.from(targets, (t, i) => i * V + t);
  return read(() => tf.gather(lp.reshape([-1]), idx));
}

/** The three forwards of one batch on tfjs: clean (capturing the SAE's input rows), spliced, zeroed. */
function evalBatch(model: HookedModel, sae: Sae, batch: number[][], images: ImageBatch[], s: Sums): void {
  const layout = saeHookLayout(model, sae);
  const tokens = images.length ? { ...padBatch(batch, 'right'), images: concatImages(images) } : padBatch(batch, 'right');
  const held: tf.Tensor[] = [];
  try {
    const logitsOrig = model.run(tokens, { fwdHooks: [[layout.hook, (act) => void held.push(tf.keep(toSaeRows(act, layout)))]] });
    const x = held[0] as tf.Tensor2D;
    held.push(logitsOrig);
    const logitsSae = runWithSae(model, tokens, sae);
    held.push(logitsSae);
    const logitsZero = model.run(tokens, { fwdHooks: [replaceAtSaeHook(model, sae, (rows) => tf.zerosLike(rows))] });
    held.push(logitsZero);
    scoreBatch(sae, tokens, batch, x, logitsOrig, logitsSae, logitsZero, s);
  } finally {
    tf.dispose(held);
  }
}

/**
 * The same forwards on onnxruntime: the clean run outputs the hook, the SAE (and the zeroing)
 * run on tfjs on those rows, and each replacement goes back in as the graph's patch input.
 */
async function evalBatchOnnx(model: HookedModel, sae: Sae, batch: number[][], s: Sums, onnx: OnnxForward): Promise<void> {
  const layout = saeHookLayout(model, sae);
  const tokens = padBatch(batch, 'right');
  const orig = await onnx.run(tokens, { hooks: [layout.hook] });
  const a = orig.hooks.get(layout.hook)!;
  const held: tf.Tensor[] = [];
  try {
    const act = tf.tensor(a.data, a.shape);
    held.push(act);
    const replaced = async (fn: HookFn) => {
      const r = tf.tidy(() => fn(act, { name: layout.hook }) as tf.Tensor);
      const data = r.dataSync() as Float32Array;
      r.dispose();
      const l = await onnx.runReplaced(tokens, layout.hook, { data, shape: a.shape });
      return tf.tensor3d(l.data, l.shape as [number, number, number]);
    };
    const logitsSae = await replaced(spliceSae(model, sae)[0][1]);
    held.push(logitsSae);
    const logitsZero = await replaced(replaceAtSaeHook(model, sae, (rows) => tf.zerosLike(rows))[1]);
    held.push(logitsZero);
    const logitsOrig = tf.tensor3d(orig.logits!.data, orig.logits!.shape as [number, number, number]);
    held.push(logitsOrig);
    const x = toSaeRows(act, layout);
    held.push(x);
    scoreBatch(sae, tokens, batch, x, logitsOrig, logitsSae, logitsZero, s);
  } finally {
    tf.dispose(held);
  }
}

/** Reconstruction and CE statistics of one batch, added to `s`. */
function scoreBatch(sae: Sae, tokens: TokenBatch, batch: number[][], x: tf.Tensor2D, logitsOrig: tf.Tensor3D, logitsSae: tf.Tensor3D, logitsZero: tf.Tensor3D, s: Sums): void {
  const { batch: B, seqLen: T } = tokens;
  const d = sae.cfg.dIn;
  const lengths = batch.map((p) => p.length);
  // Row b·T + t is a real position when t < lengths[b]; padded rows count nowhere.
  const rowMask = new Float32Array(B * T);
  lengths.forEach((len, b) => rowMask.fill(1, b * T, b * T + len));
  const { acts, recons } = sae.forward(x);
  const l0Rows = read(() => tf.sum(tf.cast(tf.notEqual(acts, 0), 'float32'), 1));
  const fires = read(() => tf.sum(tf.mul(tf.cast(tf.notEqual(acts, 0), 'float32'), tf.tensor2d(rowMask, [B * T, 1])), 0));
  const xs = x.dataSync();
  const xh = recons.dataSync();
  tf.dispose([acts, recons]);
  const n = B * T;
  for (let i = 0; i < n; i++) {
    if (!rowMask[i]) continue;
    let err = 0, dot = 0, nx = 0, nh = 0;
    for (let j = 0; j < d; j++) {
      const a = xs[i * d + j], h = xh[i * d + j];
      err += (a - h) ** 2;
      dot += a * h;
      nx += a * a;
      nh += h * h;
      s.sumX[j] += a;
      s.sumX2[j] += a * a;
    }
    s.sqErr += err;
    const denom = Math.sqrt(nx) * Math.sqrt(nh);
    s.cos += denom > 0 ? dot / denom : 0;
    s.l0 += l0Rows[i];
  }
  for (let j = 0; j < fires.length; j++) s.fires[j] += fires[j];
  for (const len of lengths) s.n += len;

  if (T < 2) return;
  // Next-token targets for positions 0..len−2 of each prompt, as rows of the [B·(T−1)] layout.
  const rows: number[] = [];
  const targetIds: number[] = [];
  lengths.forEach((len, b) => {
    for (let t = 0; t < len - 1; t++) {
      rows.push(b * (T - 1) + t);
      targetIds.push(tokens.ids[b * T + t + 1]);
    }
  });
  if (rows.length === 0) return;
  const targets = Int32Array.from(targetIds);
  const real = (logits: tf.Tensor3D) => tf.tidy(() => tf.gather(nextTokenLogProbs(logits), rows)) as tf.Tensor2D;
  const lpOrig = real(logitsOrig);
  const lpSae = real(logitsSae);
  const lpZero = real(logitsZero);
  const kl = read(() => tf.sum(tf.mul(tf.exp(lpOrig), tf.sub(lpOrig, lpSae)), 1));
  const [po, ps, pz] = [lpOrig, lpSae, lpZero].map((lp) => pickTargets(lp, targets));
  tf.dispose([lpOrig, lpSae, lpZero]);
  for (let i = 0; i < targets.length; i++) {
    s.ceOrig -= po[i];
    s.ceSae -= ps[i];
    s.ceZero -= pz[i];
    s.kl += kl[i];
  }
  s.ceN += targets.length;
}

/**
 * Evaluate `sae` at its hook (from cfg.json) on token prompts. Definitions, over all N positions:
 * l0 = mean count of non-zero latents; mse = Σ(x − x̂)² / (N·d_in); explained_variance =
 * 1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (mean per dimension over positions); cosine = mean cos(x, x̂)
 * (0 for a zero vector). CE = mean next-token cross-entropy over positions 0..T−2 of each prompt:
 * ce_orig clean, ce_sae with x̂ spliced in (no error term), ce_zero with the activation zeroed
 * (the part the SAE reads: one head for hook_head_index SAEs);
 * ce_loss_score = (ce_zero − ce_sae)/(ce_zero − ce_orig); kl_div = mean KL(clean ‖ spliced).
 */
export function evaluateSae(model: HookedModel, sae: Sae, prompts: number[][], opts: EvaluateSaeOptions = {}): SaeEvalResult {
  const { order, s } = evalSetup(model, sae, prompts);
  const sorted = order.map((i) => prompts[i]);
  const total = prompts.reduce((n, p) => n + p.length, 0);
  let done = 0;
  for (const { start, group } of promptBatches(sorted, { maxTokens: opts.batchTokens ?? 512 })) {
    const imgs = order.slice(start, start + group.length).map((i) => opts.images?.[i]).filter((x): x is ImageBatch => !!x);
    evalBatch(model, sae, group, imgs, s);
    done += group.reduce((n, p) => n + p.length, 0);
    opts.onProgress?.(done, total);
  }
  return evalResult(sae, s);
}

/** evaluateSae with the forwards on onnxruntime (text language models, no images): the same metrics to ~1e-5. */
export async function evaluateSaeOnnx(model: HookedModel, sae: Sae, prompts: number[][], onnx: OnnxForward, opts: Omit<EvaluateSaeOptions, 'images'> = {}): Promise<SaeEvalResult> {
  const { order, s } = evalSetup(model, sae, prompts);
  const sorted = order.map((i) => prompts[i]);
  const total = prompts.reduce((n, p) => n + p.length, 0);
  let done = 0;
  for (const { group } of promptBatches(sorted, { maxTokens: opts.batchTokens ?? 512 })) {
    await evalBatchOnnx(model, sae, group, s, onnx);
    done += group.reduce((n, p) => n + p.length, 0);
    opts.onProgress?.(done, total);
  }
  return evalResult(sae, s);
}

function evalSetup(model: HookedModel, sae: Sae, prompts: number[][]): { order: number[]; s: Sums } {
  saeHookLayout(model, sae);
  if (prompts.length === 0) fail('SAE eval: no prompts given');
  prompts.forEach((p, i) => {
    if (p.length === 0) fail(`SAE eval: prompt ${i + 1} has no tokens`);
  });
  if (!prompts.some((p) => p.length >= 2)) fail('SAE eval: every prompt has a single token, so there is no next-token cross-entropy to measure');
  // Longest first, so each batch pads to its first prompt and batches shrink as lengths do.
  const order = prompts.map((_, i) => i).sort((a, b) => prompts[b].length - prompts[a].length);
  return { order, s: new Sums(new Float64Array(sae.cfg.dIn), new Float64Array(sae.cfg.dIn), new Float64Array(sae.cfg.dSae)) };
}

function evalResult(sae: Sae, s: Sums): SaeEvalResult {
  let totalVar = 0;
  for (let j = 0; j < sae.cfg.dIn; j++) totalVar += s.sumX2[j] - (s.sumX[j] * s.sumX[j]) / s.n;
  const ev = 1 - s.sqErr / totalVar;
  const density = Array.from(s.fires, (f) => f / s.n);
  const counts = new Array(HIST_EDGES.length - 1).fill(0);
  for (const p of density) {
    const v = Math.log10(p + LOG_EPS);
    counts[Math.min(counts.length - 1, Math.max(0, Math.floor((v - HIST_EDGES[0]) / 0.5)))]++;
  }
  const ceOrig = s.ceOrig / s.ceN;
  const ceSae = s.ceSae / s.ceN;
  const ceZero = s.ceZero / s.ceN;
  return {
    l0: s.l0 / s.n,
    explained_variance: ev,
    mse: s.sqErr / (s.n * sae.cfg.dIn),
    cosine: s.cos / s.n,
    ce_orig: ceOrig,
    ce_sae: ceSae,
    ce_zero: ceZero,
    ce_loss_score: (ceZero - ceSae) / (ceZero - ceOrig),
    kl_div: s.kl / s.ceN,
    fvu: 1 - ev,
    dead_fraction: density.filter((p) => p === 0).length / density.length,
    dense_fraction: density.filter((p) => p > DENSE_THRESHOLD).length / density.length,
    n_tokens: s.n,
    n_ce_positions: s.ceN,
    feature_density: density,
    log10_density_histogram: { edges: HIST_EDGES, counts },
  };
}

/** Only the contract keys, in contract order. */
export function pickEvalMetrics(r: SaeEvalResult): SaeEvalMetrics {
  return Object.fromEntries(SAE_EVAL_KEYS.map((k) => [k, r[k]])) as SaeEvalMetrics;
}
