/**
 * SAE training from Arrow activation caches, SAELens-style.
 *
 * Data: rows stream from one or more cache files through ActivationStream (bounded memory:
 * one record batch plus a fixed shuffle buffer), forever (epochs: Infinity), seeded.
 *
 * Architectures and losses (all on the normalised input xₙ = normalizeIn(x), as SAELens trains):
 *   - standard: ReLU; loss = Σ_d (x̂ₙ − xₙ)² + λ_t·Σ_i f_i·‖W_dec[i]‖, both averaged over rows
 *     (SAELens' StandardTrainingSAE with lp_norm 1); λ_t ramps linearly over l1WarmupSteps.
 *   - topk / batchtopk: per-row top-k (batchtopk: top k·n of the whole batch) with ReLU; loss =
 *     Σ_d (x̂ₙ − xₙ)² + c_aux·AuxK. AuxK (Gao et al. 2024, §A.2 / SAELens calculate_topk_aux_loss):
 *     the top-k_aux pre-activations among *dead* latents (ReLU'd) reconstruct the main residual
 *     e = xₙ − x̂ₙ (a constant): AuxK = scale·Σ_d (f_aux·W_dec − e)², k_aux = d_in/2,
 *     scale = min(1, n_dead/k_aux), c_aux = 1/32. Unlike SAELens the aux reconstruction has no
 *     b_dec (a residual has no offset), as in Gao et al.'s code.
 *   - batchtopk additionally tracks SAELens' running threshold (EMA, rate 0.01, of the smallest
 *     positive activation per batch); saved SAEs carry it as `threshold`, so inference is the
 *     JumpReLU form SAELens saves BatchTopK SAEs in.
 *
 * Gradients are written out by hand (closed form; masks are constants, as in SAELens) rather than
 * taken with tf autodiff: fewer ops, nothing to keep alive across the tape, and
 * test/sae-train.test.ts checks them against tf.grads. The forward activation is
 * trainingActivation(), the same values as Sae.activate (tested) with ops that are fast on
 * tfjs-wasm (its broadcasting comparisons and transposed matMuls take a slow generic path). Optimiser: Adam (torch/tf.train.adam
 * update, ε = 1e-8), implemented here on tf variables instead of tf.train.adam because its
 * moments are private (needed to checkpoint and to reset resampled rows), its learning rate is
 * fixed at construction (we need warm-up/decay), and setWeights rebuilds the bias-correction
 * accumulator with pow() so a resumed run would drift in the last bits. Bias corrections are
 * computed in float64 on the host from the step count.
 *
 * Initialisation: Sae.init (W_dec rows uniform then unit norm, W_enc = W_decᵀ, b_enc = 0); b_dec is
 * the geometric median (Weiszfeld, default) or mean of a sample of normalised rows, as in
 * Anthropic's and Gao et al.'s setups. Decoder rows are kept at unit norm: the gradient component
 * parallel to each row is removed before the update and rows are renormalised after it.
 *
 * Dead latents: tokens since each latent last fired; dead = not fired in `deadTokens` tokens.
 * standard SAEs resample dead latents every `resampleEvery` steps (Anthropic, "Towards
 * Monosemanticity": inputs drawn ∝ squared reconstruction loss from the current batch; decoder
 * row = the centred input, normalised; encoder column = the same times 0.2 × mean alive encoder
 * norm; b_enc = 0; Adam moments of those rows/columns zeroed — the global step, and so the bias
 * correction, is not reset, as in torch). topk/batchtopk SAEs use AuxK instead.
 *
 * Normalisation: normalize_activations "expected_average_only_in" estimates
 * sqrt(d_in)/E‖x‖ from the init sample and stores it in cfg.json as norm_scaling_factor, which
 * Sae.normalizeIn/denormalizeOut (and so eval and splicing) apply. Weights are not folded
 * (SAELens folds the factor in when it saves: W_enc·s, W_dec/s, b_dec/s with normalize "none";
 * do that for a reader that ignores norm_scaling_factor).
 *
 * Determinism and resume: all randomness is seeded (weights, stream shuffling, resampling); with
 * the single-threaded wasm backend a run is bit-for-bit repeatable. A checkpoint is a loadable
 * SAE directory plus trainer_state.json (step, tokens, RNG state, dead counters, density window,
 * threshold EMA, resolved options) and optimizer.safetensors (Adam moments); it is written to a
 * temp directory and swapped in by rename. Resuming rebuilds the stream from its seed and skips
 * the batches already consumed, so N steps + resume + N steps equals 2N straight steps exactly.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { fail, HooklensError } from '../errors.js';
import { writeDirAtomic } from '../io/atomic.js';
import type { RawTensor } from '../io/raw-tensor.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { ActivationStream, type ActivationBatch } from './activation-stream.js';
import { makeSaeConfig, type SaeConfig } from './config.js';
import { loadSae, saveSae } from './io.js';
import { Sae } from './sae.js';

export const TRAIN_ARCHITECTURES = ['standard', 'topk', 'batchtopk'] as const;
export type TrainArchitecture = (typeof TRAIN_ARCHITECTURES)[number];
export const TRAIN_NORMALIZE_MODES = ['none', 'expected_average_only_in'] as const;
export type TrainNormalizeMode = (typeof TRAIN_NORMALIZE_MODES)[number];
export const B_DEC_INITS = ['geometric_median', 'mean', 'zeros'] as const;
export type BDecInit = (typeof B_DEC_INITS)[number];

export const CHECKPOINT_STATE_FILE = 'trainer_state.json';
export const CHECKPOINT_OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_VERSION = 1;

/** Options that shape the training trajectory (stored in checkpoints; a resume must not change them). */
export interface SaeTrainSettings {
  /** Required for a fresh run (a resume takes it from the checkpoint). */
  architecture?: TrainArchitecture;
  hook: string;
  /** Required for a fresh run. */
  dSae?: number;
  /** Latents per row (topk) or on average per row (batchtopk). */
  k?: number;
  /** standard: λ of the L1 penalty (SAELens l1_coefficient). Default 1 (SAELens 6). */
  l1Coefficient?: number;
  /** standard: λ ramps linearly from λ/l1WarmupSteps to λ over these steps. Default 0. */
  l1WarmupSteps?: number;
  /** Adam learning rate. Default 3e-4. */
  lr?: number;
  /** Linear warm-up from lr/lrWarmupSteps to lr. Default 0. */
  lrWarmupSteps?: number;
  /** Linear decay to lrEnd over the last lrDecaySteps steps. Default 0 (constant). */
  lrDecaySteps?: number;
  /** Default lr/10 (SAELens). */
  lrEnd?: number;
  adamBeta1?: number;
  adamBeta2?: number;
  adamEpsilon?: number;
  /** Rows per step. Default 4096. */
  batchSize?: number;
  /** Seed of weights, stream shuffling and resampling. Default 0. */
  seed?: number;
  /** Default 'none'. */
  normalizeActivations?: TrainNormalizeMode;
  /** Default 'geometric_median'. */
  bDecInit?: BDecInit;
  /** Rows sampled (shuffled) to estimate the scaling factor and b_dec. Default 16384. */
  initSampleRows?: number;
  /** Keep W_dec rows at unit norm (and project out the parallel gradient). Default true. */
  normalizeDecoder?: boolean;
  /** A latent is dead when it has not fired in this many training tokens. Default 1000 steps' worth. */
  deadTokens?: number;
  /** topk/batchtopk: AuxK loss coefficient (Gao et al.: 1/32). 0 turns AuxK off. */
  auxKCoefficient?: number;
  /** topk/batchtopk: dead latents used by AuxK per row. Default floor(d_in / 2). */
  kAux?: number;
  /** standard: resample dead latents every this many steps; 0 = never. Default 2500. */
  resampleEvery?: number;
  /** standard: no resampling at or after this step. Default half of the run. */
  resampleUntil?: number;
  /** batchtopk: EMA rate of the inference threshold. Default 0.01 (SAELens topk_threshold_lr). */
  thresholdLr?: number;
  /** Skip rows at position 0 (BOS) of each prompt. Default false. */
  excludePos0?: boolean;
  /** Skip rows with these token ids. */
  excludeTokens?: number[];
  /** Shuffle buffer rows (see ActivationStream). */
  bufferRows?: number;
  /** Tokens per window of the feature-density estimate written to sparsity.safetensors. Default 1000 steps' worth. */
  densityWindowTokens?: number;
}

