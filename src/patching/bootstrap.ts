/**
 * Agreement between patching methods with bootstrap confidence intervals over prompt pairs.
 *
 * A grid over N pairs is, per cell, Σ_n effect_n / Σ_n gap_n (effect = metric change of pair n,
 * gap = its clean − corrupt metric), so per-pair grids give the pooled grid of any resample of
 * the pairs exactly. Each bootstrap sample resamples pairs with replacement, pools each method's
 * grid, and recomputes Pearson, relative L2 error and slope against activation patching;
 * percentile intervals follow.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { OnnxForward } from '../onnx/onnx-forward.js';
import { mulberry32 } from '../util/random.js';
import type { PromptPair } from './pairs.js';
import { PatchingSession, type GridOptions } from './session.js';
import { ownOptions } from './suite.js';
import { flattenScores, pearson, relativeL2, slope } from './stats.js';
import type { Component, Method } from './types.js';
import type { MetricKind } from './metrics.js';

/** One method's grid of one component, kept per pair: effect[n][cell] and gap[n]. */
export interface PerPairGrid {
  component: Component;
  method: Method;
  shape: number[];
  effect: number[][];
  gap: number[];
}

/**
 * Per-pair grids: one session per pair (activation patching on onnxruntime when `onnx` is given).
 * `onPair(done, total)` reports progress.
 */
export async function perPairGrids(
  model: HookedModel,
  pairs: readonly PromptPair[],
  component: Component,
  methods: readonly Method[],
  // No GradDrop: its scores are magnitudes, which do not pool as effect / gap.
  opts: { grid?: Pick<GridOptions, 'rules' | 'qkFix'>; onnx?: OnnxForward; metric?: MetricKind; onPair?: (done: number, total: number) => void } = {},
): Promise<PerPairGrid[]> {
  if (pairs.length < 2) fail(`bootstrap needs at least 2 prompt pairs, got ${pairs.length}`);
  const out = methods.map((method) => ({ component, method, shape: [] as number[], effect: [] as number[][], gap: [] as number[] }));
  for (let n = 0; n < pairs.length; n++) {
    const session = new PatchingSession(model, [pairs[n]], { ...(opts.onnx ? { onnx: opts.onnx } : {}), ...(opts.metric ? { metric: opts.metric } : {}) });
    try {
      for (const [i, method] of methods.entries()) {
        const g = await session.gridAsync(component, method, ownOptions(method, opts.grid ?? {}));
        const gap = g.ld_clean - g.ld_corrupt;
        if (n > 0 && g.shape.join() !== out[i].shape.join()) {
          fail(`bootstrap: pair ${n + 1}'s ${component} grid is [${g.shape.join(', ')}], pair 1's [${out[i].shape.join(', ')}] — grids over positions need prompts of one token length`);
        }
        out[i].shape = g.shape;
        out[i].effect.push(flattenScores(g.scores).map((v) => v * gap));
        out[i].gap.push(gap);
      }
    } finally {
      session.dispose();
    }
    opts.onPair?.(n + 1, pairs.length);
  }
  return out;
}

/** The grid pooled over pairs `idx` (with repeats): Σ effect / Σ gap per cell. */
export function pooledScores(g: PerPairGrid, idx: readonly number[]): number[] {
  const cells = g.effect[0].length;
  const sum = new Float64Array(cells);
  let gap = 0;
  for (const n of idx) {
    const e = g.effect[n];
    for (let c = 0; c < cells; c++) sum[c] += e[c];
    gap += g.gap[n];
  }
  return Array.from(sum, (v) => v / gap);
}

export interface Interval {
  value: number;
  lo: number;
  hi: number;
}

export interface AgreementWithCi {
  component: Component;
  method: Exclude<Method, 'activation'>;
  nPairs: number;
  samples: number;
  level: number;
  pearson: Interval;
  relL2: Interval;
  slope: Interval;
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const x = q * (sorted.length - 1);
  const i = Math.floor(x);
  return i + 1 < sorted.length ? sorted[i] + (x - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}

/**
 * Pearson, relative L2 and slope of `estimate` against `activation` on all pairs, with percentile
 * intervals from `samples` bootstrap resamples of the pairs (seeded, deterministic).
 */
export function bootstrapAgreement(estimate: PerPairGrid, activation: PerPairGrid, opts: { samples?: number; seed?: number; level?: number } = {}): AgreementWithCi {
  if (activation.method !== 'activation') fail(`bootstrapAgreement: reference must be activation patching, got '${activation.method}'`);
  if (estimate.method === 'activation') fail("bootstrapAgreement: estimate must be 'atp' or 'relp'");
  if (estimate.component !== activation.component || estimate.shape.join() !== activation.shape.join()) fail(`bootstrapAgreement: ${estimate.component} [${estimate.shape}] vs ${activation.component} [${activation.shape}]`);
  const N = activation.gap.length;
  if (estimate.gap.length !== N) fail(`bootstrapAgreement: ${estimate.gap.length} pairs vs ${N}`);
  const samples = opts.samples ?? 1000;
  const level = opts.level ?? 0.95;
  const rand = mulberry32(opts.seed ?? 0);
  const stats = (idx: number[]) => {
    const e = pooledScores(estimate, idx);
    const a = pooledScores(activation, idx);
    return [pearson(e, a), relativeL2(e, a), slope(e, a)];
  };
  const all = stats(Array.from({ length: N }, (_, i) => i));
  const draws: number[][] = [[], [], []];
  for (let b = 0; b < samples; b++) {
    const s = stats(Array.from({ length: N }, () => Math.floor(rand() * N)));
    s.forEach((v, k) => Number.isFinite(v) && draws[k].push(v));
  }
  const interval = (k: number): Interval => {
    const sorted = draws[k].sort((x, y) => x - y);
    return { value: all[k], lo: percentile(sorted, (1 - level) / 2), hi: percentile(sorted, 1 - (1 - level) / 2) };
  };
  return { component: estimate.component, method: estimate.method, nPairs: N, samples, level, pearson: interval(0), relL2: interval(1), slope: interval(2) };
}

/** Whether two intervals are disjoint (the methods differ at the interval's level). */
export function disjoint(a: Interval, b: Interval): boolean {
  return a.hi < b.lo || b.hi < a.lo;
}
