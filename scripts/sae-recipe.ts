/**
 * The recipe the shipped SAEs share (scripts/train-stories-sae.ts, scripts/train-ioi-sae.ts): an
 * activation cache rebuilt only when its inputs change, the TopK training settings, a d_sae × k
 * sweep, the final run with checkpoints, and the figures written to training.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { progressBar } from '../src/cli/progress.js';
import { writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { pickEvalMetrics, type SaeEvalResult } from '../src/sae/eval.js';
import type { Sae } from '../src/sae/sae.js';
import { trainSae, type SaeTrainOptions, type TrainSaeResult } from '../src/sae/train.js';

export const round = (x: number, d = 6) => Number(x.toFixed(d));

/** The contract metrics plus fvu, dead/dense fractions and counts, rounded to 6 decimals. */
export function evalMetrics(r: SaeEvalResult): Record<string, number> {
  const m = { ...pickEvalMetrics(r), fvu: r.fvu, dead_fraction: r.dead_fraction, dense_fraction: r.dense_fraction, n_tokens: r.n_tokens, n_ce_positions: r.n_ce_positions };
  return Object.fromEntries(Object.entries(m).map(([a, b]) => [a, round(b)]));
}

/**
 * WORK/{hook}.train.arrow with `hook` over `prompts`, rebuilt when `stamp` (what the cache was
 * made from: corpus hash, model, hook) differs from the one stored beside it.
 */
export async function cacheActivationsOnce(model: HookedModel, prompts: number[][], o: { work: string; hook: string; stamp: string }): Promise<string> {
  fs.mkdirSync(o.work, { recursive: true });
  const cacheFile = path.join(o.work, `${o.hook}.train.arrow`);
  const stampFile = `${cacheFile}.json`;
  if (fs.existsSync(cacheFile) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === o.stamp) return cacheFile;
  const bar = progressBar(`caching ${o.hook}`);
  const t = Date.now();
  fs.rmSync(cacheFile, { force: true });
  const { rows } = await writeActivationCache(model, prompts, cacheFile, {
    hooks: [o.hook],
    onProgress: (d, n) => bar.update(d, n),
    writer: { maxBatchRows: 4096 },
  });
  bar.stop();
  writeFileAtomic(stampFile, o.stamp);
  console.error(`cached ${rows} rows of ${o.hook} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  return cacheFile;
}

export interface TopkRecipe {
  cacheFile: string;
  hook: string;
  batch: number;
  lr: number;
  seed: number;
  modelName: string;
  cfgExtra: Record<string, unknown>;
}

/** TopK training settings for d_sae, k and a token budget. */
export function topkOptions(r: TopkRecipe, dSae: number, k: number, tokens: number): SaeTrainOptions {
  const steps = Math.ceil(tokens / r.batch);
  return {
    cache: r.cacheFile,
    hook: r.hook,
    architecture: 'topk',
    dSae,
    k,
    tokens,
    batchSize: r.batch,
    lr: r.lr,
    lrWarmupSteps: Math.min(200, Math.floor(steps / 20)),
    lrDecaySteps: Math.floor(steps / 5),
    seed: r.seed,
    normalizeActivations: 'expected_average_only_in',
    bDecInit: 'geometric_median',
    // Dead = silent for ~4 epochs of the (60-70K-token) training corpora.
    deadTokens: 250_000,
    densityWindowTokens: 250_000,
    modelName: r.modelName,
    cfgExtra: r.cfgExtra,
    logEvery: 50,
  };
}

/** "256:8,512:16" → [[256, 8], [512, 16]]. */
export function parseSweep(s: string): [number, number][] {
  return s.split(',').map((p) => p.split(':').map(Number) as [number, number]);
}

/** Train each d_sae:k pair for `tokens` and score it; one row per pair (also printed). */
export async function runSweep(
  pairs: readonly [number, number][],
  tokens: number,
  options: (dSae: number, k: number, tokens: number) => SaeTrainOptions,
  score: (sae: Sae) => Record<string, number>,
): Promise<Record<string, number>[]> {
  const results = [];
  for (const [dSae, k] of pairs) {
    const t0 = Date.now();
    const r = await trainSae(options(dSae, k, tokens));
    const row = { d_sae: dSae, k, tokens: r.tokensSeen, seconds: round(r.seconds, 1), ...score(r.sae) };
    r.sae.dispose();
    results.push(row);
    console.log(JSON.stringify(row), `(${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  return results;
}

/** The final run: checkpoints in WORK/checkpoint-{d_sae}-{k} (fresh), the SAE written to `out`. */
export async function trainFinal(opts: SaeTrainOptions, work: string, out: string): Promise<{ result: TrainSaeResult; wall: number }> {
  const ckpt = path.join(work, `checkpoint-${opts.dSae}-${opts.k}`);
  fs.rmSync(ckpt, { recursive: true, force: true });
  const bar = progressBar('training');
  const t0 = Date.now();
  const result = await trainSae({ ...opts, checkpointDir: ckpt, checkpointEvery: 1000, out, onProgress: (p) => bar.update(p.step, p.totalSteps) });
  bar.stop();
  return { result, wall: (Date.now() - t0) / 1000 };
}

/** training.json's "training" block. */
export function trainingFigures(result: TrainSaeResult, corpusTokens: number, wall: number) {
  return {
    steps: result.step,
    tokens: result.tokensSeen,
    epochs: round(result.tokensSeen / corpusTokens, 2),
    seconds: round(result.seconds, 1),
    wall_seconds: round(wall, 1),
    tokens_per_second: Math.round(result.tokensPerSecond),
    backend: 'wasm (single-threaded)',
    final_train_metrics: result.last,
    dead_fraction_train: result.deadFraction,
  };
}