export interface SaeTrainOptions extends SaeTrainSettings {
  /** Activation cache file(s) (hooklens cache / writeActivationCache format). */
  cache: string | string[];
  /** Training length: steps, or tokens (rounded up to whole batches). Exactly one is needed for a fresh run. */
  steps?: number;
  tokens?: number;
  /** Where checkpoints go (one directory, replaced atomically). None: no checkpoints. */
  checkpointDir?: string;
  /** Write a checkpoint every this many steps (and at the end / on interrupt). 0: only then. */
  checkpointEvery?: number;
  /** Continue from checkpointDir. Explicit settings must match the checkpoint's; steps/tokens may grow. */
  resume?: boolean;
  /** Write the final SAE (SAELens layout) here. */
  out?: string;
  /** Append one JSON object per report to this file. */
  logFile?: string;
  /** Steps per progress report (metrics are averaged over them). Default 10. */
  logEvery?: number;
  onProgress?: (p: TrainProgress) => void;
  /** When aborted: finish the current step, write a checkpoint, return with interrupted: true. */
  signal?: AbortSignal;
  /** cfg.json model_name; default: the model recorded in the cache. */
  modelName?: string;
  /** Extra cfg.json fields. */
  cfgExtra?: Record<string, unknown>;
}

export interface TrainProgress {
  step: number;
  totalSteps: number;
  tokensSeen: number;
  lr: number;
  l1Coefficient: number;
  /** Averages over the steps since the previous report. */
  loss: number;
  /** Σ_d squared error per row in the normalised space (the loss term). */
  mseLoss: number;
  /** Mean squared error per element, in activation space (as `sae eval` reports it). */
  mse: number;
  l1Loss: number;
  auxLoss: number;
  l0: number;
  explainedVariance: number;
  deadFraction: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
}

export interface TrainSaeResult {
  /** The trained SAE (the caller disposes it). */
  sae: Sae;
  /** Every trajectory setting, defaults filled in (what a checkpoint stores). */
  settings: ResolvedTrainSettings;
  step: number;
  totalSteps: number;
  tokensSeen: number;
  /** Training time (this process plus earlier runs of a resumed training). */
  seconds: number;
  tokensPerSecond: number;
  interrupted: boolean;
  /** Last report (averages over the last logEvery steps). */
  last: TrainProgress | null;
  deadFraction: number;
  /** log10(feature density + 1e-10) per latent (what sparsity.safetensors holds). */
  logSparsity: Float32Array;
  checkpointDir?: string;
  out?: string;
}

/** Metrics of one step (host numbers). */
export interface StepMetrics {
  loss: number;
  mseLoss: number;
  l1Loss: number;
  auxLoss: number;
  l0: number;
  explainedVariance: number;
  /** Smallest positive activation in the batch (Infinity when none). */
  minPositive: number;
  /** Per latent: rows of the batch where it fired. */
  fires: Float32Array;
  rows: number;
}

export type ResolvedTrainSettings = Resolved;
type Resolved = Required<Omit<SaeTrainSettings, 'k' | 'excludeTokens' | 'architecture' | 'dSae'>> & {
  architecture: TrainArchitecture;
  dSae: number;
  k: number | null;
  excludeTokens: number[];
};

const TRAJECTORY_KEYS: (keyof SaeTrainSettings)[] = [
  'architecture', 'hook', 'dSae', 'k', 'l1Coefficient', 'l1WarmupSteps', 'lr', 'lrWarmupSteps', 'lrDecaySteps', 'lrEnd',
  'adamBeta1', 'adamBeta2', 'adamEpsilon', 'batchSize', 'seed', 'normalizeActivations', 'bDecInit', 'initSampleRows',
  'normalizeDecoder', 'deadTokens', 'auxKCoefficient', 'kAux', 'resampleEvery', 'resampleUntil', 'thresholdLr',
  'excludePos0', 'excludeTokens', 'bufferRows', 'densityWindowTokens',
];

/** mulberry32 with its state exposed, so checkpoints can store it. */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

function deriveSeed(seed: number, salt: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(salt, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  return h >>> 0;
}

function checkNumber(name: string, v: unknown, test: (x: number) => boolean, what: string): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || !test(v)) fail(`SAE training: ${name} must be ${what}, got ${String(v)}`);
}
const posInt = (x: number) => Number.isInteger(x) && x > 0;
const nonNegInt = (x: number) => Number.isInteger(x) && x >= 0;

/** Validate settings (one-line errors) and fill defaults that do not depend on the data. */
function resolveSettings(o: SaeTrainSettings, totalSteps: number): Omit<Resolved, 'kAux'> & { kAux: number | null } {
  if (o.architecture === undefined) fail(`SAE training: no architecture given (${TRAIN_ARCHITECTURES.join(', ')})`);
  if (!(TRAIN_ARCHITECTURES as readonly string[]).includes(o.architecture)) {
    fail(`SAE training: unknown architecture '${String(o.architecture)}' (trainable: ${TRAIN_ARCHITECTURES.join(', ')})`);
  }
  if (typeof o.hook !== 'string' || o.hook === '') fail('SAE training: no hook given');
  checkNumber('dSae', o.dSae, posInt, 'a positive integer');
  if (o.dSae === undefined) fail('SAE training: dSae is required');
  const sparseK = o.architecture === 'topk' || o.architecture === 'batchtopk';
  if (sparseK) {
    if (o.k === undefined) fail(`SAE training: a ${o.architecture} SAE needs k`);
    checkNumber('k', o.k, o.architecture === 'topk' ? posInt : (x) => x > 0, o.architecture === 'topk' ? 'a positive integer' : 'a positive number');
    if (o.k > o.dSae) fail(`SAE training: k (${o.k}) exceeds dSae (${o.dSae})`);
  } else if (o.k !== undefined) fail('SAE training: k applies to topk and batchtopk SAEs only');
  if (o.architecture !== 'standard') {
    if (o.l1Coefficient !== undefined) fail(`SAE training: l1Coefficient applies to standard SAEs only (a ${o.architecture} SAE's sparsity is set by k)`);
    if (o.resampleEvery) fail('SAE training: resampling is for standard SAEs; topk/batchtopk SAEs use AuxK');
  }
  checkNumber('l1Coefficient', o.l1Coefficient, (x) => x >= 0, 'a non-negative number');
  checkNumber('lr', o.lr, (x) => x > 0, 'a positive number');
  checkNumber('lrEnd', o.lrEnd, (x) => x >= 0, 'a non-negative number');
  for (const k of ['l1WarmupSteps', 'lrWarmupSteps', 'lrDecaySteps', 'resampleEvery', 'resampleUntil'] as const) checkNumber(k, o[k], nonNegInt, 'a non-negative integer');
  for (const k of ['batchSize', 'initSampleRows', 'deadTokens', 'kAux', 'bufferRows', 'densityWindowTokens'] as const) checkNumber(k, o[k], posInt, 'a positive integer');
  checkNumber('seed', o.seed, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32, 'an integer in [0, 2^32)');
  checkNumber('adamBeta1', o.adamBeta1, (x) => x >= 0 && x < 1, 'in [0, 1)');
  checkNumber('adamBeta2', o.adamBeta2, (x) => x >= 0 && x < 1, 'in [0, 1)');
  checkNumber('adamEpsilon', o.adamEpsilon, (x) => x > 0, 'a positive number');
  checkNumber('auxKCoefficient', o.auxKCoefficient, (x) => x >= 0, 'a non-negative number');
  checkNumber('thresholdLr', o.thresholdLr, (x) => x > 0 && x <= 1, 'in (0, 1]');
  const norm = o.normalizeActivations ?? 'none';
  if (!(TRAIN_NORMALIZE_MODES as readonly string[]).includes(norm)) fail(`SAE training: normalizeActivations must be one of ${TRAIN_NORMALIZE_MODES.join(', ')}, got '${String(norm)}'`);
  const bDecInit = o.bDecInit ?? 'geometric_median';
  if (!(B_DEC_INITS as readonly string[]).includes(bDecInit)) fail(`SAE training: bDecInit must be one of ${B_DEC_INITS.join(', ')}, got '${String(bDecInit)}'`);
  if (o.excludeTokens !== undefined && !(Array.isArray(o.excludeTokens) && o.excludeTokens.every((t) => Number.isInteger(t)))) fail('SAE training: excludeTokens must be integer token ids');
  const batchSize = o.batchSize ?? 4096;
  const lr = o.lr ?? 3e-4;
  return {
    architecture: o.architecture,
    hook: o.hook,
    dSae: o.dSae,
    k: sparseK ? o.k! : null,
    l1Coefficient: o.architecture === 'standard' ? (o.l1Coefficient ?? 1) : 0,
    l1WarmupSteps: o.l1WarmupSteps ?? 0,
    lr,
    lrWarmupSteps: o.lrWarmupSteps ?? 0,
    lrDecaySteps: o.lrDecaySteps ?? 0,
    lrEnd: o.lrEnd ?? lr / 10,
    adamBeta1: o.adamBeta1 ?? 0.9,
    adamBeta2: o.adamBeta2 ?? 0.999,
    adamEpsilon: o.adamEpsilon ?? 1e-8,
    batchSize,
    seed: o.seed ?? 0,
    normalizeActivations: norm,
    bDecInit,
    initSampleRows: o.initSampleRows ?? 16384,
    normalizeDecoder: o.normalizeDecoder ?? true,
    deadTokens: o.deadTokens ?? 1000 * batchSize,
    auxKCoefficient: sparseK ? (o.auxKCoefficient ?? 1 / 32) : 0,
    kAux: o.kAux ?? null,
    resampleEvery: o.architecture === 'standard' ? (o.resampleEvery ?? 2500) : 0,
    resampleUntil: o.resampleUntil ?? Math.floor(totalSteps / 2),
    thresholdLr: o.thresholdLr ?? 0.01,
    excludePos0: o.excludePos0 ?? false,
    excludeTokens: [...(o.excludeTokens ?? [])],
    bufferRows: o.bufferRows ?? Math.max(batchSize, 16384),
    densityWindowTokens: o.densityWindowTokens ?? 1000 * batchSize,
  };
}

/** Learning rate at (0-based) step t: linear warm-up, constant, linear decay to lrEnd over the last lrDecaySteps. */
export function learningRateAt(s: Pick<Resolved, 'lr' | 'lrWarmupSteps' | 'lrDecaySteps' | 'lrEnd'>, t: number, totalSteps: number): number {
  let lr = s.lr;
  if (s.lrWarmupSteps > 0 && t < s.lrWarmupSteps) lr = (s.lr * (t + 1)) / s.lrWarmupSteps;
  const decayStart = totalSteps - s.lrDecaySteps;
  if (s.lrDecaySteps > 0 && t >= decayStart) {
    const frac = Math.min(1, (t - decayStart + 1) / s.lrDecaySteps);
    lr = Math.min(lr, s.lr + (s.lrEnd - s.lr) * frac);
  }
  return lr;
}

/** Geometric median of rows (Weiszfeld iterations from the mean), float64. */
export function geometricMedian(rows: Float32Array, d: number, maxIter = 100, tol = 1e-6): Float64Array {
  const n = rows.length / d;
  if (!Number.isInteger(n) || n === 0) fail(`geometricMedian: ${rows.length} values are not rows of ${d}`);
  let y = meanRows(rows, d);
  const num = new Float64Array(d);
  for (let it = 0; it < maxIter; it++) {
    num.fill(0);
    let den = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += (rows[i * d + j] - y[j]) ** 2;
      const w = 1 / Math.max(Math.sqrt(s), 1e-12);
      den += w;
      for (let j = 0; j < d; j++) num[j] += w * rows[i * d + j];
    }
    const next = num.map((v) => v / den);
    let move = 0, scale = 0;
    for (let j = 0; j < d; j++) {
      move += (next[j] - y[j]) ** 2;
      scale += next[j] ** 2;
    }
    y = next;
    if (Math.sqrt(move) <= tol * Math.max(1, Math.sqrt(scale))) break;
  }
  return y;
}

function meanRows(rows: Float32Array, d: number): Float64Array {
  const n = rows.length / d;
  const m = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) m[j] += rows[i * d + j];
  return m.map((v) => v / n);
}

/** Stand-in for +∞ in float32 arithmetic where ∞·0 must stay 0. */
const NO_FIRE = 1e38;

const PARAMS = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;
export type ParamName = (typeof PARAMS)[number];

interface TrainerState {
  step: number;
  tokensSeen: number;
  /** Stream batches consumed (equals step; kept separately for clarity). */
  batchesConsumed: number;
  rng: number;
  tokensSinceFired: Float64Array;
  densityFires: Float64Array;
  densityTokens: number;
  prevDensityFires: Float64Array | null;
  prevDensityTokens: number;
  threshold: number | null;
  seconds: number;
  resamples: number;
  resampledLatents: number;
}

interface StoredState {
  version: number;
  settings: Resolved;
  cache: string[];
  totalSteps: number;
  step: number;
  tokensSeen: number;
  batchesConsumed: number;
  rng: number;
  tokensSinceFired: number[];
  densityFires: number[];
  densityTokens: number;
  prevDensityFires: number[] | null;
  prevDensityTokens: number;
  threshold: number | null;
  seconds: number;
  resamples: number;
  resampledLatents: number;
  dIn: number;
}

/**
 * An SAE with its optimiser and training state. Build with SaeTrainer.create (fresh or resumed),
 * drive with run() (streams the cache) or trainStep(rows) (your own batches), dispose when done
 * (dispose() frees the optimiser state; the SAE is freed too unless detached with takeSae()).
 */
export class SaeTrainer {
  private readonly m = new Map<ParamName, tf.Variable>();
  private readonly v = new Map<ParamName, tf.Variable>();
  private readonly rng: Rng;
  private disposed = false;
  private saeOwned = true;
  totalSteps: number;

  private constructor(
    readonly sae: Sae,
    readonly settings: Resolved,
    readonly cache: string[],
    readonly dIn: number,
    totalSteps: number,
    readonly state: TrainerState,
    moments?: Map<string, RawTensor>,
  ) {
    this.totalSteps = totalSteps;
    this.rng = new Rng(state.rng);
    for (const p of PARAMS) {
      const shape = sae[p].shape;
      const mk = (suffix: 'm' | 'v') => {
        const raw = moments?.get(`${p}.${suffix}`);
        if (moments && !raw) fail(`checkpoint: optimizer state lacks "${p}.${suffix}"`);
        if (raw && !tf.util.arraysEqual(raw.shape, shape)) fail(`checkpoint: optimizer tensor "${p}.${suffix}" has shape [${raw.shape}], expected [${shape}]`);
        const t = raw ? tf.tensor(raw.data, shape, 'float32') : tf.zeros(shape, 'float32');
        const variable = tf.variable(t, false);
        t.dispose();
        return variable;
      };
      this.m.set(p, mk('m'));
      this.v.set(p, mk('v'));
    }
  }

  /** Total steps for a run: steps, or ceil(tokens / batchSize). */
  static stepsFor(opts: { steps?: number; tokens?: number }, batchSize: number): number | undefined {
    if (opts.steps !== undefined && opts.tokens !== undefined) fail('SAE training: give steps or tokens, not both');
    checkNumber('steps', opts.steps, posInt, 'a positive integer');
    checkNumber('tokens', opts.tokens, posInt, 'a positive integer');
    if (opts.steps !== undefined) return opts.steps;
    if (opts.tokens !== undefined) return Math.ceil(opts.tokens / batchSize);
    return undefined;
  }

  /** A fresh trainer (init sample drawn from the cache) or, with resume, one restored from checkpointDir. */
  static create(opts: SaeTrainOptions): SaeTrainer {
    const cache = typeof opts.cache === 'string' ? [opts.cache] : [...(opts.cache ?? [])];
    if (cache.length === 0) fail('SAE training: no activation cache given');
    if (opts.resume) return SaeTrainer.restore(opts, cache);
    const batchGuess = opts.batchSize ?? 4096;
    const totalSteps = SaeTrainer.stepsFor(opts, batchGuess);
    if (totalSteps === undefined) fail('SAE training: give the number of steps or tokens');
    const s = resolveSettings(opts, totalSteps);
    // Opening validates files and the hook column (one-line errors) before anything is written.
    const probe = ActivationStream.open({ files: cache, hook: s.hook, batchSize: 1, shuffle: false });
    const dIn = probe.dIn;
    const model = opts.modelName ?? probe.models.find((m) => m !== null) ?? undefined;
    probe.close();
    const kAux = s.kAux ?? Math.max(1, Math.floor(dIn / 2));
    const settings: Resolved = { ...s, kAux };
    if (settings.k !== null && settings.k > settings.dSae) fail(`SAE training: k (${settings.k}) exceeds dSae (${settings.dSae})`);

    const sample = readSample(cache, settings);
    let scalingFactor: number | undefined;
    if (settings.normalizeActivations === 'expected_average_only_in') {
      let sum = 0;
      const n = sample.length / dIn;
      for (let i = 0; i < n; i++) {
        let q = 0;
        for (let j = 0; j < dIn; j++) q += sample[i * dIn + j] ** 2;
        sum += Math.sqrt(q);
      }
      if (!(sum > 0)) fail('SAE training: the activations are all zero; cannot estimate a normalisation factor');
      scalingFactor = Math.sqrt(dIn) / (sum / n);
      for (let i = 0; i < sample.length; i++) sample[i] *= scalingFactor;
    }
    const cfg: SaeConfig = makeSaeConfig({
      architecture: settings.architecture,
      dIn,
      dSae: settings.dSae,
      hookName: settings.hook,
      k: settings.k ?? undefined,
      normalizeActivations: settings.normalizeActivations,
      scalingFactor,
      modelName: model,
      extra: opts.cfgExtra,
    });
    const sae = Sae.init(cfg, settings.seed);
    try {
      if (settings.bDecInit !== 'zeros') {
        const b = settings.bDecInit === 'mean' ? meanRows(sample, dIn) : geometricMedian(sample, dIn);
        const t = tf.tensor1d(Float32Array.from(b), 'float32');
        sae.b_dec.assign(t);
        t.dispose();
      }
      const state: TrainerState = {
        step: 0,
        tokensSeen: 0,
        batchesConsumed: 0,
        rng: deriveSeed(settings.seed, 3),
        tokensSinceFired: new Float64Array(settings.dSae),
        densityFires: new Float64Array(settings.dSae),
        densityTokens: 0,
        prevDensityFires: null,
        prevDensityTokens: 0,
        threshold: null,
        seconds: 0,
        resamples: 0,
        resampledLatents: 0,
      };
      return new SaeTrainer(sae, settings, cache, dIn, totalSteps, state);
    } catch (e) {
      sae.dispose();
      throw e;
    }
  }

  private static restore(opts: SaeTrainOptions, cache: string[]): SaeTrainer {
    const dir = opts.checkpointDir;
    if (!dir) fail('SAE training: resume needs a checkpoint directory');
    const ckpt = findCheckpoint(dir);
    if (!ckpt) fail(`${dir}: no checkpoint to resume from (no ${CHECKPOINT_STATE_FILE})`);
    let stored: StoredState;
    try {
      stored = JSON.parse(fs.readFileSync(path.join(ckpt, CHECKPOINT_STATE_FILE), 'utf8')) as StoredState;
    } catch (e) {
      fail(`${path.join(ckpt, CHECKPOINT_STATE_FILE)}: unreadable trainer state (${(e as Error).message.split('\n')[0]})`);
    }
    if (stored.version !== STATE_VERSION) fail(`${ckpt}: trainer state version ${stored.version} is not supported (expected ${STATE_VERSION})`);
    const settings = stored.settings;
    for (const key of TRAJECTORY_KEYS) {
      const given = opts[key];
      if (given === undefined) continue;
      const have = (settings as unknown as Record<string, unknown>)[key];
      if (JSON.stringify(given) !== JSON.stringify(have)) {
        fail(`${dir}: the checkpoint was trained with ${key} = ${JSON.stringify(have)}, got ${JSON.stringify(given)} (drop the option to resume as it was)`);
      }
    }
    const totalSteps = SaeTrainer.stepsFor(opts, settings.batchSize) ?? stored.totalSteps;
    const probe = ActivationStream.open({ files: cache, hook: settings.hook, batchSize: 1, shuffle: false });
    const dIn = probe.dIn;
    probe.close();
    if (dIn !== stored.dIn) fail(`${cache[0]}: column "${settings.hook}" has ${dIn} floats per row, the checkpoint's SAE reads ${stored.dIn}`);
    const { sae } = loadSae(ckpt);
    try {
      const moments = readSafetensors(path.join(ckpt, CHECKPOINT_OPTIMIZER_FILE)).tensors;
      const f64 = (a: number[] | null, name: string): Float64Array => {
        if (!Array.isArray(a) || a.length !== settings.dSae) fail(`${ckpt}: trainer state "${name}" must hold ${settings.dSae} numbers`);
        return Float64Array.from(a);
      };
      const state: TrainerState = {
        step: stored.step,
        tokensSeen: stored.tokensSeen,
        batchesConsumed: stored.batchesConsumed,
        rng: stored.rng,
        tokensSinceFired: f64(stored.tokensSinceFired, 'tokensSinceFired'),
        densityFires: f64(stored.densityFires, 'densityFires'),
        densityTokens: stored.densityTokens,
        prevDensityFires: stored.prevDensityFires ? f64(stored.prevDensityFires, 'prevDensityFires') : null,
        prevDensityTokens: stored.prevDensityTokens,
        threshold: stored.threshold,
        seconds: stored.seconds,
        resamples: stored.resamples,
        resampledLatents: stored.resampledLatents,
      };
      return new SaeTrainer(sae, settings, cache, dIn, totalSteps, state, moments);
    } catch (e) {
      sae.dispose();
      if (e instanceof HooklensError) throw e;
      fail(`${ckpt}: cannot resume (${(e as Error).message.split('\n')[0]})`);
    }
  }

  get step(): number {
    return this.state.step;
  }

  get tokensSeen(): number {
    return this.state.tokensSeen;
  }

  /** A stream positioned where training continues (earlier batches are read and skipped). */
  openStream(): { stream: ActivationStream; batches: Iterator<ActivationBatch> } {
    const s = this.settings;
    const stream = ActivationStream.open({
      files: this.cache,
      hook: s.hook,
      batchSize: s.batchSize,
      bufferRows: s.bufferRows,
      shuffle: true,
      seed: deriveSeed(s.seed, 1),
      epochs: Infinity,
      excludePos0: s.excludePos0,
      excludeTokens: s.excludeTokens,
      dropLast: true,
    });
    const it = stream.batches();
    try {
      for (let i = 0; i < this.state.batchesConsumed; i++) {
        if (it.next().done) fail('SAE training: the activation stream ended early');
      }
    } catch (e) {
      stream.close();
      throw e;
    }
    return { stream, batches: it };
  }

  /** Dead mask as of now (tokens since last fired ≥ deadTokens). */
  deadMask(): Uint8Array {
    const out = new Uint8Array(this.settings.dSae);
    const w = this.settings.deadTokens;
    this.state.tokensSinceFired.forEach((t, i) => (out[i] = t >= w ? 1 : 0));
    return out;
  }

  deadFraction(): number {
    const d = this.deadMask();
    let n = 0;
    for (const x of d) n += x;
    return n / d.length;
  }

  /**
   * One optimisation step on `rows` (n × d_in raw activations, row-major): forward, hand-written
   * backward, Adam, decoder renormalisation, dead-latent bookkeeping, resampling when due.
   */
  trainStep(rows: Float32Array): StepMetrics {
    if (this.disposed) fail('SAE trainer was disposed');
    const s = this.settings;
    const d = this.dIn;
    const n = rows.length / d;
    if (!Number.isInteger(n) || n === 0) fail(`SAE training: ${rows.length} values are not rows of ${d}`);
    const t = this.state.step;
    const lr = learningRateAt(s, t, this.totalSteps);
    const l1 = s.architecture === 'standard' ? s.l1Coefficient * (s.l1WarmupSteps > 0 ? Math.min(1, (t + 1) / s.l1WarmupSteps) : 1) : 0;
    const dead = s.auxKCoefficient > 0 ? this.deadMask() : null;
    let nDead = 0;
    if (dead) for (const x of dead) nDead += x;
    const bc1 = 1 - s.adamBeta1 ** (t + 1);
    const bc2 = 1 - s.adamBeta2 ** (t + 1);

    const x = tf.tensor2d(rows, [n, d], 'float32');
    let host: Float32Array;
    let rowLoss: Float32Array | null = null;
    try {
      const wantRowLoss = this.resampleDue(t + 1);
      // Everything but the two kept outputs is freed by the tidy.
      let out!: { metrics: tf.Tensor; rowLoss: tf.Tensor | null };
      tf.tidy(() => {
        out = this.forwardBackwardUpdate(x, { n, lr, l1, dead: nDead > 0 ? dead : null, nDead, bc1, bc2, wantRowLoss });
      });
      host = out.metrics.dataSync() as Float32Array;
      out.metrics.dispose();
      if (out.rowLoss) {
        rowLoss = out.rowLoss.dataSync() as Float32Array;
        out.rowLoss.dispose();
      }
    } finally {
      x.dispose();
    }
    const dS = s.dSae;
    const m: StepMetrics = {
      mseLoss: host[0],
      l1Loss: host[1],
      auxLoss: host[2],
      loss: host[0] + host[1] + host[2],
      l0: host[3],
      explainedVariance: 1 - host[4] / host[5],
      minPositive: host[6] >= NO_FIRE / 2 ? Infinity : host[6],
      fires: host.slice(7, 7 + dS),
      rows: n,
    };
    if (!Number.isFinite(m.loss)) fail(`SAE training diverged at step ${t + 1} (loss ${m.loss}); lower the learning rate`);

    // Bookkeeping (host, float64).
    const st = this.state;
    for (let i = 0; i < dS; i++) {
      if (m.fires[i] > 0) st.tokensSinceFired[i] = 0;
      else st.tokensSinceFired[i] += n;
      st.densityFires[i] += m.fires[i];
    }
    st.densityTokens += n;
    if (st.densityTokens >= s.densityWindowTokens) {
      st.prevDensityFires = st.densityFires;
      st.prevDensityTokens = st.densityTokens;
      st.densityFires = new Float64Array(dS);
      st.densityTokens = 0;
    }
    if (s.architecture === 'batchtopk' && Number.isFinite(m.minPositive)) {
      st.threshold = st.threshold === null ? m.minPositive : (1 - s.thresholdLr) * st.threshold + s.thresholdLr * m.minPositive;
    }
    st.step = t + 1;
    st.tokensSeen += n;
    st.batchesConsumed++;
    if (rowLoss) this.resample(rows, rowLoss);
    return m;
  }

  private resampleDue(step: number): boolean {
    const s = this.settings;
    return s.architecture === 'standard' && s.resampleEvery > 0 && step % s.resampleEvery === 0 && step < s.resampleUntil;
  }

  /**
   * Loss gradients (closed form) and metrics for raw rows x; call inside a tidy. Gradients of
   * W_dec already have the component along each (unit) row removed when normalizeDecoder is on.
   */
  private lossAndGrads(
    x: tf.Tensor2D,
    o: { n: number; l1: number; dead: Uint8Array | null; nDead: number; wantRowLoss: boolean },
  ): { grads: Record<ParamName, tf.Tensor>; metrics: tf.Tensor; rowLoss: tf.Tensor | null } {
    const s = this.settings;
    const sae = this.sae;
    const { n } = o;
    const W_enc = sae.W_enc, b_enc = sae.b_enc, W_dec = sae.W_dec, b_dec = sae.b_dec;
    const applyBDec = sae.cfg.applyBDecToInput;

    // tfjs-wasm runs matMul with transposeA/transposeB on a slow generic path (10–20× slower than
    // the XNNPACK one at these shapes), so transposes are explicit and kept on the small side.
    const xn = sae.normalizeIn(x);
    const xc = applyBDec ? tf.sub(xn, b_dec) : xn;
    const pre = tf.add(tf.matMul(xc, W_enc), b_enc) as tf.Tensor2D;
    const acts = trainingActivation(s.architecture, pre, s.k);
    const ones = tf.ones([1, n]);
    /** Σ over rows of a [n, ·] tensor as a matMul: reductions over axis 0 are slow on tfjs-wasm. */
    const colSum = (t: tf.Tensor): tf.Tensor1D => tf.matMul(ones, t).reshape([-1]) as tf.Tensor1D;
    const recon = tf.add(tf.matMul(acts, W_dec), b_dec);
    const err = tf.sub(recon, xn); // x̂ − x
    const errSq = tf.sum(tf.square(err));
    const mseLoss = tf.div(errSq, n);
    const G = tf.mul(err, 2 / n);
    const W_decT = tf.transpose(W_dec); // [d, m]
    // Σ_rows actsᵀ·G, built as (Gᵀ·acts)ᵀ: the [d, m] product is small to transpose.
    let gWdecT: tf.Tensor = tf.matMul(tf.transpose(G), acts); // [d, m]
    let gBdec: tf.Tensor = colSum(G);
    let gActs: tf.Tensor = tf.matMul(G, W_decT);
    const active = tf.step(acts); // 1 where the latent fired (acts > 0), else 0
    let l1Loss: tf.Tensor = tf.scalar(0);
    if (s.architecture === 'standard' && o.l1 > 0) {
      const norms = tf.norm(W_dec, 'euclidean', 1); // [m]
      const actSum = colSum(acts); // [m]
      l1Loss = tf.mul(tf.div(tf.dot(actSum, norms), n), o.l1);
      gActs = tf.add(gActs, tf.mul(norms, o.l1 / n));
      // ∂/∂W_dec[i] of λ/n·Σ_b f_bi‖w_i‖ = λ/n·(Σ_b f_bi)·w_i/‖w_i‖.
      const coef = tf.div(tf.mul(actSum, o.l1 / n), tf.maximum(norms, 1e-12)); // [m]
      gWdecT = tf.add(gWdecT, tf.mul(W_decT, coef));
    }
    let gPre: tf.Tensor = tf.mul(gActs, active);
    let auxLoss: tf.Tensor = tf.scalar(0);
    if (o.dead && s.auxKCoefficient > 0) {
      const kAux = Math.min(s.kAux, o.nDead);
      const scale = Math.min(1, o.nDead / s.kAux);
      // Alive latents get −∞, so the top k_aux per row are dead ones (k_aux ≤ n_dead keeps kth finite).
      const deadBias = tf.tensor1d(Float32Array.from(o.dead, (x) => (x ? 0 : -Infinity)));
      const masked = tf.add(pre, deadBias);
      const kth = tf.topk(masked, kAux).values.slice([0, kAux - 1], [-1, 1]);
      const auxActs = tf.mul(tf.relu(pre), atLeast(masked, kth));
      const auxMask = tf.step(auxActs);
      const eHat = tf.matMul(auxActs, W_dec);
      const auxErr = tf.add(eHat, err); // ê − (x − x̂)
      const c = s.auxKCoefficient * scale;
      auxLoss = tf.mul(tf.div(tf.sum(tf.square(auxErr)), n), c);
      const Ga = tf.mul(auxErr, (2 * c) / n);
      gWdecT = tf.add(gWdecT, tf.matMul(tf.transpose(Ga), auxActs));
      gPre = tf.add(gPre, tf.mul(tf.matMul(Ga, W_decT), auxMask));
    }
    let gWdec: tf.Tensor = tf.transpose(gWdecT);
    const gWenc = tf.matMul(tf.transpose(xc), gPre); // [d, m]
    const gBenc = colSum(gPre);
    if (applyBDec) gBdec = tf.sub(gBdec, tf.matMul(gBenc.expandDims(0), tf.transpose(W_enc)).reshape([-1]));
    if (s.normalizeDecoder) {
      // W_dec rows are unit norm: drop the gradient component along each row.
      const par = tf.sum(tf.mul(gWdec, W_dec), 1, true);
      gWdec = tf.sub(gWdec, tf.mul(par, W_dec));
    }

    // Metrics from the pre-update weights.
    const l0 = tf.div(tf.sum(active), n);
    const centred = tf.sub(xn, tf.mean(xn, 0));
    const totalVar = tf.sum(tf.square(centred));
    // Smallest positive activation: acts + NO_FIRE·(1 − active) is huge where nothing fired (∞·0 would be NaN).
    const minPos = s.architecture === 'batchtopk' ? tf.min(tf.add(acts, tf.mul(tf.sub(1, active), NO_FIRE))) : tf.scalar(NO_FIRE);
    const fires = colSum(active);
    const metrics = tf.concat([tf.stack([mseLoss, l1Loss, auxLoss, l0, errSq, totalVar, minPos]), fires]);
    const rowLoss = o.wantRowLoss ? tf.sum(tf.square(err), 1) : null;
    return { grads: { W_enc: gWenc, b_enc: gBenc, W_dec: gWdec, b_dec: gBdec }, metrics, rowLoss };
  }

  /** One step: gradients, Adam, decoder renormalisation. Returns kept metrics (caller disposes). */
  private forwardBackwardUpdate(
    x: tf.Tensor2D,
    o: { n: number; lr: number; l1: number; dead: Uint8Array | null; nDead: number; bc1: number; bc2: number; wantRowLoss: boolean },
  ): { metrics: tf.Tensor; rowLoss: tf.Tensor | null } {
    const s = this.settings;
    const sae = this.sae;
    const { grads, metrics, rowLoss } = this.lossAndGrads(x, o);
    const { adamBeta1: b1, adamBeta2: b2, adamEpsilon: eps } = s;
    for (const p of PARAMS) {
      const g = grads[p];
      const m = this.m.get(p)!;
      const v = this.v.get(p)!;
      const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
      const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
      m.assign(m1);
      v.assign(v1);
      const upd = tf.div(tf.div(m1, o.bc1), tf.add(tf.sqrt(tf.div(v1, o.bc2)), eps));
      sae[p].assign(tf.sub(sae[p], tf.mul(upd, o.lr)));
    }
    if (s.normalizeDecoder) {
      const norms = tf.norm(sae.W_dec, 'euclidean', 1, true);
      sae.W_dec.assign(tf.div(sae.W_dec, tf.maximum(norms, 1e-12)));
    }
    return { metrics: tf.keep(metrics), rowLoss: rowLoss ? tf.keep(rowLoss) : null };
  }

  /**
   * The loss and its gradients (host copies) on `rows` at the current step, without updating
   * anything. `dead` overrides the dead mask (AuxK); used to check the closed-form gradients.
   */
  gradients(rows: Float32Array, opts: { dead?: Uint8Array } = {}): { loss: number; grads: Record<ParamName, Float32Array> } {
    const s = this.settings;
    const d = this.dIn;
    const n = rows.length / d;
    const t = this.state.step;
    const l1 = s.architecture === 'standard' ? s.l1Coefficient * (s.l1WarmupSteps > 0 ? Math.min(1, (t + 1) / s.l1WarmupSteps) : 1) : 0;
    const dead = opts.dead ?? (s.auxKCoefficient > 0 ? this.deadMask() : null);
    let nDead = 0;
    if (dead) for (const v of dead) nDead += v;
    return tf.tidy(() => {
      const x = tf.tensor2d(rows, [n, d], 'float32');
      const { grads, metrics } = this.lossAndGrads(x, { n, l1, dead: nDead > 0 && s.auxKCoefficient > 0 ? dead : null, nDead, wantRowLoss: false });
      const mv = metrics.dataSync();
      const out = {} as Record<ParamName, Float32Array>;
      for (const p of PARAMS) out[p] = grads[p].dataSync() as Float32Array;
      return { loss: mv[0] + mv[1] + mv[2], grads: out };
    });
  }

  /** Anthropic-style resampling of dead latents toward high-loss rows of the current batch. */
  private resample(rows: Float32Array, rowLoss: Float32Array): void {
    const dead = this.deadMask();
    const ids: number[] = [];
    dead.forEach((x, i) => x && ids.push(i));
    if (ids.length === 0) return;
    const d = this.dIn;
    const dS = this.settings.dSae;
    // Sampling weights ∝ loss².
    const w = Float64Array.from(rowLoss, (l) => l * l);
    let total = 0;
    for (const x of w) total += x;
    const cum = new Float64Array(w.length);
    let acc = 0;
    w.forEach((x, i) => (cum[i] = acc += total > 0 ? x / total : 1 / w.length));
    const pick = (): number => {
      const r = this.rng.next() * acc;
      let lo = 0, hi = cum.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cum[mid] > r) hi = mid;
        else lo = mid + 1;
      }
      return lo;
    };
    const sae = this.sae;
    const scale = sae.cfg.normalizeActivations === 'expected_average_only_in' ? (sae.cfg.scalingFactor ?? 1) : 1;
    const bDec = sae.b_dec.dataSync();
    const wEnc = new Float32Array(sae.W_enc.dataSync());
    const wDec = new Float32Array(sae.W_dec.dataSync());
    const bEnc = new Float32Array(sae.b_enc.dataSync());
    // Mean encoder norm of alive latents (column norms of W_enc).
    let aliveSum = 0, alive = 0;
    for (let i = 0; i < dS; i++) {
      if (dead[i]) continue;
      let q = 0;
      for (let j = 0; j < d; j++) q += wEnc[j * dS + i] ** 2;
      aliveSum += Math.sqrt(q);
      alive++;
    }
    const encNorm = 0.2 * (alive > 0 ? aliveSum / alive : 1);
    for (const i of ids) {
      const r = pick();
      const vec = new Float64Array(d);
      let q = 0;
      for (let j = 0; j < d; j++) {
        vec[j] = rows[r * d + j] * scale - (sae.cfg.applyBDecToInput ? bDec[j] : 0);
        q += vec[j] ** 2;
      }
      const norm = Math.sqrt(q) || 1;
      for (let j = 0; j < d; j++) {
        const u = vec[j] / norm;
        wDec[i * d + j] = u;
        wEnc[j * dS + i] = u * encNorm;
      }
      bEnc[i] = 0;
      this.state.tokensSinceFired[i] = 0;
    }
    tf.tidy(() => {
      sae.W_dec.assign(tf.tensor2d(wDec, [dS, d]));
      sae.W_enc.assign(tf.tensor2d(wEnc, [d, dS]));
      sae.b_enc.assign(tf.tensor1d(bEnc));
      // Zero the Adam moments of the resampled rows / columns.
      const keep = new Float32Array(dS).fill(1);
      for (const i of ids) keep[i] = 0;
      const k1 = tf.tensor1d(keep);
      for (const mom of [this.m, this.v]) {
        mom.get('W_dec')!.assign(tf.mul(mom.get('W_dec')!, k1.expandDims(1)));
        mom.get('W_enc')!.assign(tf.mul(mom.get('W_enc')!, k1.expandDims(0)));
        mom.get('b_enc')!.assign(tf.mul(mom.get('b_enc')!, k1));
      }
    });
    this.state.resamples++;
    this.state.resampledLatents += ids.length;
  }

  /** log10(density + 1e-10) per latent from the current density window (or the previous one when the current is short). */
  logSparsity(): Float32Array {
    const st = this.state;
    let fires = st.densityFires;
    let tokens = st.densityTokens;
    if (st.prevDensityFires && tokens < this.settings.densityWindowTokens / 2) {
      fires = fires.map((f, i) => f + st.prevDensityFires![i]);
      tokens += st.prevDensityTokens;
    }
    return Float32Array.from(fires, (f) => Math.log10((tokens > 0 ? f / tokens : 0) + 1e-10));
  }

  /** Put the batchtopk inference threshold into the SAE (no-op for other architectures). */
  private syncThreshold(): void {
    if (this.settings.architecture === 'batchtopk' && this.state.threshold !== null) this.sae.setThreshold(this.state.threshold);
  }

  /** Write the SAE (SAELens layout, with sparsity) to `dir`, atomically. */
  saveSae(dir: string): void {
    this.syncThreshold();
    saveSae(this.sae, dir, { sparsity: this.logSparsity() });
  }

  /**
   * Write a checkpoint to `dir`: SAE files + trainer_state.json + optimizer.safetensors, built in a
   * sibling temp directory and swapped in by rename (the previous checkpoint survives a crash).
   */
  saveCheckpoint(dir: string): void {
    const target = path.resolve(dir);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    try {
      writeDirAtomic(target, (tmp) => this.writeCheckpointFiles(tmp));
    } catch (e) {
      if (e instanceof HooklensError) throw e;
      fail(`${dir}: cannot write checkpoint (${(e as NodeJS.ErrnoException).code ?? String(e).split('\n')[0]})`);
    }
  }

  /** SAE files, trainer state and Adam moments of a checkpoint, written into `tmp`. */
  private writeCheckpointFiles(tmp: string): void {
    this.saveSae(tmp);
    const st = this.state;
    const stored: StoredState = {
      version: STATE_VERSION,
      settings: this.settings,
      cache: this.cache.map((f) => path.resolve(f)),
      totalSteps: this.totalSteps,
      step: st.step,
      tokensSeen: st.tokensSeen,
      batchesConsumed: st.batchesConsumed,
      rng: this.rng.state,
      tokensSinceFired: Array.from(st.tokensSinceFired),
      densityFires: Array.from(st.densityFires),
      densityTokens: st.densityTokens,
      prevDensityFires: st.prevDensityFires ? Array.from(st.prevDensityFires) : null,
      prevDensityTokens: st.prevDensityTokens,
      threshold: st.threshold,
      seconds: st.seconds,
      resamples: st.resamples,
      resampledLatents: st.resampledLatents,
      dIn: this.dIn,
    };
    const moments: Record<string, RawTensor> = {};
    for (const p of PARAMS) {
      for (const [suffix, map] of [['m', this.m], ['v', this.v]] as const) {
        const variable = map.get(p)!;
        moments[`${p}.${suffix}`] = { shape: [...variable.shape], data: new Float32Array(variable.dataSync()) };
      }
    }
    writeSafetensors(path.join(tmp, CHECKPOINT_OPTIMIZER_FILE), moments);
    fs.writeFileSync(path.join(tmp, CHECKPOINT_STATE_FILE), JSON.stringify(stored) + '\n');
  }

  /**
   * Train until totalSteps (or until `signal` aborts), streaming the cache. Reports every
   * logEvery steps; checkpoints every checkpointEvery steps, at the end and on interrupt.
   */
  async run(opts: Pick<SaeTrainOptions, 'checkpointDir' | 'checkpointEvery' | 'logFile' | 'logEvery' | 'onProgress' | 'signal'> = {}): Promise<{ interrupted: boolean; last: TrainProgress | null }> {
    const logEvery = opts.logEvery ?? 10;
    checkNumber('logEvery', logEvery, posInt, 'a positive integer');
    checkNumber('checkpointEvery', opts.checkpointEvery, nonNegInt, 'a non-negative integer');
    const ckEvery = opts.checkpointEvery ?? 0;
    let last: TrainProgress | null = null;
    if (this.state.step >= this.totalSteps) return { interrupted: false, last };
    let logFd: number | null = null;
    if (opts.logFile) {
      try {
        fs.mkdirSync(path.dirname(path.resolve(opts.logFile)), { recursive: true });
        logFd = fs.openSync(opts.logFile, 'a');
      } catch (e) {
        fail(`${opts.logFile}: cannot open the log file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      }
    }
    const { stream, batches } = this.openStream();
    const win = { n: 0, loss: 0, mseLoss: 0, l1Loss: 0, auxLoss: 0, l0: 0, errSq: 0, ev: 0, tokens: 0 };
    const scale = this.sae.cfg.normalizeActivations === 'expected_average_only_in' ? (this.sae.cfg.scalingFactor ?? 1) : 1;
    let t0 = performance.now();
    let winStart = t0;
    const secondsBefore = this.state.seconds;
    let interrupted = false;
    try {
      while (this.state.step < this.totalSteps) {
        if (opts.signal?.aborted) {
          interrupted = true;
          break;
        }
        const next = batches.next();
        if (next.done) fail('SAE training: the activation stream ended early');
        const stepLr = learningRateAt(this.settings, this.state.step, this.totalSteps);
        const stepL1 = this.settings.l1Coefficient * (this.settings.l1WarmupSteps > 0 ? Math.min(1, (this.state.step + 1) / this.settings.l1WarmupSteps) : 1);
        const m = this.trainStep(next.value.acts);
        this.state.seconds = secondsBefore + (performance.now() - t0) / 1000;
        win.n++;
        win.loss += m.loss;
        win.mseLoss += m.mseLoss;
        win.l1Loss += m.l1Loss;
        win.auxLoss += m.auxLoss;
        win.l0 += m.l0;
        win.ev += m.explainedVariance;
        win.tokens += m.rows;
        const step = this.state.step;
        if (step % logEvery === 0 || step === this.totalSteps) {
          const now = performance.now();
          last = {
            step,
            totalSteps: this.totalSteps,
            tokensSeen: this.state.tokensSeen,
            lr: stepLr,
            l1Coefficient: stepL1,
            loss: win.loss / win.n,
            mseLoss: win.mseLoss / win.n,
            mse: win.mseLoss / win.n / this.dIn / (scale * scale),
            l1Loss: win.l1Loss / win.n,
            auxLoss: win.auxLoss / win.n,
            l0: win.l0 / win.n,
            explainedVariance: win.ev / win.n,
            deadFraction: this.deadFraction(),
            tokensPerSecond: win.tokens / Math.max(1e-9, (now - winStart) / 1000),
            elapsedSeconds: this.state.seconds,
          };
          Object.assign(win, { n: 0, loss: 0, mseLoss: 0, l1Loss: 0, auxLoss: 0, l0: 0, errSq: 0, ev: 0, tokens: 0 });
          winStart = now;
          if (logFd !== null) fs.writeSync(logFd, JSON.stringify(last) + '\n');
          opts.onProgress?.(last);
        }
        if (opts.checkpointDir && ckEvery > 0 && step % ckEvery === 0 && step < this.totalSteps) {
          const c0 = performance.now();
          this.saveCheckpoint(opts.checkpointDir);
          // Checkpoint time is not training time.
          t0 += performance.now() - c0;
        }
        // Let signal handlers (SIGINT) run.
        await new Promise((r) => setImmediate(r));
      }
      if (opts.checkpointDir) this.saveCheckpoint(opts.checkpointDir);
    } finally {
      stream.close();
      if (logFd !== null) fs.closeSync(logFd);
    }
    return { interrupted, last };
  }

  /** The SAE stays alive after dispose() (the caller now owns it). */
  takeSae(): Sae {
    this.syncThreshold();
    this.saeOwned = false;
    return this.sae;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of [...this.m.values(), ...this.v.values()]) v.dispose();
    this.m.clear();
    this.v.clear();
    if (this.saeOwned) this.sae.dispose();
  }
}

/** 1 where a ≥ b (b broadcast), else 0, as 1 − step(b − a): exact for finite floats, and broadcasting
 * subtraction is fast on tfjs-wasm where broadcasting comparisons are not. */
function atLeast(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.sub(1, tf.step(tf.sub(b, a)));
}

/**
 * The training forward activation: what Sae.activate computes (standard: ReLU; topk: ReLU of the
 * row's k largest pre-activations, ties with the k-th kept; batchtopk: the k·n largest ReLU'd
 * values of the batch), written with broadcasting-friendly ops (test/sae-train.test.ts checks the
 * two agree).
 */
export function trainingActivation(arch: TrainArchitecture, pre: tf.Tensor2D, k: number | null): tf.Tensor2D {
  return tf.tidy(() => {
    const relu = tf.relu(pre);
    if (arch === 'standard') return relu;
    if (arch === 'topk') {
      const kk = Math.min(k!, pre.shape[1]);
      const kth = tf.topk(pre, kk).values.slice([0, kk - 1], [-1, 1]);
      return tf.mul(relu, atLeast(pre, kth));
    }
    const count = Math.min(Math.floor(k! * pre.shape[0]), pre.size);
    if (count <= 0) return tf.zerosLike(pre);
    const kth = tf.topk(relu.reshape([-1]), count).values.slice([count - 1], [1]);
    return tf.mul(relu, atLeast(relu, kth));
  }) as tf.Tensor2D;
}

/** Whether `dir` (or the copy a crash mid-swap left beside it) holds a checkpoint to resume. */
export function hasCheckpoint(dir: string): boolean {
  return findCheckpoint(dir) !== null;
}

/** The checkpoint directory, or the `.old` copy a crash between the two renames of a swap left behind. */
function findCheckpoint(dir: string): string | null {
  const target = path.resolve(dir);
  if (fs.existsSync(path.join(target, CHECKPOINT_STATE_FILE))) return target;
  const parent = path.dirname(target);
  if (!fs.existsSync(parent)) return null;
  const prefix = `.${path.basename(target)}.`;
  const olds = fs
    .readdirSync(parent)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.old') && fs.existsSync(path.join(parent, f, CHECKPOINT_STATE_FILE)))
    .sort();
  return olds.length ? path.join(parent, olds[olds.length - 1]) : null;
}

/** Up to initSampleRows rows from a shuffled pass (its own seed), raw activations. */
function readSample(cache: string[], s: Resolved): Float32Array {
  const stream = ActivationStream.open({
    files: cache,
    hook: s.hook,
    batchSize: s.initSampleRows,
    bufferRows: Math.max(s.bufferRows, s.initSampleRows),
    shuffle: true,
    seed: deriveSeed(s.seed, 2),
    epochs: 1,
    excludePos0: s.excludePos0,
    excludeTokens: s.excludeTokens,
    dropLast: false,
  });
  try {
    const first = stream.batches().next();
    if (first.done || first.value.rows === 0) fail(`SAE training: no rows to train on in ${cache.join(', ')}`);
    return first.value.acts;
  } finally {
    stream.close();
  }
}

/**
 * Train an SAE from activation caches: create (or resume) a trainer, run it, write the final SAE
 * to `out` (unless interrupted). Returns the SAE (caller disposes) and a summary.
 */
export async function trainSae(opts: SaeTrainOptions): Promise<TrainSaeResult> {
  const trainer = SaeTrainer.create(opts);
  try {
    const { interrupted, last } = await trainer.run(opts);
    if (!interrupted && opts.out) trainer.saveSae(opts.out);
    const logSparsity = trainer.logSparsity();
    const result: TrainSaeResult = {
      sae: trainer.takeSae(),
      settings: { ...trainer.settings },
      step: trainer.step,
      totalSteps: trainer.totalSteps,
      tokensSeen: trainer.tokensSeen,
      seconds: trainer.state.seconds,
      tokensPerSecond: trainer.tokensSeen / Math.max(1e-9, trainer.state.seconds),
      interrupted,
      last,
      deadFraction: trainer.deadFraction(),
      logSparsity,
      checkpointDir: opts.checkpointDir,
      out: interrupted ? undefined : opts.out,
    };
    return result;
  } finally {
    trainer.dispose();
  }
}
